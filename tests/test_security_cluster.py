"""Keys, rate limits and erasure on a real three-node Redis Cluster.

The authenticate script touches one key's record and bucket (one hash tag per key);
the erasure script touches one recipient partition; finding a recipient's
idempotency keys and messages scans every primary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from consent_server.store.connect import open_store
from consent_server.store.repository import RedisConsentStore

from . import test_security_store as base
from .cluster_support import RedisClusterProcesses
from .support import create_tenants

pytestmark = pytest.mark.xdist_group("cluster")

CASES = [
    base.test_keys_create_list_revoke,
    base.test_unknown_wrong_and_malformed_keys,
    base.test_bootstrap_install_never_revives_a_revoked_key,
    base.test_rate_limit_token_bucket,
    base.test_erasure_removes_everything_but_keeps_the_suppression,
    base.test_erasure_of_someone_never_opted_out_keeps_no_suppression,
    base.test_tombstone_names_do_not_depend_on_the_process,
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    procs = RedisClusterProcesses(tmp_path_factory.mktemp("sec-cluster")).start()
    yield procs
    procs.stop()


@pytest.fixture
async def cluster_store(cluster: RedisClusterProcesses) -> AsyncIterator[RedisConsentStore]:
    store = open_store(cluster.url, cluster=True, timeout_s=2.0)
    await store.client.flushall()
    await create_tenants(store)
    yield store
    await store.aclose()


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.removeprefix("test_") for c in CASES])
async def test_security_case_on_cluster(cluster_store: RedisConsentStore, case) -> None:  # type: ignore[no-untyped-def]
    await case(cluster_store)
