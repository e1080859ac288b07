"""Erasure holds against replays and races (fakeredis and a real redis-server).

After ForgetRecipient nothing dated before the erasure changes the state, reaches the
person or stores their address again: replayed inbound keywords, late API events,
confirmations, and messages accepted while the erasure ran.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from consent_server.delivery.worker import DeliveryWorker, WorkerOptions
from consent_server.domain.delivery import ALL_CHANNELS, DeliveryAdmin, ProviderKind, RawProvider
from consent_server.domain.egress import EgressPolicy
from consent_server.domain.errors import SendBlocked
from consent_server.domain.model import Action, Channel, MessageState, Recipient, Source, Status
from consent_server.domain.security import RateLimits, SecurityAuthority
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawMessage, RawRecipient
from consent_server.store import keys
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

from .fake_provider import FakeProvider, fake_provider
from .support import change_consent, raw_ts

# The fake provider listens on loopback, which delivery refuses unless the operator
# allows it: these tests are that operator.
LOOPBACK = EgressPolicy.parse("127.0.0.1")

TENANT = "acme"
PHONE = "+919876543210"
DIGITS = b"9876543210"  # the address as any key or value would hold it
WA = RawRecipient(Channel.WHATSAPP, PHONE)
ALICE = Recipient(Channel.WHATSAPP, PHONE)
CAROL = RawRecipient(Channel.EMAIL, "carol@example.com")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def security(store: RedisConsentStore) -> SecurityAuthority:
    return SecurityAuthority(
        RedisSecurityStore(store.client, store.tombstones), store, limits=RateLimits(0, 0)
    )


async def forget(store: RedisConsentStore, who: RawRecipient = WA) -> int:
    """Erase ``who``; returns the erasure's time (ms) as the erasure log recorded it."""
    result = await security(store).forget(TENANT, who, "op")
    assert result.recipient.address
    rcpt = result.recipient
    log = keys.erasure_log(TENANT, keys.partition(TENANT, rcpt))
    entries = await store.client.xrange(log)
    return max(int(f[b"at"]) for _, f in entries)


async def after(ms: int) -> None:
    """Wait until the clock is past ``ms`` (events dated now are then after it)."""
    delay = (ms + 1 - _now_ms()) / 1000  # Redis and the test read the same host clock
    if delay > 0:
        await asyncio.sleep(delay)
    assert _now_ms() > ms


async def inbound(a: ConsentAuthority, text: str, wamid: str, at_ms: int) -> Any:
    return await a.inbound(
        tenant_id=TENANT,
        recipient=WA,
        text=text,
        button_payload="",
        provider_message_id=wamid,
        received_at=raw_ts(at_ms),
    )


async def change(
    a: ConsentAuthority, action: Action, at_ms: int | None, who: RawRecipient = WA, topic: str = ""
) -> Any:
    occurred_at = raw_ts(at_ms) if at_ms else None
    return await change_consent(
        a,
        action,
        TENANT,
        who,
        topic,
        source=Source.IMPORT,
        evidence="late import",
        occurred_at=occurred_at,
    )


async def send(a: ConsentAuthority, n: int = 0, key: str = "", who: RawRecipient = WA) -> Any:
    return await a.send(
        tenant_id=TENANT,
        recipient=who,
        topic="order_updates",
        message=RawMessage("text", text=f"Order {n} shipped"),
        idempotency_key=key,
        not_after=None,
        metadata={},
    )


