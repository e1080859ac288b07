"""WAIT-based acknowledgement (CONSENT_REDIS_MIN_REPLICAS_ACK) on a real primary + replica.

The replica is paused with SIGSTOP: it keeps its connection but acknowledges nothing,
which is what a lagging or dead replica looks like to the primary. Every write path
must then answer ReplicationNotAcknowledged (UNAVAILABLE) instead of acknowledging a
change only the primary holds; reads must not wait at all.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from consent_server.domain.auth import ApiKeyRecord, Role
from consent_server.domain.delivery import ProviderConfig
from consent_server.domain.errors import ReplicationNotAcknowledged
from consent_server.domain.model import Action, OutboundMessage, Policy, TenantSettings
from consent_server.domain.whatsapp_edge import WhatsAppWebhookConfig
from consent_server.store import keys
from consent_server.store.bulk import RedisBulkStore
from consent_server.store.connect import open_store
from consent_server.store.edge import RedisEdgeStore
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore
from consent_server.store.tombstones import TombstoneNames

from .support import RedisProcess, create_tenants
from .test_store import ALICE, BOB, event, send_input

pytestmark = pytest.mark.xdist_group("replication")

# Generous enough for a loaded test machine; the socket timeout is well above it.
ACK_TIMEOUT_MS = 1000
SOCKET_TIMEOUT_S = 3.0


@dataclass
class Pair:
    primary: RedisProcess
    replica: RedisProcess

    def wait_synced(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = self.primary.client().info("replication")
            slave = info.get("slave0")
            # Caught up: online, and its acknowledged offset is the primary's.
            if (
                isinstance(slave, dict)
                and slave.get("state") == "online"
                and int(slave["offset"]) >= int(info["master_repl_offset"])
            ):
                return
            time.sleep(0.02)
        raise RuntimeError("replica never caught up")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root: Path = tmp_path_factory.mktemp("replication")
    primary = RedisProcess(root / "primary").start()
    replica = RedisProcess(root / "replica").start()
    replica.client().replicaof("127.0.0.1", primary.port)
    p = Pair(primary, replica)
    p.wait_synced()
    yield p
    replica.resume_if_paused()
    replica.stop()
    primary.stop()


@pytest.fixture
async def acked(pair: Pair) -> AsyncIterator[RedisConsentStore]:
    pair.replica.resume_if_paused()
    store = open_store(
        pair.primary.url,
        timeout_s=SOCKET_TIMEOUT_S,
        min_replicas_ack=1,
        ack_timeout_ms=ACK_TIMEOUT_MS,
    )
    await store.client.flushall()
    await create_tenants(store)  # tenants are explicit: the settings write needs "acme"
    pair.wait_synced()
    yield store
    pair.replica.resume_if_paused()
    await store.aclose()


Write = Callable[[RedisConsentStore], Awaitable[object]]


async def _record(s: RedisConsentStore) -> object:
    return await s.record_event(event(Action.OPT_OUT))


async def _inbound(s: RedisConsentStore) -> object:
    return await s.record_inbound(
        event(Action.OPT_OUT, recipient=BOB), OutboundMessage(kind="text", text="bye")
    )


async def _send(s: RedisConsentStore) -> object:
    return await s.send(send_input(recipient=BOB), Policy.ALLOW_UNLESS_OPTED_OUT)


async def _settings(s: RedisConsentStore) -> object:
    current = await s.fresh_tenant_settings("acme")
    await s.put_tenant_settings("acme", TenantSettings(**{**_fields(current)}))
    return None


def _fields(settings: TenantSettings) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


async def _forget(s: RedisConsentStore) -> object:
    return await RedisSecurityStore(s.client, s.tombstones).forget("acme", ALICE, "er-1", "op")


async def _put_key(s: RedisConsentStore) -> object:
    record = ApiKeyRecord(key_id="k1", tenant_id="acme", role=Role.WRITER, secret_hash="h")
    return await RedisSecurityStore(s.client, s.tombstones).put_key(record)


async def _revoke_key(s: RedisConsentStore) -> object:
    await s.client.hset(keys.api_key("k2"), mapping={"tenant": "acme"})
    return await RedisSecurityStore(s.client, s.tombstones).revoke_key("k2", 1)


async def _webhook(s: RedisConsentStore) -> object:
    edge = RedisEdgeStore(s)
    await edge.set_whatsapp_webhook(
        "acme", WhatsAppWebhookConfig("verify", "s" * 32, ("106540352242922",))
    )
    return None


async def _link_secret(s: RedisConsentStore) -> object:
    return await RedisEdgeStore(s).link_secret()


async def _tombstone_secret(s: RedisConsentStore) -> object:
    # A fresh name cache, as a new process has: the secret is created on first use.
    return await TombstoneNames(s.client).secret("acme")


async def _provider(s: RedisConsentStore) -> object:
    await RedisProviderSettings(s.client).put_provider("acme", "*", ProviderConfig())
    return None


async def _import(s: RedisConsentStore) -> object:
    # Secret first: the import's write, not the secret's, is what must wait here.
    await s.tombstones.secret("acme")
    return await RedisBulkStore(s.client, s.tombstones).apply(
        [event(Action.OPT_OUT), event(Action.OPT_OUT, recipient=BOB)]
    )


WRITES: dict[str, Write] = {
    "record_event": _record,
    "record_inbound": _inbound,
    "send": _send,
    "put_tenant_settings": _settings,
    "forget": _forget,
    "put_key": _put_key,
    "revoke_key": _revoke_key,
    "set_whatsapp_webhook": _webhook,
    "link_secret": _link_secret,
    "tombstone_secret": _tombstone_secret,
    "put_provider": _provider,
    "import_apply": _import,
}


@pytest.mark.parametrize("name", list(WRITES))
async def test_every_write_waits_for_a_replica(
    acked: RedisConsentStore, pair: Pair, name: str
) -> None:
    """With the replica running each write is acknowledged; with it paused each one
    answers ReplicationNotAcknowledged after about the ack timeout, never OK."""
    write = WRITES[name]
    if name == "revoke_key":
        await acked.client.hset(keys.api_key("k2"), mapping={"tenant": "acme"})
    await write(acked)  # acknowledged: the replica keeps up
    await acked.client.flushall()
    pair.wait_synced()
    pair.replica.pause()
    started = time.monotonic()
    with pytest.raises(ReplicationNotAcknowledged):
        await write(acked)
    assert time.monotonic() - started < 2.5  # the ack timeout, not the socket timeout


async def test_reads_never_wait(acked: RedisConsentStore, pair: Pair) -> None:
    await acked.record_event(event(Action.OPT_OUT))
    await acked.tombstones.secret("acme")  # created (and acknowledged) while replicated
    pair.replica.pause()
    started = time.monotonic()
    rows = await acked.read_records("acme", [ALICE, BOB], "marketing")
    assert rows[0][1] is not None and rows[1] == (None, None)
    await acked.list_events("acme", ALICE, 10, None)
    await acked.tenant_settings("acme")
    await RedisSecurityStore(acked.client, acked.tombstones).get_key("nope")
    assert time.monotonic() - started < ACK_TIMEOUT_MS / 1000


async def test_unacknowledged_change_is_on_the_primary_and_a_retry_waits_again(
    acked: RedisConsentStore, pair: Pair
) -> None:
    """The change was applied on the primary; a retry with the same event_id is a replay
    (nothing runs twice), and it too is acknowledged only once a replica has it, even
    though the replay itself writes nothing."""
    ev = event(Action.OPT_OUT)
    # The retry will arrive at another server process, on a connection whose own last
    # write (this one) is replicated; the replay writes nothing itself, yet it must
    # wait for the first, unreplicated write of its event.
    other = open_store(
        pair.primary.url,
        timeout_s=SOCKET_TIMEOUT_S,
        min_replicas_ack=1,
        ack_timeout_ms=ACK_TIMEOUT_MS,
    )
    try:
        await other.record_event(event(Action.OPT_OUT, recipient=BOB))
        pair.replica.pause()
        with pytest.raises(ReplicationNotAcknowledged):
            await acked.record_event(ev)
        bucket, _, _ = keys.layout("acme", ALICE)
        assert await acked.client.hexists(bucket, keys.rfield(ALICE))  # applied on the primary
        with pytest.raises(ReplicationNotAcknowledged):
            await other.record_event(ev)
    finally:
        await other.aclose()
    pair.replica.resume()
    out = await acked.record_event(ev)
    assert out.duplicate and out.applied
    assert redis.Redis(port=pair.replica.port).hexists(bucket, keys.rfield(ALICE))


async def test_without_the_setting_writes_do_not_wait(pair: Pair) -> None:
    """Default (0): acknowledged as soon as the primary has it, even with the replica
    paused; the acknowledgement says nothing about replication."""
    store = open_store(pair.primary.url, timeout_s=2.0)
    try:
        pair.replica.pause()
        out = await store.record_event(event(Action.OPT_OUT))
        assert out.applied
    finally:
        pair.replica.resume_if_paused()
        await store.aclose()


async def test_primary_refusing_writes_for_lack_of_replicas_is_unavailable(pair: Pair) -> None:
    """min-replicas-to-write on the primary (the README's advice beside WAIT): Redis
    answers NOREPLICAS, which is an outage for the caller (UNAVAILABLE), not a bug."""
    from consent_server.domain.errors import StoreUnavailable

    store = open_store(pair.primary.url, timeout_s=2.0)
    primary = pair.primary.client()
    primary.config_set("min-replicas-to-write", 2)  # one replica connected: too few
    try:
        with pytest.raises(StoreUnavailable):
            await store.record_event(event(Action.OPT_OUT))
    finally:
        primary.config_set("min-replicas-to-write", 0)
        await store.aclose()


@pytest.mark.cluster
@pytest.mark.slow
async def test_on_a_cluster_the_wait_runs_on_the_primary_of_the_key(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """3 primaries + 3 replicas: with one primary's replica paused, writes whose slot
    that primary serves are not acknowledged, and writes to the other primaries are: the
    WAIT ran on the connection to the key's own primary, not on any node."""
    from redis.crc import key_slot

    from consent_server.domain.model import Channel, Recipient

    from .cluster_support import RedisClusterProcesses

    cluster = RedisClusterProcesses(
        tmp_path_factory.mktemp("ack-cluster"), replicas=1, node_timeout_ms=5000
    ).start()
    store = open_store(
        cluster.url,
        cluster=True,
        timeout_s=SOCKET_TIMEOUT_S,
        min_replicas_ack=1,
        ack_timeout_ms=ACK_TIMEOUT_MS,
    )
    try:
        people = [Recipient(Channel.SMS, f"+1415{i:07d}") for i in range(60)]

        def primary(r: Recipient) -> int:
            return cluster.primary_of_slot(key_slot(keys.tag(keys.partition("acme", r)).encode()))

        owners = {r: primary(r) for r in people}
        assert len(set(owners.values())) == 3  # spread over every primary
        for r in people[:30]:  # all acknowledged while every replica keeps up
            await store.record_event(event(Action.OPT_OUT, recipient=r))
        victim = cluster.primary_of_slot(16383)
        cluster.pause(cluster.replica_of(victim))
        outcomes: dict[bool, set[bool]] = {True: set(), False: set()}
        rest = people[30:]
        victims = [r for r in rest if owners[r] == victim][:4]
        others = [r for r in rest if owners[r] != victim][:8]
        for r in victims + others:
            try:
                await store.record_event(event(Action.OPT_OUT, recipient=r))
                outcomes[owners[r] == victim].add(True)
            except ReplicationNotAcknowledged:
                outcomes[owners[r] == victim].add(False)
        assert outcomes == {True: {False}, False: {True}}
    finally:
        await store.aclose()
        cluster.stop()
