"""What a scenario gets to work with: the options, the generator and the running processes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.load import H2Load, PythonLoad
from bench.model import BenchOptions
from bench.procs import GrpcProcess, RedisServer


@dataclass(frozen=True, slots=True)
class BenchContext:
    """Started once per run and shared by every scenario (each may start more processes)."""

    options: BenchOptions
    load: H2Load | PythonLoad
    redis: RedisServer
    consent: GrpcProcess
    empty: GrpcProcess
    workdir: Path
