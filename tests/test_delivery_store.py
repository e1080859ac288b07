"""Delivery on the store (fakeredis and a real redis-server), with a real local HTTP
server as the provider: claim + re-check, retries, expiry, provider opt-outs,
confirmations, receipts, reclaiming, provider configuration."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from consent_server.delivery.providers.webhook import verify
from consent_server.delivery.worker import DeliveryWorker, WorkerOptions
from consent_server.domain.delivery import (
    ALL_CHANNELS,
    DeliveryAdmin,
    ProviderConfig,
    ProviderKind,
    RawProvider,
    ReceiptOutcome,
    ReceiptStatus,
)
from consent_server.domain.egress import EgressPolicy
from consent_server.domain.errors import InvalidArgument, SendBlocked
from consent_server.domain.model import Action, Channel, MessageState, Recipient, Source
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawMessage, RawRecipient, RawTimestamp
from consent_server.store import keys
from consent_server.store.outbox import GROUP, DeliveryRepository
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore

from .fake_provider import FakeProvider, fake_provider
from .support import change_consent, consent_event, send_text

TENANT = "acme"
PHONE = "+919876543210"
SECRET = "whsec_0123456789abcdef"
WA = RawRecipient(Channel.WHATSAPP, PHONE)
ALICE = Recipient(Channel.WHATSAPP, PHONE)
CAMPAIGN = {"campaign": "c1"}

# The fake providers listen on loopback, which delivery refuses unless the operator
# allows it: these tests are that operator.
LOOPBACK = EgressPolicy.parse("127.0.0.1")
FINAL = {
    MessageState.DELIVERED,
    MessageState.LOGGED,
    MessageState.CANCELLED,
    MessageState.FAILED,
    MessageState.EXPIRED,
}


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with fake_provider() as f:
        yield f


@pytest.fixture
async def outbox(store: RedisConsentStore) -> DeliveryRepository:
    return DeliveryRepository(store.client)


def make_worker(
    store: RedisConsentStore, outbox: DeliveryRepository, name: str = "w1", **opts: object
) -> DeliveryWorker:
    options = WorkerOptions(
        **{  # type: ignore[arg-type]
            "visibility_timeout_s": 0.3,
            "backoff_base_ms": 20.0,
            "backoff_max_ms": 40.0,
            "consumer": name,
            **opts,
        }
    )
    return DeliveryWorker(
        store, outbox, options, providers=RedisProviderSettings(store.client), egress=LOOPBACK
    )


@pytest.fixture
async def worker(
    store: RedisConsentStore, outbox: DeliveryRepository
) -> AsyncIterator[DeliveryWorker]:
    w = make_worker(store, outbox)
    yield w
    await w.stop(0)


async def use_webhook(store: RedisConsentStore, url: str, channel: str = ALL_CHANNELS) -> None:
    await DeliveryAdmin(RedisProviderSettings(store.client), LOOPBACK).set_provider(
        TENANT, RawProvider(channel, ProviderKind.WEBHOOK, url=url + "/hook", secret=SECRET)
    )


async def use_whatsapp_cloud(
    store: RedisConsentStore, url: str, token: str, pnid: str, channel: str = ALL_CHANNELS
) -> None:
    await DeliveryAdmin(RedisProviderSettings(store.client), LOOPBACK).set_provider(
        TENANT,
        RawProvider(
            channel, ProviderKind.WHATSAPP_CLOUD, url=url, secret=token, phone_number_id=pnid
        ),
    )


async def send(
    store: RedisConsentStore,
    topic: str = "marketing",
    text: str = "Hello!",
    *,
    not_after: RawTimestamp | None = None,
) -> str:
    return await send_text(
        ConsentAuthority(store), TENANT, WA, topic, text, not_after=not_after, metadata=CAMPAIGN
    )


async def change(
    store: RedisConsentStore, action: Action, topic: str = "", source: Source = Source.API
) -> None:
    await change_consent(
        ConsentAuthority(store), action, TENANT, WA, topic, source=source, evidence="test"
    )


async def settle(worker: DeliveryWorker, store: RedisConsentStore, *ids: str) -> None:
    """Run the worker until every message is final (retries need a few rounds)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await worker.run_once()
        states = [(await store.message_status(TENANT, i)) for i in ids]
        if all(s is not None and s.state in FINAL for s in states):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not final: {states}")


