"""What the numbers were measured on: machine, versions, date."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's best guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(redis_version: str, generator: str) -> list[str]:
    """Lines for the report header."""
    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} {platform.release()}",
        f"python {sys.version.split()[0]}, grpcio {_version('grpcio')}, "
        f"protobuf {_version('protobuf')}, redis-py {_version('redis')}, "
        f"hiredis {_version('hiredis')}, redis-server {redis_version}",
        f"load generator: {generator}",
    ]