async def everything(store: RedisConsentStore) -> list[tuple[bytes, bytes]]:
    """Every key name and every value of every type, for 'is the address gone' checks."""
    r = store.client
    out: list[tuple[bytes, bytes]] = []
    async for key in r.scan_iter(count=1000):
        kind = await r.type(key)
        if kind == b"hash":
            blob = b" ".join(k + b"=" + v for k, v in (await r.hgetall(key)).items())
        elif kind == b"stream":
            entries = await r.xrange(key)
            blob = b" ".join(b" ".join(k + b"=" + v for k, v in f.items()) for _, f in entries)
        elif kind == b"string":
            blob = await r.get(key) or b""
        elif kind == b"zset":
            blob = b" ".join(await r.zrange(key, 0, -1))
        elif kind == b"set":
            blob = b" ".join(await r.smembers(key))
        elif kind == b"list":
            blob = b" ".join(await r.lrange(key, 0, -1))
        else:
            raise AssertionError(f"unexpected key type {kind!r} of {key!r}")
        out.append((key, blob))
    return out


async def holding_the_address(store: RedisConsentStore) -> list[bytes]:
    """Names of the keys whose name or value holds the address."""
    return [k for k, blob in await everything(store) if DIGITS in k or DIGITS in blob]


async def blocked(a: ConsentAuthority, topic: str = "order_updates") -> bool:
    return not (await a.check(TENANT, WA, topic)).decision.allowed


async def test_replayed_keywords_after_erasure_change_nothing_and_store_nothing(
    store: RedisConsentStore,
) -> None:
    a = ConsentAuthority(store)
    t0 = _now_ms() - 60_000
    start = await inbound(a, "START", "wamid.START-1", t0)
    stop = await inbound(a, "STOP", "wamid.STOP-1", t0 + 1000)
    assert start.reply_message_id and stop.reply_message_id
    erased_at = await forget(store)
    assert await holding_the_address(store) == []

    # Meta redelivers both webhooks: the old START is not applied (no "you are
    # subscribed" to the erased person), the old STOP queues no second confirmation.
    for text, wamid, at in (("START", "wamid.START-1", t0), ("STOP", "wamid.STOP-1", t0 + 1000)):
        again = await inbound(a, text, wamid, at)
        assert again.reply_message_id == "" and again.reply_text == "", text
        assert await holding_the_address(store) == [], text
    # The same for keywords with new ids but dated before the erasure.
    late = await inbound(a, "START", "wamid.START-2", erased_at)
    assert late.reply_message_id == ""
    assert await blocked(a)
    assert await holding_the_address(store) == []
    assert (await a.history(TENANT, WA, 0, "")).events == []
    # Their only trace: a count on the tombstone, which holds no address.
    tomb = await store.tombstones.key(TENANT, ALICE)
    assert await store.client.hget(tomb, "ign") == b"3"


async def test_an_event_dated_before_the_erasure_answers_what_the_checks_say(
    store: RedisConsentStore,
) -> None:
    a = ConsentAuthority(store)
    await change(a, Action.OPT_OUT, None)
    erased_at = await forget(store)
    for action in (Action.OPT_IN, Action.OPT_OUT):
        for at in (erased_at - 3_600_000, erased_at):
            out = (await change(a, action, at)).outcome
            check = (await a.scope_check(TENANT, WA, "")).decision
            assert (out.applied, out.changed) == (False, False), (action, at)
            assert out.status is check.status is Status.OPTED_OUT
            assert not out.duplicate
            assert await holding_the_address(store) == []
    # A topic event dated before the erasure answers the topic's check (decided by ALL).
    topical = (await change(a, Action.OPT_IN, erased_at - 1, topic="marketing")).outcome
    assert not topical.applied and topical.status is Status.OPTED_OUT
    assert await blocked(a, "marketing")

    # A fresh opt-out is a new fact: recorded, though the status does not flip.
    await after(erased_at)
    fresh_out = (await change(a, Action.OPT_OUT, None)).outcome
    assert fresh_out.applied and not fresh_out.changed and fresh_out.status is Status.OPTED_OUT
    assert len((await a.history(TENANT, WA, 0, "")).events) == 1
    # Only a fresh explicit opt-in lifts the suppression.
    fresh_in = (await change(a, Action.OPT_IN, None)).outcome
    assert fresh_in.applied and fresh_in.changed and fresh_in.status is Status.OPTED_IN
    assert not await blocked(a)


