"""The HTTP edge's domain: link tokens, WhatsApp translation, and both use cases on
the real repository (fakeredis and a real redis-server)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_server.domain.errors import InvalidArgument, NotConfigured, StoreUnavailable
from consent_server.domain.links import (
    LinkClaims,
    LinkCodec,
    LinkExpired,
    LinkInvalid,
    fill_resubscribe_url,
    link_event_id,
)
from consent_server.domain.links_service import ConsentLinks, static_keyring, stored_keyring
from consent_server.domain.model import Action, Channel, Recipient, Source, Status
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawRecipient
from consent_server.domain.whatsapp import (
    InboundReply,
    StatusReceipt,
    WebhookMalformed,
    parse_webhook,
    sign,
    timestamp_ms,
    verify_signature,
)
from consent_server.domain.whatsapp_edge import (
    WebhookBadRequest,
    WebhookNotConfigured,
    WebhookRefused,
    WebhookSignatureInvalid,
    WebhookVerificationFailed,
    WhatsAppEdge,
    WhatsAppWebhookConfig,
    validate_webhook_config,
)
from consent_server.store import keys
from consent_server.store.edge import RedisEdgeStore
from consent_server.store.repository import RedisConsentStore

from .support import send_text

FIXTURES = Path(__file__).parent / "fixtures" / "whatsapp"
SECRET = b"s" * 40
OTHER_SECRET = b"o" * 40
EMAIL = Recipient(Channel.EMAIL, "jane.doe@example.com")
WA = "+16505551234"
PHONE_NUMBER_ID = "106540352242922"  # the fixtures' metadata.phone_number_id


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def claims(**over: object) -> LinkClaims:
    base: dict[str, object] = {
        "tenant_id": "acme",
        "recipient": EMAIL,
        "topic": "marketing",
        "action": Action.OPT_OUT,
        "issued_at_s": 1_900_000_000,
        "expires_at_s": 1_900_086_400,
        "token_id": "lk_0123456789abcdef01234567",
    }
    base.update(over)
    return LinkClaims(**base)  # type: ignore[arg-type]


def codec_at(now: float, *secrets: bytes) -> LinkCodec:
    return LinkCodec(list(secrets or [SECRET]), clock_s=lambda: now)


# -- link tokens ---------------------------------------------------------------------------


def test_token_round_trip_and_hides_the_address() -> None:
    c = codec_at(1_900_000_100)
    token = c.mint(claims())
    assert c.open(token) == claims()
    assert "=" not in token and "/" not in token and "+" not in token
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for visible in (b"jane", b"example.com", b"acme", b"marketing", b"lk_"):
        assert visible not in raw and visible not in token.encode()


def test_expired_token_is_refused() -> None:
    token = codec_at(1_900_000_000).mint(claims())
    assert codec_at(1_900_086_400).open(token).token_id  # last second still valid
    with pytest.raises(LinkExpired):
        codec_at(1_900_086_401).open(token)


def test_token_from_another_secret_is_refused_and_rotation_works() -> None:
    token = codec_at(1_900_000_100, OTHER_SECRET).mint(claims())
    with pytest.raises(LinkInvalid):
        codec_at(1_900_000_100, SECRET).open(token)
    # Rotation: the new secret first, the old one still verifies.
    assert codec_at(1_900_000_100, SECRET, OTHER_SECRET).open(token) == claims()


def test_token_issued_in_the_future_is_refused() -> None:
    token = codec_at(1_900_000_000).mint(claims(issued_at_s=1_900_001_000))
    with pytest.raises(LinkInvalid):
        codec_at(1_900_000_000).open(token)


@pytest.mark.parametrize("bad", ["", "abc", "x" * 3000, "not a token at all!", "%2F" * 20])
def test_garbage_is_refused(bad: str) -> None:
    with pytest.raises(LinkInvalid):
        codec_at(1_900_000_100).open(bad)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        LinkCodec([b"short"])


_TOKEN = codec_at(1_900_000_000).mint(claims())
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=300, deadline=None)
@given(
    pos=st.integers(min_value=0, max_value=len(_TOKEN) - 1),
    char=st.sampled_from(_ALPHABET),
)
def test_any_single_character_change_is_refused(pos: int, char: str) -> None:
    tampered = _TOKEN[:pos] + char + _TOKEN[pos + 1 :]
    c = codec_at(1_900_000_100)
    if tampered == _TOKEN:
        assert c.open(tampered) == claims()
        return
    try:
        opened = c.open(tampered)
    except LinkInvalid:
        return
    # The last base64 character carries 2-4 padding bits that the decoder may
    # ignore: such a change decodes to the very same bytes and the same claims.
    assert base64.urlsafe_b64decode(tampered + "=" * (-len(tampered) % 4)) == (
        base64.urlsafe_b64decode(_TOKEN + "=" * (-len(_TOKEN) % 4))
    )
    assert opened == claims()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_byte_level_tampering_is_refused(data: st.DataObject) -> None:
    raw = bytearray(base64.urlsafe_b64decode(_TOKEN + "=" * (-len(_TOKEN) % 4)))
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=40))
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(LinkInvalid):
        codec_at(1_900_000_100).open(tampered)


def test_link_event_ids() -> None:
    assert link_event_id("lk_a", "00" * 8) == link_event_id("lk_a", "00" * 8)
    assert link_event_id("lk_a", "00" * 8) != link_event_id("lk_a", "11" * 8)
    assert link_event_id("lk_a") == "lk_a.oneclick"
    assert len(link_event_id("lk_" + "f" * 24, "a" * 64)) <= 128


def test_fill_resubscribe_url_only_touches_its_placeholder() -> None:
    text = "Hi {name}, you are out. Back in: {resubscribe_url} (or reply START)"
    out = fill_resubscribe_url(text, "https://c.example/s/TOKEN")
    assert out == "Hi {name}, you are out. Back in: https://c.example/s/TOKEN (or reply START)"


# -- WhatsApp translation --------------------------------------------------------------------


def test_signature() -> None:
    body = fixture("text_stop.json")
    header = sign("app-secret", body)
    assert verify_signature("app-secret", body, header)
    assert verify_signature("app-secret", body, header.upper().replace("SHA256=", "sha256="))
    assert not verify_signature("other", body, header)
    assert not verify_signature("app-secret", body + b" ", header)
    assert not verify_signature("app-secret", body, None)
    assert not verify_signature("app-secret", body, "")
    assert not verify_signature("app-secret", body, header.removeprefix("sha256="))
    assert not verify_signature("app-secret", body, "sha1=" + header[7:])
    assert not verify_signature("", body, sign("", body))


def test_timestamps_as_strings_or_integers() -> None:
    assert timestamp_ms("1749416383") == timestamp_ms(1749416383) == 1749416383000
    for bad in (None, "", "12a", True, 1.5, -1, "0", [], "9" * 20):
        assert timestamp_ms(bad) is None


def test_text_button_and_interactive_replies() -> None:
    text = parse_webhook("acme", fixture("text_stop.json"))
    assert text.replies == [
        InboundReply(
            "acme",
            Recipient(Channel.WHATSAPP, WA),
            "STOP",
            "",
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            1749416383000,
            PHONE_NUMBER_ID,
            "entry[0].changes[0].messages[0]",
        )
    ]
    assert not text.changes and not text.statuses
    button = parse_webhook("acme", fixture("button_unsubscribe.json")).replies[0]
    assert (button.button_payload, button.text, button.received_at_ms) == (
        "UNSUBSCRIBE",
        "Stop promotions",
        1749416390000,
    )
    inter = parse_webhook("acme", fixture("interactive_button_reply.json")).replies[0]
    assert (inter.button_payload, inter.text) == ("opt_out_all", "Unsubscribe")


def test_status_131050_is_a_marketing_opt_out_and_a_receipt() -> None:
    batch = parse_webhook("acme", fixture("status_failed_131050.json"))
    wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI4NjA1NkQ3RTY0QzQ1NkNERjYA"
    assert batch.statuses == [
        StatusReceipt(
            "acme",
            wamid,
            "failed",
            Recipient(Channel.WHATSAPP, WA),
            1749416500000,
            (131050,),
            PHONE_NUMBER_ID,
            "entry[0].changes[0].statuses[0]",
        )
    ]
    [change] = batch.changes
    assert (change.action, change.topic, change.event_id) == (
        Action.OPT_OUT,
        "marketing",
        f"wa.131050.{wamid}",
    )
    delivered = parse_webhook("acme", fixture("status_delivered.json"))
    assert [s.status for s in delivered.statuses] == ["delivered"] and not delivered.changes


def test_user_preferences() -> None:
    stop = parse_webhook("acme", fixture("user_preferences_stop.json")).changes
    resume = parse_webhook("acme", fixture("user_preferences_resume.json")).changes
    assert [(c.action, c.topic, c.occurred_at_ms) for c in stop + resume] == [
        (Action.OPT_OUT, "marketing", 1749417000000),
        (Action.OPT_IN, "marketing", 1749417600000),
    ]
    assert stop[0].event_id != resume[0].event_id
    again = parse_webhook("acme", fixture("user_preferences_stop.json")).changes
    assert again[0].event_id == stop[0].event_id  # redelivery: the same event


def test_unknown_fields_and_types_are_ignored() -> None:
    batch = parse_webhook("acme", fixture("mixed_unknown.json"))
    assert [r.text for r in batch.replies] == ["hello"]
    assert batch.ignored == 2  # the image, the template status change


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"x"', b"\xff\xfe", b'{"entry": {}}'])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        parse_webhook("acme", body)


@pytest.mark.parametrize(
    "value",
    [
        {"messages": [{"from": "1", "id": "wamid.x", "type": "text", "text": {"body": "STOP"}}]},
        {"messages": ["junk", 3, None]},
        {"messages": {"not": "a list"}},
        {"messages": [{"from": "16505551234", "id": "wamid.y", "type": "unsupported"}]},
        {"statuses": [{"status": "failed"}]},
        {"user_preferences": [{"wa_id": "16505551234", "category": "other", "value": "stop"}]},
        {"user_preferences": [{"wa_id": "16505551234", "category": "marketing_messages"}]},
    ],
)
def test_unusable_items_are_kept_not_dropped(value: dict[str, object]) -> None:
    body = json.dumps({"entry": [{"changes": [{"value": value}]}]}).encode()
    batch = parse_webhook("acme", body)
    assert not batch.replies and not batch.changes and batch.unapplied
    for item in batch.unapplied:
        assert item.reason in ("malformed", "unsupported") and item.raw and item.path


@pytest.mark.parametrize(
    "wamid", [None, "", "wamid with spaces", "w" * 129, 12345, "wamid.\u00e9\ud800"]
)
def test_an_unusable_wamid_gets_a_stable_id_from_the_signed_body(wamid: object) -> None:
    msg: dict[str, object] = {"from": "16505551234", "type": "text", "text": {"body": "STOP"}}
    if wamid is not None:
        msg["id"] = wamid
    body = json.dumps({"entry": [{"changes": [{"value": {"messages": [msg, msg]}}]}]})
    first = parse_webhook("acme", body.encode()).replies
    again = parse_webhook("acme", body.encode()).replies  # Meta redelivers the same bytes
    assert [r.provider_message_id for r in first] == [r.provider_message_id for r in again]
    ids = [r.provider_message_id for r in first]
    assert len(set(ids)) == 2 and all(i.startswith("wa.body.") and len(i) <= 128 for i in ids)
    other = parse_webhook("acme", (body + " ").encode()).replies
    assert other[0].provider_message_id != ids[0]  # another body is another event


# -- use cases on the real repository -------------------------------------------------------


class Recorder:
    """A recording InboundHandler / StatusHandler."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.items: list[object] = []
        self.fail = fail

    async def __call__(self, item: object) -> None:
        self.items.append(item)
        if self.fail:
            raise self.fail


