"""The store health probe on a real three-primary Redis Cluster: every primary must
answer and report cluster_state:ok, not just whichever node a PING happens to reach."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from consent_server.domain.errors import StoreUnavailable
from consent_server.store.connect import open_store
from consent_server.store.health import probe
from consent_server.store.repository import RedisConsentStore

from .cluster_support import RedisClusterProcesses

pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.cluster]


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    procs = RedisClusterProcesses(tmp_path_factory.mktemp("health"), node_timeout_ms=1000).start()
    yield procs
    procs.stop()


@pytest.fixture
async def store(cluster: RedisClusterProcesses) -> AsyncIterator[RedisConsentStore]:
    s = open_store(cluster.url, cluster=True, timeout_s=1.0)
    await s.ping()
    yield s
    await s.aclose()


def _non_default(store: RedisConsentStore, cluster: RedisClusterProcesses) -> int:
    """A primary that is not the client's default node (the one a plain PING reaches)."""
    client = store.client
    assert isinstance(client, RedisCluster)
    default = client.get_default_node()
    return next(p for p in cluster.ports if p != int(default.port))


async def test_probe_fails_while_any_primary_is_down(
    store: RedisConsentStore, cluster: RedisClusterProcesses
) -> None:
    await probe(store.client)
    victim = _non_default(store, cluster)
    cluster.kill(victim)
    with pytest.raises(StoreUnavailable):
        await probe(store.client)
    await store.ping()  # the old check: one node answers, so it would say "serving"
    cluster.restart(victim)
    cluster.wait_ok()
    await _eventually_ok(store)


async def test_probe_fails_when_the_cluster_reports_fail_state(
    store: RedisConsentStore, cluster: RedisClusterProcesses
) -> None:
    """Slots not covered: the node that dropped a slot says cluster_state:fail although
    every node answers."""
    victim = _non_default(store, cluster)
    node = cluster.client(victim)
    slot = int(node.execute_command("CLUSTER SLOTS")[0][0])  # hmm: first range of some node
    owner = cluster.primary_of_slot(slot)
    owner_client = cluster.client(owner)
    owner_client.execute_command("CLUSTER DELSLOTS", slot)
    try:
        with pytest.raises(StoreUnavailable, match="cluster_state"):
            await probe(store.client)
    finally:
        owner_client.execute_command("CLUSTER ADDSLOTS", slot)
    cluster.wait_ok()
    await _eventually_ok(store)


async def _eventually_ok(store: RedisConsentStore) -> None:
    last: Exception | None = None
    for _ in range(100):
        try:
            await probe(store.client)
            return
        except StoreUnavailable as exc:
            last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"probe never recovered: {last}")