async def test_a_late_opt_out_after_an_erasure_is_kept_without_the_address(
    store: RedisConsentStore,
) -> None:
    a = ConsentAuthority(store)
    await change(a, Action.OPT_IN, None, who=CAROL, topic="marketing")
    erased_at = await forget(store, CAROL)
    late = (await change(a, Action.OPT_OUT, erased_at - 10, who=CAROL)).outcome
    check = (await a.scope_check(TENANT, CAROL, "")).decision
    # A STOP sent before the erasure and delivered after it is not lost: the tombstone
    # keeps it as a suppression (no history, no address), so the person is not messaged.
    assert (late.applied, late.changed) == (False, False)
    assert late.status is check.status is Status.OPTED_OUT
    assert not check.allowed
    assert not any(b"carol" in k or b"carol" in v for k, v in await everything(store))
    # Only an opt-in dated after the erasure lifts it.
    await after(erased_at)
    lifted = (await change(a, Action.OPT_IN, None, who=CAROL)).outcome
    assert lifted.applied and lifted.status is Status.OPTED_IN
    assert (await a.scope_check(TENANT, CAROL, "")).decision.allowed
    # After the erasure an opt-out is recorded and acts as ever.
    fresh = (await change(a, Action.OPT_OUT, None, who=CAROL)).outcome
    assert fresh.applied and fresh.changed and fresh.status is Status.OPTED_OUT
    with pytest.raises(SendBlocked):
        await send(a, who=CAROL)


def _worker(store: RedisConsentStore, name: str = "w-erasure") -> DeliveryWorker:
    # run_once handles a whole batch at once: keep it within the test pool (100).
    from redis.asyncio.cluster import RedisCluster

    cluster = isinstance(store.client, RedisCluster)  # test_store_cluster.py runs some
    return DeliveryWorker(
        store,
        DeliveryRepository(store.client, cluster=cluster),
        WorkerOptions(consumer=name, batch=40, concurrency=32, visibility_timeout_s=30),
        providers=RedisProviderSettings(store.client),
        egress=LOOPBACK,
    )


async def _use(store: RedisConsentStore, fake: FakeProvider) -> None:
    await DeliveryAdmin(RedisProviderSettings(store.client), LOOPBACK).set_provider(
        TENANT,
        RawProvider(
            ALL_CHANNELS, ProviderKind.WEBHOOK, url=fake.url + "/hook", secret="whsec_0123456789ab"
        ),
    )


async def _drain(worker: DeliveryWorker) -> None:
    """Run the worker until a round finds nothing to do."""
    while await worker.run_once():
        pass


def _delivered_ids(fake: FakeProvider) -> set[str]:
    return {r.json["message_id"] for r in fake.requests}


async def test_a_confirmation_queued_before_the_erasure_never_reaches_the_person(
    store: RedisConsentStore,
) -> None:
    """A confirmation entry without a status record (the outbox contract allows one) that
    reaches the outbox after the erasure is cancelled at claim time, address removed."""
    a = ConsentAuthority(store)
    await change(a, Action.OPT_OUT, None)
    accepted = _now_ms()
    erased_at = await forget(store)
    part = keys.partition(TENANT, ALICE)
    mid = keys.new_message_id(part)
    body = json.dumps({"kind": "text", "text": "You will get no more messages."})
    await store.client.xadd(
        keys.outbox(part),
        {"id": mid, "tenant": TENANT, "ch": "whatsapp", "addr": PHONE, "topic": "",
         "body": body, "not_after": "0", "meta": "{}", "rev": "2", "at": str(accepted),
         "purpose": "confirmation"},
    )  # fmt: skip
    assert accepted <= erased_at
    with fake_provider() as fake:
        await _use(store, fake)
        await _drain(_worker(store))
        assert fake.requests == []
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.CANCELLED
    assert await holding_the_address(store) == []