async def _configure(store: RedisConsentStore, tenant: str) -> RedisEdgeStore:
    edge_store = RedisEdgeStore(store)
    await edge_store.set_whatsapp_webhook(
        tenant, WhatsAppWebhookConfig("vt-123", "app-secret", (PHONE_NUMBER_ID,))
    )
    return edge_store


async def sent(store: RedisConsentStore, tenant: str, wamid: str, address: str = WA) -> str:
    """A message the tenant sent through us that the provider named ``wamid``."""
    message_id = await send_text(
        ConsentAuthority(store),
        tenant,
        RawRecipient(Channel.WHATSAPP, address),
        "orders",
        "Your order shipped",
    )
    await store.client.set(keys.provider_message(tenant, wamid), message_id)
    return message_id


WAMID_131050 = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI4NjA1NkQ3RTY0QzQ1NkNERjYA"


async def test_webhook_records_provider_changes_once_and_hands_on_the_rest(
    store: RedisConsentStore,
) -> None:
    authority = ConsentAuthority(store)
    inbound, statuses = Recorder(), Recorder()
    edge = WhatsAppEdge(authority, await _configure(store, "acme"), inbound, statuses)
    await sent(store, "acme", WAMID_131050)
    body = fixture("status_failed_131050.json")
    report = await edge.receive("acme", body, sign("app-secret", body))
    assert (report.changes, report.statuses, report.failed, report.kept) == (1, 1, 0, 0)
    check = await authority.check(
        "acme", RawRecipient(Channel.WHATSAPP, "16505551234"), "marketing"
    )
    assert check.decision.status is Status.OPTED_OUT
    assert check.decision.record is not None and check.decision.record.source is Source.PROVIDER
    await edge.receive("acme", body, sign("app-secret", body))  # redelivered
    page = await authority.history("acme", RawRecipient(Channel.WHATSAPP, WA), 0, "")
    assert len(page.events) == 1 and page.events[0].principal == "whatsapp-webhook"
    assert len(statuses.items) == 2 and not inbound.items

    for name in ("text_stop.json", "button_unsubscribe.json", "interactive_button_reply.json"):
        b = fixture(name)
        await edge.receive("acme", b, sign("app-secret", b))
    assert [r.button_payload or r.text for r in inbound.items] == [  # type: ignore[attr-defined]
        "STOP",
        "UNSUBSCRIBE",
        "opt_out_all",
    ]


