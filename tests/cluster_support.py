"""A real three-node Redis Cluster on free loopback ports, for the cluster tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

REDIS_CLI = shutil.which("redis-cli")


def _free_cluster_port() -> int:
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


class RedisClusterProcesses:
    """Three primaries, no replicas, each in its own directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisClusterProcesses:
        server = shutil.which("redis-server")
        if server is None or REDIS_CLI is None:
            raise RuntimeError("redis-server and redis-cli are needed for the cluster tests")
        for i in range(3):
            port = _free_cluster_port()
            d = self.workdir / f"node{i}"
            d.mkdir(parents=True)
            self.procs.append(
                subprocess.Popen(
                    [
                        server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(d),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--logfile",
                        str(d / "redis.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            self.ports.append(port)
        for port in self.ports:
            self._wait_ping(port)
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = redis.Redis(port=self.ports[0]).cluster("INFO")  # parsed into a dict
            if info.get("cluster_state") == "ok":
                return self
            time.sleep(0.1)
        raise RuntimeError("cluster never reached cluster_state:ok")

    @staticmethod
    def _wait_ping(port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=port, socket_connect_timeout=0.2).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"cluster node {port} did not start")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(10)