async def test_accepted_message_is_delivered_signed(
    store: RedisConsentStore, outbox: DeliveryRepository, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    mid = await send(store, text="Your order shipped")
    before = await store.message_status(TENANT, mid)
    assert before is not None and before.state is MessageState.ACCEPTED
    await settle(worker, store, mid)

    status = await store.message_status(TENANT, mid)
    assert status is not None
    assert status.state is MessageState.DELIVERED
    assert status.attempts == 1
    assert status.provider_message_id == "prov-1"
    assert status.last_error == ""
    assert status.updated_at_ms >= status.accepted_at_ms
    [req] = fake.requests
    assert req.path == "/hook"
    assert req.headers["idempotency-key"] == mid
    ts = req.headers["x-consent-timestamp"]
    assert abs(int(ts) - time.time()) < 30
    assert verify(SECRET, ts, req.body, req.headers["x-consent-signature"])
    assert not verify(SECRET + "x", ts, req.body, req.headers["x-consent-signature"])
    assert not verify(SECRET, str(int(ts) + 1), req.body, req.headers["x-consent-signature"])
    body = req.json
    assert body["message_id"] == mid
    assert body["tenant_id"] == TENANT
    assert body["channel"] == "whatsapp"
    assert body["address"] == PHONE
    assert body["topic"] == "marketing"
    assert body["purpose"] == "send"
    assert body["message"] == {"kind": "text", "text": "Your order shipped"}
    assert body["metadata"] == {"campaign": "c1"}
    assert body["attempt"] == 1
    # Final messages leave the outbox; the status record is kept with a retention TTL.
    part = keys.message_partition(mid)
    assert part is not None
    assert await store.client.xlen(keys.outbox(part)) == 0
    assert (await store.client.xpending(keys.outbox(part), GROUP))["pending"] == 0
    ttl = await store.client.ttl(keys.message(TENANT, part, mid))
    assert 0 < ttl <= 30 * 24 * 3600


async def test_log_provider_is_the_default(
    store: RedisConsentStore, worker: DeliveryWorker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", "consent_server.delivery.log")
    mid = await send(store)
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.LOGGED
    assert status.provider_message_id == f"log-{mid}"
    [line] = [r for r in caplog.records if r.name == "consent_server.delivery.log"]
    assert line.to == "+91987*****10"  # type: ignore[attr-defined]
    assert PHONE not in line.getMessage()


@pytest.mark.parametrize(
    ("opt_out_topic", "message_topic", "expected"),
    [
        ("", "marketing", MessageState.CANCELLED),  # ALL covers every topic
        ("marketing", "marketing", MessageState.CANCELLED),
        ("marketing", "order_updates", MessageState.DELIVERED),  # another topic: still sent
    ],
)
async def test_opt_out_after_accept_cancels_before_the_provider(
    store: RedisConsentStore,
    worker: DeliveryWorker,
    fake: FakeProvider,
    opt_out_topic: str,
    message_topic: str,
    expected: MessageState,
) -> None:
    await use_webhook(store, fake.url)
    mid = await send(store, topic=message_topic)
    await change(store, Action.OPT_OUT, opt_out_topic)
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is expected
    if expected is MessageState.CANCELLED:
        assert fake.requests == []
        assert status.last_error.startswith("RECIPIENT_OPTED_OUT")
        assert status.attempts == 0
    else:
        assert len(fake.requests) == 1


async def test_opt_out_then_newer_opt_in_still_delivers(
    store: RedisConsentStore, worker: DeliveryWorker
) -> None:
    mid = await send(store)
    await change(store, Action.OPT_OUT)
    await change(store, Action.OPT_IN, "marketing")  # newer topic opt-in decides
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.LOGGED


async def test_transient_failures_retry_then_deliver(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    fake.answer((503, {"error": "busy"}), (502, {"error": "bad gateway"}))
    mid = await send(store)
    await worker.run_once()
    mid_way = await store.message_status(TENANT, mid)
    assert mid_way is not None
    assert mid_way.state is MessageState.ACCEPTED  # waiting to retry
    assert mid_way.attempts == 1
    assert "503" in mid_way.last_error
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None
    assert status.state is MessageState.DELIVERED
    assert status.attempts == 3
    assert len(fake.requests) == 3
    assert {r.headers["idempotency-key"] for r in fake.requests} == {mid}
    assert [r.json["attempt"] for r in fake.requests] == [1, 2, 3]


async def test_gives_up_after_max_attempts(
    store: RedisConsentStore, outbox: DeliveryRepository, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    fake.answer(*[(500, {"error": "down"})] * 5)
    w = make_worker(store, outbox, max_attempts=3)
    mid = await send(store)
    try:
        await settle(w, store, mid)
    finally:
        await w.stop(0)
    status = await store.message_status(TENANT, mid)
    assert status is not None
    assert status.state is MessageState.FAILED
    assert status.attempts == 3
    assert status.last_error.startswith("gave up after 3 attempts: webhook 500")
    assert len(fake.requests) == 3


async def test_permanent_failure_is_not_retried(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    # Only the provider's error class reaches last_error, never free text from the body.
    fake.answer((400, {"error": "invalid_template", "detail": "template x is unknown"}))
    mid = await send(store)
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None
    assert status.state is MessageState.FAILED
    assert status.last_error == "webhook 400: invalid_template"
    assert len(fake.requests) == 1


async def test_not_after_passed_expires(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    soon = time.time() + 0.3
    mid = await send(store, not_after=RawTimestamp(int(soon), int(soon % 1 * 1e9)))
    await asyncio.sleep(0.4)
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.EXPIRED
    assert fake.requests == []


async def test_retry_that_would_pass_not_after_expires(
    store: RedisConsentStore, outbox: DeliveryRepository, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    fake.answer((503, {}))
    w = make_worker(store, outbox, backoff_base_ms=5000.0, backoff_max_ms=5000.0)
    soon = time.time() + 2
    mid = await send(store, not_after=RawTimestamp(int(soon), 0))
    try:
        await settle(w, store, mid)
    finally:
        await w.stop(0)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.EXPIRED
    assert "503" in status.last_error


async def assert_provider_opt_out(store: RedisConsentStore, topic: str, scope_topic: str) -> None:
    check = await ConsentAuthority(store).check(TENANT, WA, topic)
    assert not check.decision.allowed
    assert check.decision.record is not None
    assert check.decision.record.source is Source.PROVIDER
    history = await ConsentAuthority(store).history(TENANT, WA, 10, "")
    newest = history.events[0]
    assert newest.source is Source.PROVIDER and newest.action is Action.OPT_OUT
    assert newest.topic == scope_topic and newest.applied
    assert newest.principal == "delivery-worker"
    with pytest.raises(SendBlocked):
        await send(store, topic=topic)


async def test_whatsapp_131050_opts_out_of_marketing(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    await use_whatsapp_cloud(store, fake.url + "/v21.0", "EAAG-token", "1234567890", "whatsapp")
    fake.answer(
        (
            400,
            {
                "error": {
                    "message": "(#131050) Unable to deliver the message.",
                    "type": "OAuthException",
                    "code": 131050,
                }
            },
        )
    )
    mid = await send(store, topic="marketing", text="50% off")
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.FAILED
    assert status.last_error.startswith("RECIPIENT_OPTED_OUT (provider)")
    assert "131050" in status.last_error
    [req] = fake.requests
    assert req.path == "/v21.0/1234567890/messages"
    assert req.headers["authorization"] == "Bearer EAAG-token"
    assert req.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": PHONE.lstrip("+"),
        "biz_opaque_callback_data": mid,
        "type": "text",
        "text": {"body": "50% off"},
    }
    await assert_provider_opt_out(store, "marketing", "marketing")
    # Only marketing: order updates still go out.
    check = await ConsentAuthority(store).check(TENANT, WA, "order_updates")
    assert check.decision.allowed


async def test_whatsapp_template_message_shape(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    await use_whatsapp_cloud(store, fake.url, "tok", "42")
    result = await ConsentAuthority(store).send(
        tenant_id=TENANT,
        recipient=WA,
        topic="order_updates",
        message=RawMessage(
            "template",
            template_name="order_shipped",
            template_language="en_US",
            template_parameters=("Asha", "#123"),
        ),
        idempotency_key="",
        not_after=None,
        metadata={},
    )
    mid = result.accepted.message_id
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.DELIVERED
    assert status.provider_message_id == "prov-1"
    [req] = fake.requests
    assert req.json["type"] == "template"
    assert req.json["template"] == {
        "name": "order_shipped",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Asha"}, {"type": "text", "text": "#123"}],
            }
        ],
    }


@pytest.mark.parametrize(
    "answer",
    [
        (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient"}),
        (409, {"error": "recipient_opted_out"}),
    ],
    ids=["21610", "recipient_opted_out"],
)
async def test_provider_opt_out_of_everything(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider, answer: tuple[int, object]
) -> None:
    await use_webhook(store, fake.url)
    fake.answer(answer)
    mid = await send(store, topic="order_updates")
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.FAILED
    assert status.last_error.startswith("RECIPIENT_OPTED_OUT (provider)")
    await assert_provider_opt_out(store, "order_updates", "")
    await assert_provider_opt_out(store, "marketing", "")


async def test_confirmation_is_exempt_from_the_recheck(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    send_id = await send(store)
    await change(store, Action.OPT_OUT, source=Source.KEYWORD)
    # The inbound flow queues the confirmation as docs/outbox.md describes.
    part = keys.partition(TENANT, ALICE)
    conf_id = keys.new_message_id(part)
    now = str(int(time.time() * 1000))
    await store.client.xadd(
        keys.outbox(part),
        {
            "id": conf_id,
            "tenant": TENANT,
            "ch": "whatsapp",
            "addr": PHONE,
            "topic": "",
            "body": json.dumps({"kind": "text", "text": "You will receive no further messages."}),
            "not_after": "0",
            "meta": "{}",
            "rev": "1",
            "at": now,
            "purpose": "confirmation",
        },
    )
    await settle(worker, store, send_id, conf_id)
    cancelled = await store.message_status(TENANT, send_id)
    assert cancelled is not None and cancelled.state is MessageState.CANCELLED
    confirmed = await store.message_status(TENANT, conf_id)
    assert confirmed is not None and confirmed.state is MessageState.DELIVERED
    [req] = fake.requests  # the confirmation, and nothing else
    assert req.json["message_id"] == conf_id
    assert req.json["purpose"] == "confirmation"
    assert req.json["message"]["text"] == "You will receive no further messages."


async def test_abandoned_message_is_reclaimed_and_delivered_once(
    store: RedisConsentStore, outbox: DeliveryRepository, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    mid = await send(store)
    await outbox.ensure_groups()
    # Worker A reads the entry and dies before handling it: it stays pending for A.
    [entry] = await outbox.read("worker-a", 10, None)
    assert entry.message_id == mid
    # A visibility timeout well above a loaded machine's pauses: "not idle long enough"
    # must not turn into "idle enough" between the read above and the first pass.
    b = make_worker(store, outbox, "worker-b", visibility_timeout_s=2.0)
    try:
        assert await b.run_once() == 0  # not idle long enough: A may still be working
        await asyncio.sleep(2.05)
        await settle(b, store, mid)
    finally:
        await b.stop(0)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.DELIVERED
    assert len(fake.requests) == 1
    # A, back from the dead, finishing its stale copy changes nothing.
    assert await outbox.finish(entry, "failed", error="late") == "stale"
    again = await store.message_status(TENANT, mid)
    assert again is not None and again.state is MessageState.DELIVERED


async def test_malformed_entry_is_dropped(
    store: RedisConsentStore, outbox: DeliveryRepository, worker: DeliveryWorker
) -> None:
    await outbox.ensure_groups()
    await store.client.xadd(keys.outbox(3), {"id": "garbage", "tenant": TENANT})
    assert await worker.run_once() == 1
    assert await store.client.xlen(keys.outbox(3)) == 0


async def test_background_worker_delivers_and_stops_cleanly(
    store: RedisConsentStore, outbox: DeliveryRepository, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    w = make_worker(store, outbox, block_ms=100)
    await w.start()
    try:
        ids = [await send(store, text=f"m{i}") for i in range(20)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = [await store.message_status(TENANT, i) for i in ids]
            if all(s is not None and s.state is MessageState.DELIVERED for s in states):
                break
            await asyncio.sleep(0.05)
    finally:
        await w.stop(5)
    assert sorted(r.json["message_id"] for r in fake.requests) == sorted(ids)


async def test_receipts_update_delivered_messages(
    store: RedisConsentStore, outbox: DeliveryRepository, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    await use_webhook(store, fake.url)
    mid = await send(store)
    await settle(worker, store, mid)
    by_pid = await outbox.apply_receipt(TENANT, ReceiptStatus.READ, provider_message_id="prov-1")
    assert by_pid == (ReceiptOutcome.APPLIED, mid)
    # "delivered" after "read" is older news.
    assert (await outbox.apply_receipt(TENANT, ReceiptStatus.DELIVERED, message_id=mid))[
        0
    ] is ReceiptOutcome.IGNORED
    # Unknown ids, other tenants' ids and junk are ignored safely.
    unknown = ReceiptOutcome.UNKNOWN, ""
    assert (
        await outbox.apply_receipt(TENANT, ReceiptStatus.READ, provider_message_id="nope")
        == unknown
    )
    assert (
        await outbox.apply_receipt("other", ReceiptStatus.READ, provider_message_id="prov-1")
        == unknown
    )
    assert await outbox.apply_receipt("other", ReceiptStatus.FAILED, message_id=mid) == unknown
    assert await outbox.apply_receipt(TENANT, ReceiptStatus.READ, message_id="../x") == unknown
    assert await outbox.apply_receipt(TENANT, ReceiptStatus.READ) == unknown
    failed = await outbox.apply_receipt(
        TENANT, ReceiptStatus.FAILED, message_id=mid, error="131026 undeliverable"
    )
    assert failed == (ReceiptOutcome.APPLIED, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.FAILED
    assert status.last_error == "131026 undeliverable"


async def test_receipt_for_undelivered_message_is_ignored(
    store: RedisConsentStore, outbox: DeliveryRepository
) -> None:
    mid = await send(store)
    outcome = await outbox.apply_receipt(TENANT, ReceiptStatus.FAILED, message_id=mid)
    assert outcome[0] is ReceiptOutcome.IGNORED
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.ACCEPTED


async def test_provider_configuration_keeps_secrets_write_only(store: RedisConsentStore) -> None:
    repo = RedisProviderSettings(store.client)
    admin = DeliveryAdmin(repo, LOOPBACK)
    set_ = await admin.set_provider(
        TENANT,
        RawProvider("sms", ProviderKind.WEBHOOK, url="https://hooks.example/sms", secret=SECRET),
    )
    assert SECRET not in repr(set_.config)
    # Updating the same destination without a secret keeps the stored one.
    await admin.set_provider(
        TENANT,
        RawProvider("sms", ProviderKind.WEBHOOK, url="https://hooks.example/sms", timeout_ms=900),
    )
    stored = (await repo.providers(TENANT))["sms"]
    assert stored.timeout_ms == 900 and stored.secret == SECRET
    # Pointing it elsewhere needs the secret again: a write-only secret must not be
    # redirected to a URL of the caller's choosing.
    with pytest.raises(InvalidArgument) as moved:
        await admin.set_provider(
            TENANT, RawProvider("sms", ProviderKind.WEBHOOK, url="https://attacker.example/x")
        )
    assert [v.field for v in moved.value.violations] == ["provider.webhook.signing_secret"]
    assert (await repo.providers(TENANT))["sms"].url == "https://hooks.example/sms"
    await admin.set_provider(
        TENANT,
        RawProvider("sms", ProviderKind.WEBHOOK, url="https://hooks.example/v2", secret=SECRET),
    )
    stored = (await repo.providers(TENANT))["sms"]
    assert stored.url == "https://hooks.example/v2" and stored.secret == SECRET
    # Switching kind needs the new kind's secret.
    with pytest.raises(InvalidArgument) as err:
        await admin.set_provider(
            TENANT, RawProvider("sms", ProviderKind.WHATSAPP_CLOUD, phone_number_id="1")
        )
    assert [v.field for v in err.value.violations] == ["provider.whatsapp_cloud.access_token"]


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        (RawProvider(None, ProviderKind.LOG), ["provider.channel"]),
        (RawProvider("sms", None), ["provider.config"]),
        (
            RawProvider("sms", ProviderKind.WEBHOOK, url="http://hooks.example/x", secret=SECRET),
            ["provider.webhook.url"],
        ),
        (
            RawProvider("sms", ProviderKind.WEBHOOK, url="ftp://x", secret="short"),
            ["provider.webhook.url", "provider.webhook.signing_secret"],
        ),
        (
            RawProvider(
                "sms",
                ProviderKind.WEBHOOK,
                url="https://u:p@h.example",
                secret=SECRET,
                timeout_ms=5,
            ),
            ["provider.webhook.url", "provider.webhook.timeout_ms"],
        ),
        (
            RawProvider("whatsapp", ProviderKind.WHATSAPP_CLOUD, phone_number_id="12a", secret="t"),
            ["provider.whatsapp_cloud.phone_number_id"],
        ),
    ],
)
async def test_bad_provider_configuration_writes_nothing(
    store: RedisConsentStore, raw: RawProvider, fields: list[str]
) -> None:
    repo = RedisProviderSettings(store.client)
    with pytest.raises(InvalidArgument) as err:
        await DeliveryAdmin(repo, LOOPBACK).set_provider(TENANT, raw)
    assert [v.field for v in err.value.violations] == fields
    assert await repo.providers(TENANT) == {}


def test_provider_config_round_trip() -> None:
    cfg = ProviderConfig(ProviderKind.WEBHOOK, url="https://x.example", secret="s" * 20)
    assert ProviderConfig.decode(cfg.encode()) == cfg
    assert "s" * 20 not in repr(cfg)


async def test_status_is_not_found_for_another_tenant(
    store: RedisConsentStore, worker: DeliveryWorker
) -> None:
    mid = await send(store)
    await settle(worker, store, mid)
    assert await store.message_status("other", mid) is None


def test_backoff_grows_and_is_capped() -> None:
    from consent_server.delivery.backoff import backoff_ms

    assert [backoff_ms(n, 100, 1000, lambda: 1.0) for n in (1, 2, 3, 4, 5, 6)] == [
        100,
        200,
        400,
        800,
        1000,
        1000,
    ]
    assert [backoff_ms(n, 100, 1000, lambda: 0.0) for n in (1, 2, 5)] == [50, 100, 500]


async def test_failed_receipt_with_opt_out_code_records_the_opt_out(
    store: RedisConsentStore, outbox: DeliveryRepository, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    from consent_server.delivery.feedback import provider_feedback
    from consent_server.delivery.receipts import apply_receipt

    feedback = provider_feedback(store)
    await use_webhook(store, fake.url)
    mid = await send(store, topic="marketing")
    await settle(worker, store, mid)
    # An unknown provider id: nothing happens, nothing is recorded.
    assert (
        await apply_receipt(
            outbox,
            feedback,
            TENANT,
            ReceiptStatus.FAILED,
            provider_message_id="x",
            error_code=131050,
        )
        is ReceiptOutcome.UNKNOWN
    )
    assert (await ConsentAuthority(store).check(TENANT, WA, "marketing")).decision.allowed
    for _ in range(2):  # a re-sent receipt changes nothing more
        await apply_receipt(
            outbox,
            feedback,
            TENANT,
            ReceiptStatus.FAILED,
            provider_message_id="prov-1",
            error_code=131050,
            provider="whatsapp_cloud",
        )
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.FAILED
    assert status.last_error == "whatsapp_cloud receipt: error 131050"
    history = await ConsentAuthority(store).history(TENANT, WA, 10, "")
    provider_events = [e for e in history.events if e.source is Source.PROVIDER]
    assert len(provider_events) == 1 and provider_events[0].topic == "marketing"
    assert not (await ConsentAuthority(store).check(TENANT, WA, "marketing")).decision.allowed
    assert (await ConsentAuthority(store).check(TENANT, WA, "order_updates")).decision.allowed


async def test_clean_stop_leaves_no_consumer_behind(
    store: RedisConsentStore, outbox: DeliveryRepository
) -> None:
    w = make_worker(store, outbox, "short-lived", block_ms=50)
    await w.start()
    try:
        mid = await send(store)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = await store.message_status(TENANT, mid)
            if status is not None and status.state is MessageState.DELIVERED:
                break
            await asyncio.sleep(0.02)
    finally:
        await w.stop(1)
    # A consumer still holding an entry is kept: its entry must stay reclaimable.
    mid2 = await send(store)
    [held] = await outbox.read("holder", 10, None)
    assert held.message_id == mid2
    await outbox.retire("holder")
    names: set[str] = set()
    for p in range(keys.PARTITIONS):
        for c in await store.client.xinfo_consumers(keys.outbox(p), GROUP):
            name = c["name"]
            names.add(name.decode() if isinstance(name, bytes) else name)
    assert "short-lived" not in names
    assert "holder" in names


async def test_store_error_mid_delivery_leaves_the_message_for_a_reclaim(
    store: RedisConsentStore, outbox: DeliveryRepository, worker: DeliveryWorker
) -> None:
    import redis.asyncio as aioredis

    mid = await send(store)
    await outbox.ensure_groups()
    [entry] = await outbox.read("flaky", 10, None)
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # Nothing listens on port 1; no client-side retries, to keep the test fast.
    dead = aioredis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    flaky = DeliveryWorker(
        RedisConsentStore(dead),
        DeliveryRepository(dead),
        WorkerOptions(),
        providers=RedisProviderSettings(dead),
    )
    try:
        await flaky.handle(entry)  # StoreUnavailable: logged, not raised, nothing recorded
    finally:
        await flaky.stop(0)
        await dead.aclose()
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.ACCEPTED
    await asyncio.sleep(0.35)  # the visibility timeout of the healthy worker
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.LOGGED


T0 = 1_790_000_000_000
IN, OUT = Action.OPT_IN, Action.OPT_OUT


@pytest.mark.parametrize(
    "events",
    [
        [],
        [("", OUT, T0)],
        [("marketing", OUT, T0)],
        [("order_updates", OUT, T0)],
        [("", OUT, T0), ("marketing", IN, T0 + 1)],
        [("marketing", IN, T0 + 1), ("", OUT, T0)],  # arrives late, still older
        [("", OUT, T0 + 5), ("marketing", IN, T0)],
        [("", IN, T0), ("marketing", OUT, T0)],  # same instant: the higher revision wins
        [("marketing", OUT, T0), ("", IN, T0)],
        [("", OUT, T0), ("", IN, T0 + 1)],
    ],
)
async def test_claim_script_agrees_with_the_decision_rule(
    store: RedisConsentStore,
    outbox: DeliveryRepository,
    worker: DeliveryWorker,
    events: list[tuple[str, Action, int]],
) -> None:
    """claim.lua re-implements the decision rule (atomic with the claim): same answers."""
    mid = await send(store, topic="marketing")
    for n, (topic, action, at) in enumerate(events):
        await store.record_event(
            consent_event(
                TENANT, ALICE, event_id=f"ev{n}", action=action, topic=topic, occurred_at_ms=at
            )
        )
    expected = (await ConsentAuthority(store).check(TENANT, WA, "marketing")).decision
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None
    assert status.state is (MessageState.LOGGED if expected.allowed else MessageState.CANCELLED)


async def test_policy_now_requiring_opt_in_cancels_with_opt_in_required(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    from consent_server.domain.model import Policy, TenantSettings

    await use_webhook(store, fake.url)
    mid = await send(store, topic="marketing")
    await store.put_tenant_settings(
        TENANT, TenantSettings(topic_policies={"marketing": Policy.REQUIRE_OPT_IN})
    )
    await settle(worker, store, mid)
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.CANCELLED
    assert status.last_error.startswith("OPT_IN_REQUIRED")
    assert fake.requests == []


async def test_erasure_removes_a_message_parked_for_retry(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    """A message waiting for a delivery retry keeps a copy of its fields (with the
    address) in the partition's retry queue: ForgetRecipient removes it, and the
    message is never handed to the provider again."""
    from consent_server.store.security import RedisSecurityStore

    await use_webhook(store, fake.url)
    fake.answer((503, {"error": "busy"}))
    mid = await send(store)
    await worker.run_once()
    part = keys.partition(TENANT, ALICE)
    r = store.client
    assert await r.zscore(keys.retry_queue(part), mid) is not None  # parked for a retry
    assert PHONE in (await r.hget(keys.retry_data(part), mid)).decode()

    counts = await RedisSecurityStore(store.client, store.tombstones).forget(
        TENANT, ALICE, "erasure-1", "test"
    )
    assert counts.messages_cancelled == 1
    assert await r.zscore(keys.retry_queue(part), mid) is None
    assert await r.hget(keys.retry_data(part), mid) is None
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.CANCELLED
    for _ in range(5):  # whatever the worker still finds, nothing reaches the provider
        await worker.run_once()
        await asyncio.sleep(0.05)
    assert len(fake.requests) == 1


async def test_whatsapp_status_webhooks_update_message_status(
    store: RedisConsentStore, outbox: DeliveryRepository, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    """The HTTP edge hands WhatsApp `statuses` to whatsapp_status_handler: `sent` says
    nothing new, `failed` turns a delivered message FAILED with the error codes. The
    opt-out a 131050 means is recorded by the edge itself, not a second time here."""
    from consent_server.delivery.feedback import provider_feedback
    from consent_server.delivery.receipts import whatsapp_status_handler
    from consent_server.domain.whatsapp import StatusReceipt

    await use_webhook(store, fake.url)
    mid = await send(store)
    await settle(worker, store, mid)
    handle = whatsapp_status_handler(outbox, provider_feedback(store))
    await handle(StatusReceipt(TENANT, "prov-1", "sent", ALICE, None))
    sent = await store.message_status(TENANT, mid)
    assert sent is not None and sent.state is MessageState.DELIVERED
    await handle(StatusReceipt(TENANT, "prov-1", "failed", ALICE, None, (131050,)))
    failed = await store.message_status(TENANT, mid)
    assert failed is not None and failed.state is MessageState.FAILED
    assert "error 131050" in failed.last_error
    history = await ConsentAuthority(store).history(TENANT, WA, 0, "")
    assert history.events == []
    # Another tenant's receipt for the same provider id changes nothing.
    await handle(StatusReceipt("other", "prov-1", "delivered", ALICE, None))


async def test_message_missed_by_the_erasure_scans_is_still_fenced(
    store: RedisConsentStore, worker: DeliveryWorker, fake: FakeProvider
) -> None:
    """ForgetRecipient's scans run before its script; a message accepted in between is
    not among them. The script reads the recipient's message index itself, so it is
    cancelled there, address removed; the claim's erasure fence is the second line."""
    from consent_server.store.security import RedisSecurityStore

    await use_webhook(store, fake.url)
    mid = await send(store)  # accepted: no opt-out yet
    await change(store, Action.OPT_OUT)  # acknowledged while the erasure is under way
    security = RedisSecurityStore(store.client, store.tombstones)

    async def nothing_found(*_args: object) -> list[str]:
        return []  # the erasure's scans ran before the send: they saw no message

    security._messages_of = nothing_found  # type: ignore[method-assign]
    security._outbox_entries = nothing_found  # type: ignore[method-assign]
    counts = await security.forget(TENANT, ALICE, "erasure-race", "test")
    assert counts.suppressed_topics == [""] and counts.messages_cancelled == 1
    await worker.run_once()
    status = await store.message_status(TENANT, mid)
    assert status is not None and status.state is MessageState.CANCELLED
    assert status.last_error == "erased" and status.recipient.address == ""
    assert fake.requests == []