async def test_webhook_refusals_record_nothing(store: RedisConsentStore) -> None:
    authority = ConsentAuthority(store)
    inbound = Recorder()
    edge = WhatsAppEdge(authority, await _configure(store, "acme"), inbound, Recorder())
    body = fixture("user_preferences_stop.json")
    refusal: type[WebhookRefused]
    for tenant, sig, refusal in (
        ("acme", None, WebhookSignatureInvalid),
        ("acme", sign("wrong", body), WebhookSignatureInvalid),
        ("acme", sign("app-secret", body + b" "), WebhookSignatureInvalid),
        ("globex", sign("app-secret", body), WebhookNotConfigured),
        ("Bad Tenant", sign("app-secret", body), WebhookNotConfigured),
    ):
        with pytest.raises(refusal):
            await edge.receive(tenant, body, sig)
    with pytest.raises(WebhookBadRequest):
        await edge.receive("acme", b"{nope", sign("app-secret", b"{nope"))
    page = await authority.history("acme", RawRecipient(Channel.WHATSAPP, WA), 0, "")
    assert page.events == []


async def test_handler_failures_are_logged_but_store_outage_propagates(
    store: RedisConsentStore,
) -> None:
    authority = ConsentAuthority(store)
    edge_store = await _configure(store, "acme")
    body = fixture("text_stop.json")
    edge = WhatsAppEdge(authority, edge_store, Recorder(RuntimeError("boom")), Recorder())
    assert (await edge.receive("acme", body, sign("app-secret", body))).failed == 1
    edge = WhatsAppEdge(authority, edge_store, Recorder(StoreUnavailable("down")), Recorder())
    with pytest.raises(StoreUnavailable):
        await edge.receive("acme", body, sign("app-secret", body))


