"""Import, export and point-in-time reads on a 3-node Redis Cluster: every script call
touches one slot (a partition's hash tag), SCAN walks every primary."""

from __future__ import annotations

import pytest

from consent_server.store.repository import RedisConsentStore

from . import test_imports as imports
from . import test_pointintime as pit


@pytest.mark.parametrize("case", imports.CASES, ids=[c.name for c in imports.CASES])
async def test_import_rules_on_cluster(
    cluster_store: RedisConsentStore, case: imports.Case
) -> None:
    await imports.test_an_import_never_resubscribes_silently(cluster_store, case)


async def test_erasure_and_export_round_trip_on_cluster(cluster_store: RedisConsentStore) -> None:
    await imports.test_export_then_import_into_a_fresh_tenant_is_the_same_state(cluster_store)
    await imports.test_erasure_tombstones_hold_against_an_import(cluster_store)


async def test_point_in_time_on_cluster(cluster_store: RedisConsentStore) -> None:
    await pit.test_checks_at_an_instant_through_the_store(cluster_store)
