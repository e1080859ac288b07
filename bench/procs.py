"""The processes a bench run measures: a private redis-server and gRPC server processes.

Everything listens on a free loopback port chosen at start; redis-server runs in a
temporary directory with persistence off (we measure the service, not the disk).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import AnyStr

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The repository root: ``python -m bench...`` and ``-m consent_server`` resolve from it
# whatever directory the bench was started from.
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port p whose cluster bus port p+10000 is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 55000:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def terminate(proc: subprocess.Popen[AnyStr], grace_s: float) -> None:
    """SIGTERM a running process; SIGKILL it after ``grace_s`` seconds. Waits for its end."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def redis_server_args(
    binary: str, port: int, workdir: Path, *, appendonly: bool = False
) -> list[str]:
    """The command line of a private redis-server: loopback only, in the foreground, no
    RDB snapshots, its files and log in ``workdir``; with ``appendonly`` every write is
    fsync'd to the AOF before it is answered (without it ``--appendfsync`` is unused).

    The test suite's Redis starts from it too, so bench and tests run the same server.
    """
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--save",
        "",
        "--daemonize",
        "no",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always",
        "--logfile",
        str(workdir / "redis.log"),
    ]


class RedisServer:
    """A private redis-server on a free port in ``workdir``; never the machine's 6379."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        """``redis-server --version``'s version number."""
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        return next((w[2:] for w in out.split() if w.startswith("v=")), out.strip())

    def start(self) -> RedisServer:
        """Start it and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = redis_server_args(self.binary, self.port, self.workdir)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def client(self) -> redis.Redis:
        """A synchronous redis-py client for this server."""
        return redis.Redis(port=self.port)

    def stop(self) -> None:
        """Terminate it and wait."""
        if self.proc:
            terminate(self.proc, grace_s=10)


class GrpcProcess:
    """A Python gRPC server module run as ``python -m <module> --listen 127.0.0.1:<port>``.

    Readiness is the standard health service answering SERVING, which both the consent
    server and ``bench.empty_server`` expose.
    """

    def __init__(
        self,
        module: str,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.module = module
        self.args = list(args)
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def target(self) -> str:
        """host:port to dial."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process id (for profilers)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 30) -> GrpcProcess:
        """Start the process and wait until its health service says SERVING."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--listen", self.target, *self.args],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if len(self.lines) > 1000:  # a chatty server must not grow us without bound
                    del self.lines[:500]

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.module} did not become SERVING:\n{self.log()}")

    def log(self) -> str:
        """What the process printed (the last lines)."""
        return "".join(self.lines[-50:])

    def stop(self) -> None:
        """SIGTERM (the servers drain and exit), SIGKILL if that takes too long."""
        if self.proc:
            terminate(self.proc, grace_s=15)
        if self._reader:
            self._reader.join(5)


def consent_server(
    redis_url: str, delivery: str = "off", processes: int = 1, uvloop: bool = False
) -> GrpcProcess:
    """The real consent server on ``redis_url``, logging as in production (info, JSON).

    Inline delivery is off by default so that the API rows measure the API; the delivery
    scenario (``bench.delivery``) starts its own with ``delivery="inline"``. One process
    unless told otherwise (the rows compare one process with one empty handler; the
    ``processes`` scenario compares N with 1). On asyncio's default loop unless
    ``uvloop`` (the server's own default is uvloop): the aims compare it with the
    empty handler on the same loop; the ``uvloop`` scenario runs both on uvloop.
    """
    return GrpcProcess(
        "consent_server",
        env={
            "CONSENT_REDIS_URL": redis_url,
            "CONSENT_LOG_LEVEL": "info",
            "CONSENT_DELIVERY": delivery,
            "CONSENT_PROCESSES": str(processes),
            "CONSENT_UVLOOP": "1" if uvloop else "0",
            # Tenants are explicit: the benchmark's tenant is created at start.
            "CONSENT_TENANTS": "bench",
        },
    )


def empty_server(args: Sequence[str] = (), port: int | None = None) -> GrpcProcess:
    """The trivial servicer (``bench.empty_server``): the ceiling for a Python handler."""
    return GrpcProcess("bench.empty_server", args=args, port=port)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a supervisor and its server processes)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return [pid]
    return [pid, *(int(p) for p in text.split())]