async def test_handshake(store: RedisConsentStore) -> None:
    edge = WhatsAppEdge(
        ConsentAuthority(store), await _configure(store, "acme"), Recorder(), Recorder()
    )
    assert await edge.handshake("acme", "subscribe", "vt-123", "1158201444") == "1158201444"
    for mode, token in (("subscribe", "wrong"), ("unsubscribe", "vt-123"), ("", "")):
        with pytest.raises(WebhookVerificationFailed):
            await edge.handshake("acme", mode, token, "1")


def test_webhook_config_validation() -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_webhook_config("", "has space", ["123", "12a", "123", "9" * 33], "x")
    assert [v.field for v in err.value.violations] == [
        "verify_token",
        "app_secret",
        "phone_number_ids[1]",
        "phone_number_ids[2]",
        "phone_number_ids[3]",
        "waba_id",
    ]
    with pytest.raises(InvalidArgument) as err:
        validate_webhook_config("vt", "secret", [])
    assert [v.field for v in err.value.violations] == ["phone_number_ids"]


async def test_links_opt_out_then_resubscribe(store: RedisConsentStore) -> None:
    authority = ConsentAuthority(store)
    links = ConsentLinks(authority, store, static_keyring((SECRET,)), "https://c.example/")
    made = await links.create("acme", RawRecipient(Channel.EMAIL, " Jane.Doe@Example.com "), "", 0)
    assert made.opt_out_url.startswith("https://c.example/u/")
    assert made.resubscribe_url.startswith("https://c.example/s/")
    assert "jane" not in made.opt_out_url.lower()
    assert made.list_unsubscribe == f"<{made.opt_out_url}>"
    assert made.list_unsubscribe_post == "List-Unsubscribe=One-Click"
    out_token = made.opt_out_url.rsplit("/", 1)[1]
    in_token = made.resubscribe_url.rsplit("/", 1)[1]

    # A token only works on its own path.
    with pytest.raises(LinkInvalid):
        await links.open(out_token, Action.OPT_IN)
    _, first = await links.submit(out_token, Action.OPT_OUT, "ab" * 8)
    _, again = await links.submit(out_token, Action.OPT_OUT, "ab" * 8)  # double submit
    assert first.outcome.changed and again.outcome.duplicate
    check = await authority.check("acme", RawRecipient(Channel.EMAIL, EMAIL.address), "news")
    assert not check.decision.allowed and check.decision.record is not None
    assert check.decision.record.source is Source.LINK
    await links.submit(in_token, Action.OPT_IN, "cd" * 8)
    check = await authority.check("acme", RawRecipient(Channel.EMAIL, EMAIL.address), "news")
    assert check.decision.allowed
    events = (
        await authority.history("acme", RawRecipient(Channel.EMAIL, EMAIL.address), 0, "")
    ).events
    assert [e.evidence for e in events] == [made.resubscribe_token_id, made.opt_out_token_id]


