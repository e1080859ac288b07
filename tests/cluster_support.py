"""A real Redis Cluster on free loopback ports, for the cluster tests.

By default three primaries and no replicas; ``replicas=1`` gives each primary a
replica (3 + 3), and ``node_timeout_ms`` makes failure detection and failover fast
enough for a test. Nodes can be killed, restarted, paused and resumed one by one.

``cluster`` and ``cluster_store`` are the fixtures the store cluster suites share
(tests/conftest.py offers them to every module: one three-primary cluster per module, a
flushed store with the test tenants per test); ``cases_on_cluster`` runs another
suite's store tests on it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

from bench.procs import free_cluster_port
from consent_server.store.connect import open_store
from consent_server.store.repository import RedisConsentStore
from consent_server.store.schema import check_schema

from .support import create_tenants

REDIS_CLI = shutil.which("redis-cli")


class RedisClusterProcesses:
    """``masters`` primaries with ``replicas`` replicas each, each node in its own directory."""

    def __init__(
        self,
        workdir: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = extra_args
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._paused: set[int] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _args(self, port: int, d: Path) -> list[str]:
        server = shutil.which("redis-server")
        assert server is not None
        args = [
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
        ]
        if self.node_timeout_ms is not None:
            args += ["--cluster-node-timeout", str(self.node_timeout_ms)]
        return args + list(self.extra_args)

    def start(self) -> RedisClusterProcesses:
        if shutil.which("redis-server") is None or REDIS_CLI is None:
            raise RuntimeError("redis-server and redis-cli are needed for the cluster tests")
        for i in range(self.masters * (1 + self.replicas)):
            d = self.workdir / f"node{i}"
            d.mkdir(parents=True)
            self._start_node(d)
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_ok()
        if self.replicas:
            self.wait_replicas_synced()
        return self

    def wait_ok(self, timeout: float = 30, ports: list[int] | None = None) -> None:
        """Until every running node (or those in ``ports``) reports cluster_state:ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(
                    self.client(p).cluster("INFO").get("cluster_state") == "ok"
                    for p in (ports or self.running_ports())
                ):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError("cluster never reached cluster_state:ok")

    def wait_replicas_synced(self, timeout: float = 30) -> None:
        """Until every running primary has its replicas online."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                primaries = self.primaries()
                if len(primaries) == self.masters and all(
                    sum(
                        1
                        for k, v in self.client(p).info("replication").items()
                        if k.startswith("slave") and isinstance(v, dict) and v["state"] == "online"
                    )
                    >= self.replicas
                    for p in primaries
                ):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError("replicas never came online")

    def running_ports(self) -> list[int]:
        return [p for p, proc in zip(self.ports, self.procs, strict=True) if proc.poll() is None]

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)

    def role(self, port: int) -> str:
        """``master`` or ``slave`` as the node itself says."""
        return str(self.client(port).info("replication")["role"])

    def primaries(self) -> list[int]:
        """Ports of the running nodes that are primaries."""
        return [p for p in self.running_ports() if self.role(p) == "master"]

    def replica_of(self, primary: int) -> int:
        """The port of a running replica of the primary on ``primary``."""
        info = self.client(primary).info("replication")
        for k, v in info.items():
            if k.startswith("slave") and isinstance(v, dict):
                return int(v["port"])
        raise RuntimeError(f"primary {primary} has no replica")

    def primary_of_slot(self, slot: int) -> int:
        """The port of the primary serving ``slot``, as a running node sees it."""
        for p in self.running_ports():
            try:
                for start, end, master, *_ in self.client(p).execute_command("CLUSTER SLOTS"):
                    if int(start) <= slot <= int(end):
                        return int(master[1])
            except redis.RedisError:
                continue
        raise RuntimeError(f"no node serves slot {slot}")

    def _proc(self, port: int) -> subprocess.Popen[bytes]:
        return self.procs[self.ports.index(port)]

    def kill(self, port: int) -> None:
        """SIGKILL one node: what a crash looks like (its unsaved data is gone)."""
        proc = self._proc(port)
        if port in self._paused:
            self.resume(port)
        proc.kill()
        proc.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again, same port and directory (it keeps its node id)."""
        i = self.ports.index(port)
        assert self.procs[i].poll() is not None
        self.procs[i] = subprocess.Popen(
            self._args(port, self.workdir / f"node{i}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ping(port)

    def pause(self, port: int) -> None:
        """SIGSTOP one node: it keeps its sockets but answers nothing (nor replicates)."""
        self._proc(port).send_signal(signal.SIGSTOP)
        self._paused.add(port)

    def resume(self, port: int) -> None:
        """SIGCONT after pause()."""
        self._proc(port).send_signal(signal.SIGCONT)
        self._paused.discard(port)

    def _start_node(self, d: Path) -> None:
        """Start one node on a free port pair; another port when it exits at once (the
        port was taken between choosing it and binding it: other suites run alongside)."""
        for _ in range(5):
            port = free_cluster_port()
            proc = subprocess.Popen(
                self._args(port, d), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if redis.Redis(port=port, socket_connect_timeout=0.2).ping():
                        self.procs.append(proc)
                        self.ports.append(port)
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
            proc.kill()
            proc.wait(10)
        raise RuntimeError(f"no cluster node would start in {d}")

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
        for port in list(self._paused):
            self.resume(port)
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """Three primaries, no replicas, for the tests of one module."""
    procs = RedisClusterProcesses(tmp_path_factory.mktemp("cluster")).start()
    yield procs
    procs.stop()


@pytest.fixture
async def cluster_store(cluster: RedisClusterProcesses) -> AsyncIterator[RedisConsentStore]:
    """A consent store on ``cluster``, flushed, with the test tenants created: a new
    store, so it records and uses a new store's default layout (128 partitions with
    slot-spread tags), as a server starting on an empty cluster does."""
    store = open_store(cluster.url, cluster=True, timeout_s=2.0)
    await store.client.flushall()
    await check_schema(store.client)
    await create_tenants(store)
    yield store
    await store.aclose()


StoreCase = Callable[[RedisConsentStore], Awaitable[None]]


def cases_on_cluster(cases: list[StoreCase]) -> Callable[..., Awaitable[None]]:
    """One test, parametrized by ``cases`` (store tests of other modules, named by their
    name without ``test_``), that runs each case on ``cluster_store``."""

    @pytest.mark.parametrize("case", cases, ids=[c.__name__.removeprefix("test_") for c in cases])
    async def test(cluster_store: RedisConsentStore, case: StoreCase) -> None:
        await case(cluster_store)

    return test
