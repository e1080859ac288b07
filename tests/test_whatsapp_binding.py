"""WhatsApp notifications bind to the tenant that owns the phone number, claims about
messages a tenant never sent change nothing, and what cannot be applied is kept as a
dead letter an operator can replay: the use case on fakeredis and a real redis-server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from consent_server.delivery.feedback import provider_feedback
from consent_server.delivery.receipts import whatsapp_status_handler
from consent_server.domain.errors import InvalidArgument, NotFound, StoreUnavailable
from consent_server.domain.model import Channel, MessageState, Recipient, Source
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawMessage, RawRecipient
from consent_server.domain.whatsapp import sign
from consent_server.domain.whatsapp_edge import (
    PhoneNumberTaken,
    WebhookNotBound,
    WebhookNotConfigured,
    WebhookSignatureInvalid,
    WhatsAppEdge,
    WhatsAppWebhookConfig,
    inbound_use_case,
)
from consent_server.http.wiring import whatsapp_edge
from consent_server.store import keys
from consent_server.store.edge import RedisEdgeStore
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.repository import RedisConsentStore

ACME_NUMBER = "106540352242922"
GLOBEX_NUMBER = "207651463353033"
SHARED_SECRET = "one-meta-app-secret"
WA_ID = "16505551234"
RCPT = RawRecipient(Channel.WHATSAPP, "+" + WA_ID)


class Counts:
    """An EdgeObserver that remembers the counts."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}
        self.evictions = 0

    def unapplied(self, reason: str, count: int) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + count

    def evicted(self, count: int) -> None:
        self.evictions += count


def notification(*changes: dict[str, Any]) -> bytes:
    return json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": list(changes)}]}
    ).encode()


