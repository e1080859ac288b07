"""The store's scripts on a real three-node Redis Cluster: every key of a script call
shares one hash tag, so decide+enqueue stays one atomic script on one shard."""

from __future__ import annotations

import time

import grpc
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc
from consent_server.store import keys
from consent_server.store.bulk import RedisBulkStore
from consent_server.store.repository import RedisConsentStore
from consent_server.store.schema import DEFAULT_PARTITIONS

from . import cluster_support
from . import test_erasure_fence as fence
from . import test_inbound_units as inbound
from . import test_store as base
from . import test_tenants as tenants
from .cluster_support import RedisClusterProcesses
from .support import ServerProcess, numbered_event

pytestmark = pytest.mark.xdist_group("cluster")

CASES = [
    tenants.test_registry_lifecycle_in_process,
    tenants.test_settings_of_an_unknown_tenant_are_not_written,
    base.test_first_opt_out_applies_and_changes,
    base.test_event_id_replay_returns_first_outcome_and_adds_no_history,
    base.test_late_event_is_kept_but_not_applied,
    base.test_send_accepts_enqueues_and_records_status,
    base.test_send_idempotency_key_replays_first_message,
    base.test_send_blocked_by_opt_out_and_by_policy,
    base.test_read_records_keeps_request_order,
    base.test_history_pages_newest_first,
    base.test_tenant_settings_round_trip,
    inbound.test_record_inbound_queues_once_per_change,
    inbound.test_concurrent_record_inbound_is_one_event,
    inbound.test_settings_write_is_version_checked,
    inbound.test_authority_inbound_and_concurrent_updates,
    fence.test_replayed_keywords_after_erasure_change_nothing_and_store_nothing,
    fence.test_an_event_dated_before_the_erasure_answers_what_the_checks_say,
    fence.test_a_confirmation_queued_before_the_erasure_never_reaches_the_person,
]


test_store_case_on_cluster = cluster_support.cases_on_cluster(CASES)


async def test_erasure_reads_the_message_index_on_its_shard(
    cluster_store: RedisConsentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """forget.lua finds messages through the recipient's index (keys it derives, all on
    the recipient's slot): allowed on a cluster, and enough without the caller's scans."""
    await fence.test_messages_accepted_while_the_erasure_runs_are_fenced(cluster_store, monkeypatch)


async def test_recipients_really_spread_over_the_shards(
    cluster_store: RedisConsentStore,
) -> None:
    """Not a vacuous pass: the partitions' keys live on all three nodes."""
    client = cluster_store.client
    assert isinstance(client, RedisCluster)
    nodes = {client.get_node_from_key(keys.outbox(p)).name for p in range(keys.PARTITIONS)}
    assert len(nodes) == 3


async def test_recipients_spread_evenly_over_three_masters(
    cluster_store: RedisConsentStore,
) -> None:
    """A new store's partitions are placed by slot: each of the three masters holds a
    third of the recipients (33 % +- 5 %). The legacy layout's 16 tags split 4/8/4."""
    client = cluster_store.client
    assert isinstance(client, RedisCluster)
    assert keys.PARTITIONS == DEFAULT_PARTITIONS and keys.SPREAD
    people = 6_000
    bulk = RedisBulkStore(client, cluster_store.tombstones)
    try:
        for first in range(0, people, 1_000):
            batch = range(first, first + 1_000)
            await bulk.apply([numbered_event("globex", n, 1) for n in batch])
        held: dict[str, int] = {}
        for node in client.get_primaries():
            count = 0
            pattern = "ca:*:globex:r:*"
            async for key in client.scan_iter(match=pattern, count=1000, target_nodes=node):
                count += int(await client.hlen(key))
            held[node.name] = count
    finally:
        await client.flushall()  # the module's later tests share this cluster
    assert sum(held.values()) == people  # every recipient counted once, one field each
    for name, count in held.items():
        assert abs(count / people - 1 / 3) <= 0.05, (name, held)


def test_the_legacy_tags_do_not_spread_evenly() -> None:
    """Why new stores use spread tags: on three masters' default slot ranges, the 16
    legacy tags put half the partitions on one master."""
    ranges = [(0, 5460), (5461, 10922), (10923, 16383)]

    def per_master(tags: tuple[str, ...]) -> list[int]:
        slots = [key_slot(t.encode()) for t in tags]
        return [sum(lo <= s <= hi for s in slots) for lo, hi in ranges]

    assert per_master(keys.legacy_tags()) == [4, 8, 4]
    spread = per_master(keys.spread_tags(DEFAULT_PARTITIONS))
    assert max(spread) - min(spread) <= 1 and sum(spread) == DEFAULT_PARTITIONS


def test_server_process_on_cluster(cluster: RedisClusterProcesses) -> None:
    """CONSENT_REDIS_CLUSTER=1: the seed scenario through the real server process."""
    srv = ServerProcess({"CONSENT_REDIS_URL": cluster.url, "CONSENT_REDIS_CLUSTER": "1"}).start()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            stub = consent_pb2_grpc.ConsentServiceStub(ch)
            people = [
                pb.Recipient(channel=pb.CHANNEL_SMS, address=f"+1415555{i:04d}") for i in range(40)
            ]
            for r in people[::2]:
                stub.OptOut(pb.OptOutRequest(tenant_id="acme", recipient=r))
            batch = stub.BatchCheckConsent(
                pb.BatchCheckConsentRequest(tenant_id="acme", topic="marketing", recipients=people)
            )
            assert [x.decision.allowed for x in batch.results] == [i % 2 == 1 for i in range(40)]
            with pytest.raises(grpc.RpcError) as err:
                stub.SendIfAllowed(
                    pb.SendIfAllowedRequest(
                        tenant_id="acme",
                        recipient=people[0],
                        topic="marketing",
                        message=pb.Message(text="hi"),
                    )
                )
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            ok = stub.SendIfAllowed(
                pb.SendIfAllowedRequest(
                    tenant_id="acme",
                    recipient=people[1],
                    topic="marketing",
                    message=pb.Message(text="hi"),
                )
            )
            # The inline delivery worker reads every partition's outbox across the nodes.
            deadline = time.monotonic() + 15
            while True:
                status = stub.GetMessageStatus(
                    pb.GetMessageStatusRequest(tenant_id="acme", message_id=ok.message_id)
                )
                if status.status != pb.MESSAGE_STATUS_ACCEPTED or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert status.status == pb.MESSAGE_STATUS_LOGGED  # the default log provider
            assert status.attempts == 1
    finally:
        assert srv.stop() == 0
