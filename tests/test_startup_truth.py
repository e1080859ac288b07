"""Start-up truth, through the real server process: a Redis that would lose consent
(persistence off, an evicting maxmemory-policy) is one loud WARNING at start; a wrong
password or an unreachable Redis is one clear ERROR line naming host and port (never
the password), not a silent NOT_SERVING."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from .support import RedisProcess, ServerProcess, free_port

PASSWORD = "s3cret-Passw0rd"


def records(srv: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in srv.lines if line.startswith("{")]


def wait_for(srv: ServerProcess, msg_part: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in records(srv):
            if msg_part in rec["msg"]:
                return rec
        time.sleep(0.05)
    raise AssertionError(f"no log line with {msg_part!r}:\n" + srv.log())


def start(url: str) -> ServerProcess:
    return ServerProcess({"CONSENT_REDIS_URL": url, "CONSENT_DELIVERY": "off"}).start(
        wait_serving=False
    )


def test_a_wrong_password_is_one_error_line_naming_host_and_port(tmp_path: Path) -> None:
    redis_srv = RedisProcess(tmp_path / "redis", appendonly=True, password=PASSWORD).start()
    srv = start(f"redis://:wrong-{PASSWORD}@127.0.0.1:{redis_srv.port}/0")
    try:
        line = wait_for(srv, "consent store unreachable at")
        assert line["level"] == "error"
        assert f"127.0.0.1:{redis_srv.port}" in line["msg"]
        assert "authentication" in line["msg"] and "password" in line["msg"]
        assert PASSWORD not in srv.log()
        time.sleep(2.5)  # several health probes later: still that one line
        assert sum("consent store unreachable" in r["msg"] for r in records(srv)) == 1
        assert srv.health() == 2  # NOT_SERVING
        assert "Traceback" not in srv.log()
    finally:
        srv.stop()
        redis_srv.stop()


def test_the_right_password_serves_and_warns_about_nothing(tmp_path: Path) -> None:
    redis_srv = RedisProcess(tmp_path / "redis", appendonly=True, password=PASSWORD).start()
    srv = start(f"redis://:{PASSWORD}@127.0.0.1:{redis_srv.port}/0")
    try:
        srv.wait_serving()
        wait_for(srv, "redis durability checked")
        assert not [r for r in records(srv) if r["level"] in ("warning", "error")], srv.log()
    finally:
        srv.stop()
        redis_srv.stop()


def test_an_unreachable_host_is_one_error_line_naming_it() -> None:
    port = free_port()
    srv = start(f"redis://127.0.0.1:{port}/0")
    try:
        line = wait_for(srv, "consent store unreachable at")
        assert f"127.0.0.1:{port}" in line["msg"] and "connection refused" in line["msg"]
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("config", "expect"),
    [
        ({}, ["persistence is off"]),  # the harness's redis: no AOF, no save points
        ({"maxmemory-policy": "allkeys-lru", "appendonly": "yes"}, ["allkeys-lru"]),
        ({"appendonly": "yes"}, []),
    ],
)
def test_redis_that_can_lose_consent_is_one_warning_at_start(
    tmp_path: Path, config: dict[str, str], expect: list[str]
) -> None:
    redis_srv = RedisProcess(tmp_path / "redis").start()
    client = redis_srv.client()
    for name, value in config.items():
        client.config_set(name, value)
    srv = start(redis_srv.url)
    try:
        srv.wait_serving()
        wait_for(srv, "redis durability checked" if not expect else "REDIS CAN LOSE CONSENT")
        time.sleep(0.5)
        warnings = [r for r in records(srv) if "REDIS CAN LOSE CONSENT" in r["msg"]]
        if not expect:
            assert warnings == []
            return
        [warning] = warnings
        assert warning["level"] == "warning"
        for part in expect:
            assert part in warning["msg"]
    finally:
        srv.stop()
        redis_srv.stop()


def test_the_embedded_store_is_not_checked() -> None:
    srv = ServerProcess({"CONSENT_DELIVERY": "off"}).start()
    try:
        assert "EMBEDDED STORE IN USE" in srv.log()
        time.sleep(0.5)
        assert "REDIS CAN LOSE CONSENT" not in srv.log()
        assert "durability checked" not in srv.log()
    finally:
        srv.stop()