async def _blind_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """The erasure's own search finds nothing: as if every message and outbox entry had
    been accepted after that search and before the erasure script (the race)."""

    async def nothing(*_args: object) -> list[str]:
        return []

    monkeypatch.setattr(RedisSecurityStore, "_messages_of", nothing)
    monkeypatch.setattr(RedisSecurityStore, "_outbox_entries", nothing)


async def test_erasure_removes_the_provider_id_mapping_of_past_messages(
    store: RedisConsentStore,
) -> None:
    """A provider's message id may encode the address (a WhatsApp wamid holds the
    wa_id): the mapping from it to a delivered message goes with the erasure."""
    a = ConsentAuthority(store)
    mid = (await send(a)).accepted.message_id
    with fake_provider() as fake:
        fake.answer((200, {"id": "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQ0"}))
        await _use(store, fake)
        await _drain(_worker(store))
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.DELIVERED
    pid_keys = [k async for k in store.client.scan_iter(match="ca:tenant:acme:pid:*")]
    assert len(pid_keys) == 1
    await forget(store)
    assert [k async for k in store.client.scan_iter(match="ca:tenant:acme:pid:*")] == []
    assert await store.message_status(TENANT, mid) is None


async def test_messages_accepted_while_the_erasure_runs_are_fenced(
    store: RedisConsentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = ConsentAuthority(store)
    sent = [await send(a, n, key=f"k{n}" if n % 2 else "") for n in range(4)]
    stop = await inbound(a, "STOP", "wamid.STOP-9", _now_ms())
    assert stop.reply_message_id
    ids = [s.accepted.message_id for s in sent] + [stop.reply_message_id]
    await _blind_discovery(monkeypatch)
    await forget(store)
    assert await holding_the_address(store) == []
    with fake_provider() as fake:
        await _use(store, fake)
        await _drain(_worker(store))
        assert fake.requests == []
    for mid in ids:
        status = await store.message_status(TENANT, mid)
        assert status is None or status.state is MessageState.CANCELLED, mid
    assert await holding_the_address(store) == []


@pytest.mark.parametrize("sends", [3000])
async def test_thousands_of_sends_racing_an_erasure(store: RedisConsentStore, sends: int) -> None:
    """Concurrent SendIfAllowed calls race one ForgetRecipient. Afterwards no message
    accepted before the erasure is delivered, and only messages accepted after it hold
    the address anywhere in Redis."""
    a = ConsentAuthority(store)
    await change(a, Action.OPT_IN, None, topic="order_updates")
    results: list[Any] = []
    erased_at = 0
    # The test clients' pools hold 100 connections and refuse more rather than wait;
    # the erasure needs a few of its own.
    gate = asyncio.Semaphore(80)
    quarter = asyncio.Event()

    async def one(n: int) -> None:
        async with gate:
            results.append(await send(a, n, key=f"order-{n}" if n % 3 == 0 else ""))
        if len(results) >= sends // 4:
            quarter.set()

    async def erase() -> None:
        nonlocal erased_at
        await quarter.wait()  # erase while sends are in flight
        erased_at = await forget(store)

    await asyncio.gather(erase(), *(one(n) for n in range(sends)))
    before = {r.accepted.message_id for r in results if r.accepted.accepted_at_ms <= erased_at}
    later = {r.accepted.message_id for r in results} - before
    assert before and len(before) + len(later) == sends

    with fake_provider() as fake:
        await _use(store, fake)
        await _drain(_worker(store))
        delivered = _delivered_ids(fake)
    assert delivered & before == set()
    assert delivered == later
    for mid in before:
        status = await store.message_status(TENANT, mid)
        assert status is None or status.state is MessageState.CANCELLED, mid
    # Only records of messages accepted after the erasure may still hold the address.
    for key, blob in await everything(store):
        if DIGITS not in key and DIGITS not in blob:
            continue
        name = key.decode()
        if ":i:" in name:  # a send idempotency key: value "<message id>|..."
            assert blob.decode().split("|")[0] in later, name
        else:
            assert name.rsplit(":m:", 1)[-1] in later, name


def test_erasure_holds_over_grpc_against_a_late_opt_in_and_a_replayed_start() -> None:
    """The real server process (embedded store): the answers a caller sees."""
    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp

    from consent_client.v1 import admin_pb2 as apb
    from consent_client.v1 import admin_pb2_grpc, consent_pb2_grpc
    from consent_client.v1 import consent_pb2 as pb

    from .support import ServerProcess

    srv = ServerProcess({"CONSENT_DELIVERY": "off"}).start()
    try:
        with grpc.insecure_channel(srv.target) as channel:
            c = consent_pb2_grpc.ConsentServiceStub(channel)
            admin = admin_pb2_grpc.ConsentAdminServiceStub(channel)
            who = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address=PHONE)
            start_at = Timestamp(seconds=int(time.time()) - 120)
            start = pb.HandleInboundMessageRequest(
                tenant_id=TENANT,
                recipient=who,
                text="START",
                provider_message_id="wamid.E2E-START",
                received_at=start_at,
            )
            assert c.HandleInboundMessage(start).reply_message_id
            c.OptOut(pb.OptOutRequest(tenant_id=TENANT, recipient=who))
            admin.ForgetRecipient(apb.ForgetRecipientRequest(tenant_id=TENANT, recipient=who))

            late = c.OptIn(
                pb.OptInRequest(
                    tenant_id=TENANT,
                    recipient=who,
                    source=pb.SOURCE_IMPORT,
                    occurred_at=Timestamp(seconds=int(time.time()) - 3600),
                )
            )
            # Any topic: the all-topics suppression decides it.
            check = c.CheckConsent(
                pb.CheckConsentRequest(tenant_id=TENANT, recipient=who, topic="marketing")
            )
            assert (late.applied, late.changed) == (False, False)
            assert late.status == check.status == pb.CONSENT_STATUS_OPTED_OUT
            assert not check.allowed
            replay = c.HandleInboundMessage(start)
            assert replay.reply_message_id == "" and replay.reply_text == ""
            history = c.ListConsentEvents(
                pb.ListConsentEventsRequest(tenant_id=TENANT, recipient=who)
            )
            assert list(history.events) == []
    finally:
        assert srv.stop() == 0