def messages(number: str | None, *msgs: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp", "messages": list(msgs)}
    if number is not None:
        value["metadata"] = {"display_phone_number": "15550783881", "phone_number_id": number}
    return {"field": "messages", "value": value}


def text(body: str, wamid: str, ts: int = 1749416383, sender: str = WA_ID) -> dict[str, Any]:
    return {
        "from": sender,
        "id": wamid,
        "timestamp": str(ts),
        "type": "text",
        "text": {"body": body},
    }


def failed_131050(number: str, wamid: str) -> dict[str, Any]:
    status = {
        "id": wamid,
        "status": "failed",
        "timestamp": "1749416500",
        "recipient_id": WA_ID,
        "errors": [{"code": 131050, "title": "User stopped marketing messages"}],
    }
    return {
        "field": "messages",
        "value": {"metadata": {"phone_number_id": number}, "statuses": [status]},
    }


class World:
    """Two tenants on one store, sharing one Meta app secret (the dangerous setup)."""

    def __init__(self, store: RedisConsentStore) -> None:
        self.store = store
        self.authority = ConsentAuthority(store)
        self.edge_store = RedisEdgeStore(store)
        self.outbox = DeliveryRepository(store.client)
        self.counts = Counts()
        self.edge = WhatsAppEdge(
            self.authority,
            self.edge_store,
            inbound_use_case(self.authority),
            whatsapp_status_handler(self.outbox, provider_feedback(store)),
            observer=self.counts,
            dead_letter_limit=5,
        )

    async def configure(self) -> World:
        await self.edge_store.set_whatsapp_webhook(
            "acme", WhatsAppWebhookConfig("vt-acme", SHARED_SECRET, (ACME_NUMBER,))
        )
        await self.edge_store.set_whatsapp_webhook(
            "globex", WhatsAppWebhookConfig("vt-globex", SHARED_SECRET, (GLOBEX_NUMBER,))
        )
        return self

    async def allowed(self, tenant: str, topic: str = "marketing") -> bool:
        return (await self.authority.check(tenant, RCPT, topic)).decision.allowed

    async def events(self, tenant: str) -> list[Any]:
        return (await self.authority.history(tenant, RCPT, 0, "")).events

    async def sent(self, tenant: str, wamid: str) -> str:
        result = await self.authority.send(
            tenant_id=tenant,
            recipient=RCPT,
            topic="orders",
            message=RawMessage("text", text="Your order shipped"),
            idempotency_key="",
            not_after=None,
            metadata={},
        )
        mid = result.accepted.message_id
        # As the delivery worker leaves it once the provider accepted the message.
        part = keys.message_partition(mid)
        assert part is not None
        await self.store.client.hset(keys.message(tenant, part, mid), "st", "delivered")
        await self.store.client.set(keys.provider_message(tenant, wamid), mid)
        return mid


@pytest.fixture
async def world(store: RedisConsentStore) -> World:
    return await World(store).configure()


async def test_an_entry_for_another_tenants_number_changes_nothing(world: World) -> None:
    body = notification(messages(GLOBEX_NUMBER, text("STOP", "wamid.g1")))
    # Signed with the shared secret and posted to acme's URL: refused, nothing written.
    with pytest.raises(WebhookNotBound):
        await world.edge.receive("acme", body, sign(SHARED_SECRET, body))
    assert await world.allowed("acme") and await world.allowed("globex")
    assert await world.events("acme") == [] and await world.events("globex") == []
    assert world.counts.reasons == {"foreign_number": 1}
    assert (await world.edge.list_unapplied("acme", 0, "")).items == []  # not stored

    mixed = notification(
        messages(GLOBEX_NUMBER, text("STOP", "wamid.g2")),
        messages(ACME_NUMBER, text("STOP", "wamid.a1")),
    )
    report = await world.edge.receive("acme", mixed, sign(SHARED_SECRET, mixed))
    assert (report.replies, report.not_bound) == (1, 1)
    assert not await world.allowed("acme") and await world.allowed("globex")


async def test_an_entry_without_a_phone_number_id_is_kept_not_applied(world: World) -> None:
    body = notification(messages(None, text("STOP", "wamid.nometa")))
    report = await world.edge.receive("acme", body, sign(SHARED_SECRET, body))
    assert report.kept == 1 and await world.allowed("acme")
    [item] = (await world.edge.list_unapplied("acme", 0, "")).items
    assert item.reason == "unbound"
    # The operator knows it is acme's: replaying it applies it.
    assert (await world.edge.replay("acme", item.id)).applied
    assert not await world.allowed("acme")


async def test_a_131050_for_a_message_the_tenant_never_sent_changes_nothing(
    world: World,
) -> None:
    globex_mid = await world.sent("globex", "wamid.globex-sent")
    # acme (holding the shared secret) claims globex's message failed with 131050.
    for wamid in ("wamid.globex-sent", "wamid.never-sent"):
        body = notification(failed_131050(ACME_NUMBER, wamid))
        report = await world.edge.receive("acme", body, sign(SHARED_SECRET, body))
        assert report.kept == 1
    assert await world.allowed("acme") and await world.allowed("globex")
    assert await world.events("acme") == []
    info = await world.store.message_status("globex", globex_mid)
    assert info is not None and info.state is MessageState.DELIVERED  # not marked failed
    items = (await world.edge.list_unapplied("acme", 0, "")).items
    assert {i.reason for i in items} == {"unknown_message"}
    assert world.counts.reasons == {"unknown_message": 2}

    # An operator who knows the message was acme's (sent outside this service) vouches.
    replayed = await world.edge.replay("acme", items[0].id)
    assert replayed.applied and not await world.allowed("acme")
    [event] = await world.events("acme")
    assert event.source is Source.PROVIDER and event.principal == "whatsapp-webhook-replay"
    assert len((await world.edge.list_unapplied("acme", 0, "")).items) == 1


async def test_a_131050_for_the_tenants_own_message_opts_its_recipient_out(
    world: World,
) -> None:
    mid = await world.sent("acme", "wamid.acme-sent")
    body = notification(failed_131050(ACME_NUMBER, "wamid.acme-sent"))
    report = await world.edge.receive("acme", body, sign(SHARED_SECRET, body))
    assert (report.changes, report.kept) == (1, 0)
    assert not await world.allowed("acme") and await world.allowed("acme", "orders") is True
    info = await world.store.message_status("acme", mid)
    assert info is not None and info.state is MessageState.FAILED


async def test_a_phone_number_belongs_to_one_tenant(world: World) -> None:
    with pytest.raises(PhoneNumberTaken) as err:
        await world.edge_store.set_whatsapp_webhook(
            "globex", WhatsAppWebhookConfig("vt", "s", ("555", ACME_NUMBER))
        )
    assert err.value.index == 1
    # Nothing changed: globex keeps its number, "555" was not left claimed.
    config = await world.edge_store.whatsapp_webhook("globex")
    assert config is not None and config.phone_number_ids == (GLOBEX_NUMBER,)
    assert await world.edge_store.tenant_for_phone_number("555") is None
    assert await world.edge_store.tenant_for_phone_number(ACME_NUMBER) == "acme"
    # acme moves to another number: the old one is free for globex.
    await world.edge_store.set_whatsapp_webhook(
        "acme", WhatsAppWebhookConfig("vt-acme", SHARED_SECRET, ("777",))
    )
    await world.edge_store.set_whatsapp_webhook(
        "globex", WhatsAppWebhookConfig("vt-globex", SHARED_SECRET, (GLOBEX_NUMBER, ACME_NUMBER))
    )
    assert await world.edge_store.tenant_for_phone_number(ACME_NUMBER) == "globex"
    assert await world.edge_store.delete_whatsapp_webhook("globex")
    assert await world.edge_store.tenant_for_phone_number(GLOBEX_NUMBER) is None


async def test_the_app_level_url_routes_each_entry_by_phone_number(world: World) -> None:
    body = notification(
        messages(ACME_NUMBER, text("STOP", "wamid.app-a")),
        messages(
            GLOBEX_NUMBER, text("START", "wamid.app-g"), text("STOP PROMOTIONS", "wamid.app-g2")
        ),
        messages("999999", text("STOP", "wamid.app-x")),
    )
    report = await world.edge.receive_app(body, sign(SHARED_SECRET, body))
    assert (report.replies, report.not_bound) == (3, 1)
    assert not await world.allowed("acme", "orders")
    assert await world.allowed("globex", "orders") and not await world.allowed("globex")
    assert world.counts.reasons == {"unrouted": 1}
    assert [e.principal for e in await world.events("acme")] == ["whatsapp-webhook"]

    with pytest.raises(WebhookSignatureInvalid):
        await world.edge.receive_app(body, sign("not-the-secret", body))
    lost = notification(messages("999999", text("STOP", "wamid.app-y")))
    with pytest.raises(WebhookNotConfigured):  # not 2xx: Meta redelivers once registered
        await world.edge.receive_app(lost, sign(SHARED_SECRET, lost))
    assert await world.edge.app_handshake("subscribe", "vt-globex", "42") == "42"


async def test_the_app_level_url_checks_each_owners_secret(store: RedisConsentStore) -> None:
    w = World(store)
    await w.edge_store.set_whatsapp_webhook(
        "acme", WhatsAppWebhookConfig("vt-a", "acme-secret", (ACME_NUMBER,))
    )
    await w.edge_store.set_whatsapp_webhook(
        "globex", WhatsAppWebhookConfig("vt-g", "globex-secret", (GLOBEX_NUMBER,))
    )
    # Signed by acme's secret, with an entry for globex's number: only acme's applies.
    body = notification(
        messages(ACME_NUMBER, text("STOP", "wamid.s-a")),
        messages(GLOBEX_NUMBER, text("STOP", "wamid.s-g")),
    )
    report = await w.edge.receive_app(body, sign("acme-secret", body))
    assert report.not_bound == 1
    assert not await w.allowed("acme") and await w.allowed("globex")
    assert w.counts.reasons == {"bad_signature": 1}


async def test_dead_letters_are_kept_once_bounded_and_replayable(world: World) -> None:
    def broken(i: int) -> dict[str, Any]:
        return {
            "from": "not a number",
            "id": f"wamid.bad{i}",
            "type": "text",
            "text": {"body": "STOP"},
        }

    body = notification(messages(ACME_NUMBER, *[broken(i) for i in range(3)]))
    await world.edge.receive("acme", body, sign(SHARED_SECRET, body))
    await world.edge.receive("acme", body, sign(SHARED_SECRET, body))  # redelivered
    page = await world.edge.list_unapplied("acme", 2, "")
    assert page.total == 3 and len(page.items) == 2 and page.next_page_token
    rest = await world.edge.list_unapplied("acme", 2, page.next_page_token)
    assert len(rest.items) == 1 and not rest.next_page_token
    assert world.counts.reasons == {"malformed": 6}
    more = notification(messages(ACME_NUMBER, *[broken(i) for i in range(10, 14)]))
    await world.edge.receive("acme", more, sign(SHARED_SECRET, more))
    assert (await world.edge.list_unapplied("acme", 0, "")).total == 5  # the bound
    assert world.counts.evictions == 2
    assert (await world.edge.list_unapplied("globex", 0, "")).total == 0  # per tenant

    item = (await world.edge.list_unapplied("acme", 1, "")).items[0]
    again = await world.edge.replay("acme", item.id)  # still not a number: kept
    assert not again.applied and again.item.attempts == 1
    stored = await world.edge_store.dead_letter("acme", item.id)
    assert stored is not None and stored.attempts == 1 and stored.reason == "malformed"


async def test_replay_discard_and_their_errors(world: World) -> None:
    calls: list[object] = []

    async def flaky(reply: object) -> None:
        calls.append(reply)
        if len(calls) == 1:
            raise RuntimeError("a bug in a handler")
        await inbound_use_case(world.authority)(reply)  # type: ignore[arg-type]

    edge = WhatsAppEdge(
        world.authority,
        world.edge_store,
        flaky,
        whatsapp_status_handler(world.outbox, provider_feedback(world.store)),
    )
    body = notification(messages(ACME_NUMBER, text("STOP", "wamid.flaky")))
    report = await edge.receive("acme", body, sign(SHARED_SECRET, body))
    assert (report.failed, report.kept) == (1, 1) and await world.allowed("acme")
    [item] = (await edge.list_unapplied("acme", 0, "")).items
    assert item.reason == "failed" and "wamid.flaky" in item.raw
    assert (await edge.replay("acme", item.id)).applied
    assert not await world.allowed("acme")
    assert (await edge.list_unapplied("acme", 0, "")).items == []
    with pytest.raises(NotFound):
        await edge.replay("acme", item.id)
    with pytest.raises(NotFound):
        await edge.discard("globex", item.id)
    with pytest.raises(InvalidArgument):
        await edge.list_unapplied("acme", 1000, "nope")

    senderless = notification(messages(ACME_NUMBER, {"type": "text", "text": {"body": "STOP"}}))
    await edge.receive("acme", senderless, sign(SHARED_SECRET, senderless))
    [kept] = (await edge.list_unapplied("acme", 0, "")).items
    assert await edge.discard("acme", kept.id)
    assert (await edge.list_unapplied("acme", 0, "")).total == 0


async def test_a_store_outage_is_raised_so_meta_redelivers(world: World) -> None:
    async def down(reply: object) -> None:
        raise StoreUnavailable("down")

    edge = WhatsAppEdge(world.authority, world.edge_store, down, world.edge._on_status)
    body = notification(messages(ACME_NUMBER, text("STOP", "wamid.down")))
    with pytest.raises(StoreUnavailable):
        await edge.receive("acme", body, sign(SHARED_SECRET, body))


async def test_unapplied_items_are_counted_in_prometheus(store: RedisConsentStore) -> None:
    w = World(store)
    await w.configure()
    edge = whatsapp_edge(w.authority, w.edge_store)

    def sample(reason: str) -> float:
        value = REGISTRY.get_sample_value("consent_whatsapp_unapplied_total", {"reason": reason})
        return value or 0.0

    before = (sample("foreign_number"), sample("malformed"))
    body = notification(
        messages(GLOBEX_NUMBER, text("STOP", "wamid.m1")),
        messages(ACME_NUMBER, {"from": "nope", "id": "wamid.m2", "type": "text"}),
    )
    await edge.receive("acme", body, sign(SHARED_SECRET, body))
    assert (sample("foreign_number"), sample("malformed")) == (before[0] + 1, before[1] + 1)


async def test_erasure_can_remove_the_dead_letters_that_name_a_recipient(world: World) -> None:
    other = "16505559876"
    body = notification(
        messages(
            ACME_NUMBER,
            {"from": WA_ID, "id": "wamid.e1", "type": "unsupported"},
            {"from": other, "id": "wamid.e2", "type": "unsupported"},
        )
    )
    await world.edge.receive("acme", body, sign(SHARED_SECRET, body))
    assert (await world.edge.list_unapplied("acme", 0, "")).total == 2
    removed = await world.edge_store.forget_dead_letters(
        Recipient(Channel.WHATSAPP, "+" + WA_ID), "acme"
    )
    assert removed == 1
    [left] = (await world.edge.list_unapplied("acme", 0, "")).items
    assert other in left.raw and WA_ID not in left.raw


async def test_a_tapped_button_is_never_read_as_typed_text(world: World) -> None:
    """Meta's sample appointment template: a quick reply titled "Cancel". Whatever its
    payload (an unknown one, or none at all), the tap opts nobody out."""
    for i, payload in enumerate(("CANCEL_APPOINTMENT", "")):
        tap = {
            "from": WA_ID,
            "id": f"wamid.tap{i}",
            "timestamp": "1749416390",
            "type": "button",
            "button": {"payload": payload, "text": "Cancel"},
        }
        body = notification(messages(ACME_NUMBER, tap))
        report = await world.edge.receive("acme", body, sign(SHARED_SECRET, body))
        assert (report.replies, report.kept) == (1, 0)
        listed = {
            "from": WA_ID,
            "id": f"wamid.list{i}",
            "type": "interactive",
            "interactive": {"type": "list_reply", "list_reply": {"id": payload, "title": "STOP"}},
        }
        body = notification(messages(ACME_NUMBER, listed))
        await world.edge.receive("acme", body, sign(SHARED_SECRET, body))
    assert await world.allowed("acme") and await world.events("acme") == []
    # The configured payload acts, whatever the title says.
    tap = {
        "from": WA_ID,
        "id": "wamid.tap-ok",
        "type": "button",
        "button": {"payload": "STOP_PROMOTIONS", "text": "Not now"},
    }
    body = notification(messages(ACME_NUMBER, tap))
    await world.edge.receive("acme", body, sign(SHARED_SECRET, body))
    assert not await world.allowed("acme") and await world.allowed("acme", "orders")
    [event] = await world.events("acme")
    assert event.source is Source.BUTTON
