"""How evenly recipients spread over a real three-master Redis Cluster (``--only spread``).

The same recipients are written twice into a private cluster started for the scenario:
under a new store's layout (128 partitions with slot-spread tags) and under the legacy
one (16 tags ``{cp00}``..``{cp15}``, the baseline). Each row is the share of recipients
on the master holding the fewest and the most, counted by scanning every master's record
buckets (one field per recipient: each has one opt-out of all topics).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.asyncio.cluster import RedisCluster

from bench.context import BenchContext
from bench.model import Row
from bench.procs import free_cluster_port, terminate
from consent_server.domain.model import Action, Channel, ConsentEventInput, Recipient, Source
from consent_server.store import keys
from consent_server.store.bulk import RedisBulkStore
from consent_server.store.connect import open_store
from consent_server.store.schema import check_schema

MASTERS = 3
RECIPIENTS = 30_000
TENANT = "bench"


class Cluster:
    """``MASTERS`` cluster-enabled redis-servers on free ports, joined by redis-cli."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = [free_cluster_port() for _ in range(MASTERS)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Cluster:
        """Start the nodes, create the cluster, wait until it reports ok."""
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed for the spread scenario")
        for port in self.ports:
            d = self.workdir / str(port)
            d.mkdir(parents=True)
            args = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d)]
            args += ["--cluster-enabled", "yes", "--save", "", "--appendonly", "no"]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
        for port in self.ports:
            self._wait(lambda p=port: bool(redis.Redis(port=p).ping()))
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        self._wait(
            lambda: all(
                redis.Redis(port=p).cluster("info").get("cluster_state") == "ok" for p in self.ports
            )
        )
        return self

    @staticmethod
    def _wait(ok: object) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if ok():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the bench cluster did not come up")

    def stop(self) -> None:
        """Terminate every node."""
        for proc in self.procs:
            terminate(proc, grace_s=10)


def _event(n: int) -> ConsentEventInput:
    return ConsentEventInput(
        tenant_id=TENANT,
        recipient=Recipient(Channel.SMS, f"+1415{n:07d}"),
        topic="",
        action=Action.OPT_OUT,
        source=Source.IMPORT,
        evidence="",
        occurred_at_ms=1_790_000_000_000,
        event_id=f"spread-{n}",
        principal="bench",
    )


async def _shares(url: str, spread: bool) -> list[float]:
    """Write RECIPIENTS opt-outs under one layout; each master's share of them."""
    store = open_store(url, cluster=True, timeout_s=5.0)
    client = store.client
    assert isinstance(client, RedisCluster)
    try:
        await client.flushall()
        if spread:
            await check_schema(client)  # a new store: the default layout
        else:
            keys.configure(keys.LEGACY_PARTITIONS, spread=False)
        bulk = RedisBulkStore(client, store.tombstones)
        for first in range(0, RECIPIENTS, 1_000):
            await bulk.apply([_event(n) for n in range(first, first + 1_000)])
        counts = []
        for node in client.get_primaries():
            count = 0
            async for key in client.scan_iter(
                match=f"ca:*:{TENANT}:r:*", count=1000, target_nodes=node
            ):
                count += int(await client.hlen(key))
            counts.append(count)
        return [c / RECIPIENTS for c in counts]
    finally:
        await store.aclose()
        keys.configure(keys.LEGACY_PARTITIONS, spread=False)


def spread(ctx: BenchContext) -> list[Row]:
    """The scenario: fewest/most recipients on a master, new layout and legacy."""
    workdir = Path(tempfile.mkdtemp(prefix="spread-", dir=ctx.workdir))
    cluster = Cluster(workdir).start()
    try:
        url = f"redis://127.0.0.1:{cluster.ports[0]}/0"
        new = asyncio.run(_shares(url, spread=True))
        legacy = asyncio.run(_shares(url, spread=False))
    finally:
        cluster.stop()
    note = f"{RECIPIENTS:,} recipients on a {MASTERS}-master cluster; share per master"
    ideal = 100 / MASTERS
    return [
        Row("spread_ideal", "a master's even share", ideal, "% recipients", note=note),
        Row("spread_min", "fewest on a master, 128 partitions", 100 * min(new), "%", note=note),
        Row("spread_max", "most on a master, 128 partitions", 100 * max(new), "%", note=note),
        Row("legacy_min", "fewest on a master, 16 legacy tags", 100 * min(legacy), "%", note=note),
        Row("legacy_max", "most on a master, 16 legacy tags", 100 * max(legacy), "%", note=note),
    ]
