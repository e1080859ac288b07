"""The Redis repository on fakeredis and on a real redis-server (same tests, both backends)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid

import fakeredis
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from consent_server.domain.decision import decide
from consent_server.domain.errors import IdConflict, StoreUnavailable
from consent_server.domain.model import (
    Action,
    Channel,
    ConsentEventInput,
    OutboundMessage,
    Policy,
    Recipient,
    SendAccepted,
    SendBlocked,
    SendInput,
    Status,
    TenantSettings,
)
from consent_server.store import keys
from consent_server.store.repository import RedisConsentStore

from .support import RedisProcess, consent_event

ALICE = Recipient(Channel.WHATSAPP, "+919876543210")
BOB = Recipient(Channel.EMAIL, "bob@example.com")
T0 = 1_790_000_000_000


def event(
    action: Action,
    *,
    topic: str = "",
    at: int = T0,
    event_id: str | None = None,
    tenant: str = "acme",
    recipient: Recipient = ALICE,
) -> ConsentEventInput:
    return consent_event(
        tenant,
        recipient,
        event_id=event_id or f"ev_{uuid.uuid4().hex}",
        action=action,
        topic=topic,
        occurred_at_ms=at,
        evidence="test",
        principal="tester",
    )


def send_input(
    topic: str = "marketing", key: str = "", tenant: str = "acme", recipient: Recipient = ALICE
) -> SendInput:
    return SendInput(
        tenant_id=tenant,
        recipient=recipient,
        topic=topic,
        message=OutboundMessage(kind="text", text="hello"),
        idempotency_key=key,
        not_after_ms=0,
        metadata={"campaign": "c1"},
    )


async def test_first_opt_out_applies_and_changes(store: RedisConsentStore) -> None:
    out = await store.record_event(event(Action.OPT_OUT))
    assert (out.applied, out.changed, out.status, out.revision, out.duplicate) == (
        True,
        True,
        Status.OPTED_OUT,
        1,
        False,
    )
    again = await store.record_event(event(Action.OPT_OUT, at=T0 + 1))
    assert again.applied and not again.changed and again.revision == 2
    [(topic_rec, all_rec)] = await store.read_records("acme", [ALICE], "marketing")
    assert topic_rec is None and all_rec is not None
    assert all_rec.status is Status.OPTED_OUT and all_rec.revision == 2


async def test_event_id_replay_returns_first_outcome_and_adds_no_history(
    store: RedisConsentStore,
) -> None:
    first = await store.record_event(event(Action.OPT_OUT, event_id="wamid.1"))
    # The same change again (a redelivered webhook, a retry with a fresh occurred_at):
    # the first outcome, nothing written.
    replay = await store.record_event(event(Action.OPT_OUT, event_id="wamid.1", at=T0 + 5))
    assert replay.duplicate and not first.duplicate
    assert (replay.applied, replay.changed, replay.status, replay.revision) == (
        first.applied,
        first.changed,
        first.status,
        first.revision,
    )
    assert replay.recorded_at_ms == first.recorded_at_ms
    page = await store.list_events("acme", ALICE, 10, None)
    assert [e.event_id for e in page.events] == ["wamid.1"]
    # The same id for a different change would silently drop it: refused, nothing written.
    for other_change in (
        event(Action.OPT_IN, event_id="wamid.1"),
        event(Action.OPT_OUT, topic="marketing", event_id="wamid.1"),
    ):
        with pytest.raises(IdConflict) as conflict:
            await store.record_event(other_change)
        assert conflict.value.field == "event_id" and conflict.value.reason == "EVENT_ID_REUSED"
    page = await store.list_events("acme", ALICE, 10, None)
    assert [e.event_id for e in page.events] == ["wamid.1"]
    [(_, all_rec)] = await store.read_records("acme", [ALICE], "")
    assert all_rec is not None and all_rec.status is Status.OPTED_OUT
    # Idempotency is per recipient: the same id for Bob is a new event.
    other = await store.record_event(event(Action.OPT_OUT, event_id="wamid.1", recipient=BOB))
    assert not other.duplicate


async def test_late_event_is_kept_but_not_applied(store: RedisConsentStore) -> None:
    await store.record_event(event(Action.OPT_OUT, at=T0))
    late = await store.record_event(event(Action.OPT_IN, at=T0 - 3_600_000))
    assert not late.applied and not late.changed and late.status is Status.OPTED_OUT
    assert late.revision == 2
    [(_, all_rec)] = await store.read_records("acme", [ALICE], "")
    assert all_rec is not None and all_rec.status is Status.OPTED_OUT
    page = await store.list_events("acme", ALICE, 10, None)
    assert [(e.revision, e.applied, e.action) for e in page.events] == [
        (2, False, Action.OPT_IN),
        (1, True, Action.OPT_OUT),
    ]
    assert page.events[0].principal == "tester" and page.events[0].evidence == "test"


async def test_send_accepts_enqueues_and_records_status(store: RedisConsentStore) -> None:
    result = await store.send(send_input(), Policy.ALLOW_UNLESS_OPTED_OUT)
    assert isinstance(result, SendAccepted) and not result.duplicate
    part = keys.partition("acme", ALICE)
    entries = await store.client.xrange(keys.outbox(part))
    assert len(entries) == 1
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert fields["id"] == result.message_id and fields["addr"] == ALICE.address
    assert fields["topic"] == "marketing" and '"text":"hello"' in fields["body"]
    status = await store.message_status("acme", result.message_id)
    assert status is not None and status.state.value == "accepted"
    assert status.recipient == ALICE and status.accepted_at_ms == result.accepted_at_ms
    # Another tenant cannot see it; garbage ids are simply unknown.
    assert await store.message_status("other", result.message_id) is None
    assert await store.message_status("acme", "m" + "0" * 30) is None
    assert await store.message_status("acme", "../../etc") is None


async def test_send_idempotency_key_replays_first_message(store: RedisConsentStore) -> None:
    first = await store.send(send_input(key="order-42"), Policy.ALLOW_UNLESS_OPTED_OUT)
    again = await store.send(send_input(key="order-42"), Policy.ALLOW_UNLESS_OPTED_OUT)
    assert isinstance(first, SendAccepted) and isinstance(again, SendAccepted)
    assert again.duplicate and again.message_id == first.message_id
    assert again.accepted_at_ms == first.accepted_at_ms
    # The same key for a different message is refused and queues nothing.
    other = dataclasses.replace(
        send_input(key="order-42"), message=OutboundMessage(kind="text", text="a different text")
    )
    with pytest.raises(IdConflict) as conflict:
        await store.send(other, Policy.ALLOW_UNLESS_OPTED_OUT)
    assert conflict.value.field == "idempotency_key"
    part = keys.partition("acme", ALICE)
    assert await store.client.xlen(keys.outbox(part)) == 1


async def test_send_blocked_by_opt_out_and_by_policy(store: RedisConsentStore) -> None:
    await store.record_event(event(Action.OPT_OUT, topic="marketing"))
    blocked = await store.send(send_input("marketing"), Policy.ALLOW_UNLESS_OPTED_OUT)
    assert isinstance(blocked, SendBlocked)
    assert blocked.decision.block_reason is not None
    assert blocked.decision.block_reason.value == "RECIPIENT_OPTED_OUT"
    assert isinstance(
        await store.send(send_input("orders"), Policy.ALLOW_UNLESS_OPTED_OUT), SendAccepted
    )
    policy = await store.send(send_input("orders"), Policy.REQUIRE_OPT_IN)
    assert isinstance(policy, SendBlocked)
    assert policy.decision.block_reason is not None
    assert policy.decision.block_reason.value == "OPT_IN_REQUIRED"
    part = keys.partition("acme", ALICE)
    assert await store.client.xlen(keys.outbox(part)) == 1  # blocked sends queue nothing


async def test_read_records_keeps_request_order(store: RedisConsentStore) -> None:
    people = [Recipient(Channel.SMS, f"+1415555{i:04d}") for i in range(50)]
    for p in people[::3]:
        await store.record_event(event(Action.OPT_OUT, topic="marketing", recipient=p))
    pairs = await store.read_records("acme", people, "marketing")
    assert [t is not None for t, _ in pairs] == [i % 3 == 0 for i in range(50)]


async def test_history_pages_newest_first(store: RedisConsentStore) -> None:
    for i in range(25):
        await store.record_event(event(Action.OPT_OUT if i % 2 else Action.OPT_IN, at=T0 + i))
    seen, before = [], None
    for _ in range(10):
        page = await store.list_events("acme", ALICE, 10, before)
        seen += [e.revision for e in page.events]
        before = page.next_before_revision
        if before is None:
            break
    assert seen == list(range(25, 0, -1))


async def test_tenant_settings_round_trip(store: RedisConsentStore) -> None:
    assert await store.tenant_settings("acme") == TenantSettings()
    wanted = TenantSettings("IN", Policy.REQUIRE_OPT_IN, {"orders": Policy.ALLOW_UNLESS_OPTED_OUT})
    await store.put_tenant_settings("acme", wanted)
    assert await store.tenant_settings("acme") == dataclasses.replace(wanted, version=1)
    assert wanted.policy_for("orders") is Policy.ALLOW_UNLESS_OPTED_OUT
    assert wanted.policy_for("marketing") is Policy.REQUIRE_OPT_IN


async def test_scripts_survive_script_flush(store: RedisConsentStore) -> None:
    """EVALSHA falls back to loading the script when Redis forgot it (NOSCRIPT)."""
    await store.record_event(event(Action.OPT_OUT))
    await store.client.script_flush()
    out = await store.record_event(event(Action.OPT_IN, at=T0 + 1))
    assert out.applied
    await store.client.script_flush()
    assert isinstance(await store.send(send_input(), Policy.ALLOW_UNLESS_OPTED_OUT), SendAccepted)


async def test_unreachable_store_raises_store_unavailable(redis_proc: RedisProcess) -> None:
    from .support import free_port

    client = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    store = RedisConsentStore(client, settings_cache_s=0)
    for call in (
        store.ping(),
        store.tenant_settings("acme"),
        store.read_records("acme", [ALICE], ""),
        store.record_event(event(Action.OPT_OUT)),
        store.send(send_input(), Policy.ALLOW_UNLESS_OPTED_OUT),
    ):
        with pytest.raises(StoreUnavailable):
            await call
    await store.aclose()


async def test_import_export_and_point_in_time_reads_fail_closed(
    redis_proc: RedisProcess,
) -> None:
    """The stores behind ImportConsent, ExportConsent and CheckConsent ``at`` turn an
    outage into StoreUnavailable (UNAVAILABLE), like every other store call: never an
    internal error, never an answer made up without the store."""
    from consent_server.domain.model import ExportQuery
    from consent_server.store.bulk import RedisBulkStore
    from consent_server.store.history import RedisConsentHistory

    from .support import free_port

    client = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    history = RedisConsentHistory(client)
    bulk = RedisBulkStore(client)

    async def export() -> None:
        async for _ in bulk.export("acme", ExportQuery()):
            pass

    for call in (
        history.histories("acme", [ALICE]),
        history.tombstone_records("acme", [ALICE], "marketing"),
        bulk.views("acme", [(ALICE, ["ev_1"])]),
        bulk.apply([event(Action.OPT_OUT)]),
        export(),
    ):
        with pytest.raises(StoreUnavailable):
            await call
    await client.aclose()


@given(
    tenant=st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z"),
    address=st.from_regex(r"\A\+[1-9]\d{9,13}\Z"),
    channel=st.sampled_from(list(Channel)),
    key=st.from_regex(r"\A[\x21-\x7e]{1,40}\Z"),
)
def test_every_key_a_script_touches_shares_one_slot(
    tenant: str, address: str, channel: Channel, key: str
) -> None:
    """Redis Cluster: all keys of one script call hash to one slot."""
    rcpt = Recipient(channel, address)
    base = keys.recipient_base(tenant, rcpt)
    part = keys.partition(tenant, rcpt)
    script_keys = [
        keys.state(base),
        keys.history(base),
        keys.idempotency(base, key),
        keys.outbox(part),
        keys.message(tenant, part, keys.new_message_id(part)),
    ]
    assert len({key_slot(k.encode()) for k in script_keys}) == 1


def test_partitions_spread_over_cluster_slots() -> None:
    slots = {key_slot(keys.outbox(p).encode()) for p in range(keys.PARTITIONS)}
    assert len(slots) == keys.PARTITIONS


# -- ordering property: any delivery order ends where sorting by (occurred_at, revision) says --

SCOPES = ["", "marketing", "orders"]
EVENTS = st.lists(
    st.tuples(st.sampled_from(SCOPES), st.sampled_from(list(Action)), st.integers(0, 6)),
    min_size=1,
    max_size=12,
)


def _expected(delivered: list[tuple[str, Action, int]]) -> dict[str, tuple[Status, int, int]]:
    """Per scope: the event with the greatest (occurred_at, revision); revision = arrival."""
    best: dict[str, tuple[int, int, Action]] = {}
    for revision, (scope, action, at) in enumerate(delivered, start=1):
        if scope not in best or (at, revision) > best[scope][:2]:
            best[scope] = (at, revision, action)
    return {s: (a.status, at, rev) for s, (at, rev, a) in best.items()}


async def _check_order_property(
    store: RedisConsentStore, tenant: str, delivered: list[tuple[str, Action, int]]
) -> None:
    applied_flags = []
    for scope, action, at in delivered:
        out = await store.record_event(event(action, topic=scope, at=T0 + at, tenant=tenant))
        applied_flags.append(out.applied)
    expected = _expected(delivered)
    for topic in SCOPES:
        [(topic_rec, all_rec)] = await store.read_records(tenant, [ALICE], topic)
        got_all = (
            (all_rec.status, all_rec.occurred_at_ms - T0, all_rec.revision) if all_rec else None
        )
        assert got_all == expected.get("")
        if topic:
            got = (
                (topic_rec.status, topic_rec.occurred_at_ms - T0, topic_rec.revision)
                if topic_rec
                else None
            )
            assert got == expected.get(topic)
        # The Lua rule in send.lua agrees with the Python rule for every scope and policy.
        for policy in Policy:
            if not topic:
                continue
            python_allows = decide(topic_rec, all_rec, policy).allowed
            result = await store.send(send_input(topic, tenant=tenant), policy)
            assert isinstance(result, SendAccepted) == python_allows
    # History keeps every event, applied or not, with strictly increasing revisions.
    page = await store.list_events(tenant, ALICE, 100, None)
    assert [e.revision for e in page.events] == list(range(len(delivered), 0, -1))
    assert [e.applied for e in reversed(page.events)] == applied_flags


@pytest.mark.slow  # a property run of several seconds: make test, not test-fast
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=EVENTS, data=st.data())
def test_any_delivery_order_matches_sorted_order_fakeredis(events, data) -> None:
    delivered = data.draw(st.permutations(events))

    async def run() -> None:
        store = RedisConsentStore(
            fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), settings_cache_s=0
        )
        await _check_order_property(store, "acme", delivered)
        await store.aclose()

    asyncio.run(run())


_counter = itertools.count()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=EVENTS, data=st.data())
def test_any_delivery_order_matches_sorted_order_redis(
    redis_proc: RedisProcess, events, data
) -> None:
    delivered = data.draw(st.permutations(events))
    tenant = f"prop-{uuid.uuid4().hex[:12]}-{next(_counter)}"

    async def run() -> None:
        store = RedisConsentStore(aioredis.Redis.from_url(redis_proc.url), settings_cache_s=0)
        await _check_order_property(store, tenant, delivered)
        await store.aclose()

    asyncio.run(run())


async def test_more_concurrent_calls_than_pooled_connections_all_succeed(
    redis_proc: RedisProcess,
) -> None:
    """The real-Redis store's pool holds 256 connections; more calls at once wait for a
    free one rather than failing with a spurious UNAVAILABLE."""
    from consent_server.store.connect import open_store

    s = open_store(redis_proc.url, timeout_s=10)
    try:
        rcpts = [Recipient(Channel.SMS, f"+1415555{i:04d}") for i in range(400)]
        results = await asyncio.gather(*(s.read_records("t-pool", [r], "") for r in rcpts))
        assert len(results) == 400 and all(pair == [(None, None)] for pair in results)
    finally:
        await s.aclose()