async def test_erasure_removes_the_persons_whatsapp_dead_letters(
    store: RedisConsentStore,
) -> None:
    """A notification kept as a dead letter holds the raw item, so it names the person:
    it goes with the erasure, and a longer number that merely contains the digits stays."""
    from consent_server.domain.whatsapp_edge import DeadLetter
    from consent_server.store.deadletters import RedisDeadLetters

    dead = RedisDeadLetters(store.client)

    def item(ident: str, wa_id: str) -> DeadLetter:
        raw = json.dumps({"from": wa_id, "id": f"wamid.{ident}", "text": {"body": "STOP"}})
        return DeadLetter(
            id=ident, tenant_id=TENANT, received_at_ms=_now_ms(), reason="refused",
            detail="", kind="message", path="entry[0]", phone_number_id="106540352242922",
            raw=raw, body_digest=ident,
        )  # fmt: skip

    await dead.add_dead_letters(
        [item("dl_alice", PHONE.lstrip("+")), item("dl_other", "1" + PHONE.lstrip("+") + "7")],
        100,
    )
    await forget(store)
    left = await dead.dead_letters(TENANT, 0, 100)
    assert [i.id for i in left.items] == ["dl_other"]
    kept = await store.client.hgetall(keys.dead_letters(TENANT))
    assert all(b'"' + PHONE.lstrip("+").encode() + b'"' not in v for v in kept.values())