async def test_links_validation_and_configuration(store: RedisConsentStore) -> None:
    authority = ConsentAuthority(store)
    links = ConsentLinks(authority, store, static_keyring((SECRET,)), "https://c.example")
    with pytest.raises(InvalidArgument) as err:
        await links.create("Bad!", RawRecipient(None, ""), "Bad Topic!", -1)
    assert {v.field for v in err.value.violations} == {
        "tenant_id",
        "recipient.channel",
        "topic",
        "ttl",
    }
    unconfigured = ConsentLinks(authority, store, static_keyring((SECRET,)), None)
    with pytest.raises(NotConfigured):
        await unconfigured.create("acme", RawRecipient(Channel.EMAIL, "a@b.co"), "", 0)
    assert await unconfigured.resubscribe_url("acme", EMAIL, "") == ""
    url = await links.resubscribe_url("acme", EMAIL, "marketing")
    claims_ = await links.open(url.rsplit("/", 1)[1], Action.OPT_IN)
    assert (claims_.recipient, claims_.topic) == (EMAIL, "marketing")
    with pytest.raises(InvalidArgument):
        await links.submit(url.rsplit("/", 1)[1], Action.OPT_IN, "not-a-nonce")


async def test_stored_secret_is_generated_once(store: RedisConsentStore) -> None:
    a, b = RedisEdgeStore(store), RedisEdgeStore(store)
    assert await a.link_secret() == await b.link_secret()
    assert len(await a.link_secret()) == 64
    token = (await stored_keyring(a)()).mint(
        claims(issued_at_s=2_000_000_000, expires_at_s=2_100_000_000)
    )
    assert (await stored_keyring(b)()).mint  # a second process reads the same secret
    assert (
        LinkCodec([await b.link_secret()], clock_s=lambda: 2_000_000_001).open(token).tenant_id
        == "acme"
    )


async def test_render_confirmation_fills_a_fresh_resubscribe_link(store: RedisConsentStore) -> None:
    links = ConsentLinks(ConsentAuthority(store), store, static_keyring((SECRET,)), "https://c.ex")
    plain = "You are out. Reply START to subscribe again."
    assert await links.render_confirmation(plain, "acme", EMAIL, "") == plain
    text = await links.render_confirmation("Out. Back in: {resubscribe_url}", "acme", EMAIL, "")
    url = text.removeprefix("Out. Back in: ")
    assert url.startswith("https://c.ex/s/")
    opened = await links.open(url.rsplit("/", 1)[1], Action.OPT_IN)
    assert (opened.tenant_id, opened.recipient, opened.topic) == ("acme", EMAIL, "")


async def test_a_future_opt_out_is_applied_and_a_refused_opt_in_is_kept(
    store: RedisConsentStore,
) -> None:
    authority = ConsentAuthority(store)
    edge_store = await _configure(store, "acme")
    edge = WhatsAppEdge(authority, edge_store, Recorder(), Recorder())
    future = fixture("user_preferences_stop.json").replace(b"1749417000", b"99999999999")
    report = await edge.receive("acme", future, sign("app-secret", future))
    assert (report.changes, report.failed, report.kept) == (1, 0, 0)
    [event] = (await authority.history("acme", RawRecipient(Channel.WHATSAPP, WA), 0, "")).events
    assert event.action is Action.OPT_OUT and "later than the receive time" in event.evidence
    resume = fixture("user_preferences_resume.json").replace(b"1749417600", b"99999999999")
    report = await edge.receive("acme", resume, sign("app-secret", resume))
    assert (report.failed, report.kept) == (1, 1)  # an opt-in from the future: refused, kept
    page = await edge.list_unapplied("acme", 0, "")
    assert [(i.reason, i.kind) for i in page.items] == [("refused", "user_preferences")]
    assert "occurred_at" in page.items[0].detail and WA[1:] in page.items[0].raw
    check = await authority.check("acme", RawRecipient(Channel.WHATSAPP, WA), "marketing")
    assert not check.decision.allowed
