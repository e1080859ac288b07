"""End-to-end API tests over gRPC against the real server process (embedded store and a
private redis-server): the bad-input matrix, address normalisation, idempotent replays,
late events and scopes, batch checks, tenant isolation and history paging.

Every test uses its own tenant (the ``tenant`` fixture), so the module-scoped servers
never need flushing.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc

from .security_support import rich, status_fields
from .support import ServerProcess

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

WA_NORM = "+919876543210"
WA = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="+91 98765 43210")
EMAIL_NORM = "jane.doe@example.com"
EMAIL = pb.Recipient(channel=pb.CHANNEL_EMAIL, address=" Jane.Doe@Example.COM ")
MATRIX_KEY = "k-matrix"  # the idempotency key every SendIfAllowed case of the matrix uses

# Unicode digits, spelled with escapes so the source stays ASCII-readable.
ARABIC_INDIC = "".join(chr(0x0660 + int(d)) for d in "919876543210")  # "+٩١٩..." sans "+"
DEVANAGARI = "".join(chr(0x0966 + int(d)) for d in "919876543210")
FULLWIDTH = "".join(chr(0xFF10 + int(d)) for d in "919876543210")
EMOJI_TOPIC = "\U0001f389promo"  # party popper + "promo"
RTL_TOPIC = "\u062a\u0633\u0648\u064a\u0642"  # Arabic "marketing"
RTL_TEXT = "\u0625\u0644\u063a\u0627\u0621 \u0627\u0644\u0627\u0634\u062a\u0631\u0627\u0643"


# -- helpers ---------------------------------------------------------------------------


def ts(offset_s: float = 0.0, *, base: float | None = None) -> Timestamp:
    """A Timestamp ``offset_s`` seconds from ``base`` (default now), whole seconds."""
    return Timestamp(seconds=int((time.time() if base is None else base) + offset_s))


def rcpt(channel: int, address: str) -> pb.Recipient:
    return pb.Recipient(channel=channel, address=address)  # type: ignore[arg-type]


def history(stub: Any, tenant: str, recipient: pb.Recipient = WA) -> list[pb.ConsentEvent]:
    """The recipient's whole history, newest first (one page of up to 1000)."""
    resp = stub.ListConsentEvents(
        pb.ListConsentEventsRequest(tenant_id=tenant, recipient=recipient, page_size=1000)
    )
    assert resp.next_page_token == ""
    return list(resp.events)


def check(
    stub: Any, tenant: str, recipient: pb.Recipient = WA, topic: str = "marketing"
) -> pb.CheckConsentResponse:
    return stub.CheckConsent(
        pb.CheckConsentRequest(tenant_id=tenant, recipient=recipient, topic=topic)
    )


def opt(
    stub: Any,
    action: str,
    tenant: str,
    recipient: pb.Recipient = WA,
    topic: str = "",
    **kw: Any,
) -> Any:
    """OptOut (action "out") or OptIn (action "in")."""
    if action == "out":
        return stub.OptOut(
            pb.OptOutRequest(tenant_id=tenant, recipient=recipient, topic=topic, **kw)
        )
    return stub.OptIn(pb.OptInRequest(tenant_id=tenant, recipient=recipient, topic=topic, **kw))


def send(
    stub: Any,
    tenant: str,
    recipient: pb.Recipient = WA,
    topic: str = "marketing",
    text: str = "20% off today",
    **kw: Any,
) -> pb.SendIfAllowedResponse:
    return stub.SendIfAllowed(
        pb.SendIfAllowedRequest(
            tenant_id=tenant,
            recipient=recipient,
            topic=topic,
            message=pb.Message(text=text),
            **kw,
        )
    )


def snapshot(stub: Any, tenant: str, recipient: pb.Recipient = WA) -> tuple[Any, ...]:
    """Everything observable about (tenant, recipient): history and the decisions for a
    topic no record names (the all-topics scope decides) and two topics. Compare
    before/after a call that must not write."""
    events = tuple(
        e.SerializeToString(deterministic=True) for e in history(stub, tenant, recipient)
    )
    decisions = tuple(
        (c.allowed, c.status, c.decided_by, c.reason, c.revision, c.source, c.since.seconds)
        for c in (
            check(stub, tenant, recipient, t) for t in ("untouched", "marketing", "order_updates")
        )
    )
    return events, decisions


def violations(details: dict[str, Any]) -> list[error_details_pb2.BadRequest.FieldViolation]:
    bad = details.get("BadRequest")
    assert bad is not None, f"no BadRequest detail in {details}"
    return list(bad.field_violations)


def sensitive_strings(request: Any) -> set[str]:
    """Full phone numbers and e-mail addresses in a request that errors must not echo."""
    out = {WA_NORM, WA_NORM[1:], EMAIL_NORM}
    recipients: list[pb.Recipient] = []
    if hasattr(request, "recipients"):
        recipients = list(request.recipients)[:50]
    elif hasattr(request, "recipient") and request.HasField("recipient"):
        recipients = [request.recipient]
    for r in recipients:
        digits = re.sub(r"\D", "", r.address)
        if len(digits) >= 8:
            out.add(digits)
        if "@" in r.address and len(r.address.strip()) > 3:
            out.add(r.address.strip())
            out.add(r.address.strip().lower())
        if len(digits) >= 8 or "@" in r.address:
            out.add(r.address)
    return {s for s in out if s}


def assert_no_pii(err: grpc.RpcError, details: dict[str, Any], request: Any) -> None:
    texts = [err.details() or ""]  # type: ignore[attr-defined]
    if "BadRequest" in details:
        texts += [f"{v.field} {v.description}" for v in details["BadRequest"].field_violations]
    if "ErrorInfo" in details:
        texts += list(details["ErrorInfo"].metadata.values())
    for secret in sensitive_strings(request):
        for text in texts:
            assert secret not in text, f"error echoes {secret!r}: {text!r}"


# -- 1. the bad-input matrix -----------------------------------------------------------

_Override = Any  # a value, OMIT, or a callable tenant -> value
OMIT = object()


@dataclass(frozen=True)
class Request:
    """A request built per tenant (each test has its own), and the RPC that takes it."""

    rpc: str
    make: Callable[[str], Any]

    def __call__(self, tenant: str) -> Any:
        return self.make(tenant)


def _build(cls: type, defaults: dict[str, Any], over: dict[str, _Override]) -> Request:
    """``cls`` with ``defaults`` and then ``over`` (OMIT leaves a field unset); the RPC is
    the message's name without "Request", so a case cannot name the wrong one."""

    def build(tenant: str) -> Any:
        fields = {**defaults, "tenant_id": tenant, **over}
        fields = {k: (v(tenant) if callable(v) else v) for k, v in fields.items()}
        return cls(**{k: v for k, v in fields.items() if v is not OMIT})

    return Request(cls.__name__.removesuffix("Request"), build)


def check_req(**over: _Override) -> Request:
    return _build(pb.CheckConsentRequest, {"recipient": WA, "topic": "marketing"}, over)


def batch_req(**over: _Override) -> Request:
    return _build(pb.BatchCheckConsentRequest, {"recipients": [WA], "topic": "marketing"}, over)


def optout_req(**over: _Override) -> Request:
    defaults = {"recipient": WA, "topic": "", "evidence": "msg wamid.1", "event_id": "ev-matrix"}
    return _build(pb.OptOutRequest, defaults, over)


def optin_req(**over: _Override) -> Request:
    defaults = {"recipient": WA, "topic": "marketing", "event_id": "ev-matrix"}
    return _build(pb.OptInRequest, defaults, over)


def send_req(**over: _Override) -> Request:
    defaults = {
        "recipient": WA,
        "topic": "marketing",
        "message": pb.Message(text="20% off today"),
        "idempotency_key": MATRIX_KEY,
    }
    return _build(pb.SendIfAllowedRequest, defaults, over)


def list_req(**over: _Override) -> Request:
    return _build(pb.ListConsentEventsRequest, {"recipient": WA, "page_size": 10}, over)


def inbound_req(**over: _Override) -> Request:
    defaults = {"recipient": WA, "text": "STOP", "provider_message_id": "wamid.matrix"}
    return _build(pb.HandleInboundMessageRequest, defaults, over)


def status_req(**over: _Override) -> Request:
    return _build(pb.GetMessageStatusRequest, {"message_id": "m" + "0" * 30}, over)


@dataclass(frozen=True)
class Bad:
    """One bad request: the RPC, how to build it for a tenant, what must come back."""

    build: Request
    fields: tuple[str, ...] = ()
    code: grpc.StatusCode = INVALID
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rpc(self) -> str:
        return self.build.rpc


def upper(t: str) -> str:
    return t.upper()


def B(build: Request, *fields: str, id: str, **kw: Any) -> Any:
    """A MATRIX case: ``build``'s request must be refused, naming exactly ``fields``."""
    return pytest.param(Bad(build, tuple(fields), **kw), id=id)


LUA_TENANT = "x');redis.call('FLUSHALL');--"
RESP_TOPIC = "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\ny\r\n"
LONG_ADDRESS = "+91" + "9" * 10_000  # 10 KB


def FUTURE(tenant: str) -> Timestamp:
    """Ten minutes ahead, built per call because "now" moves."""
    return ts(10 * 60)


TEN_THOUSAND_AND_ONE = [rcpt(pb.CHANNEL_SMS, f"+1202555{i % 10000:04d}") for i in range(10_001)]
_V1_NEG = base64.urlsafe_b64encode(b"v1:-1").decode().rstrip("=")
_V2 = base64.urlsafe_b64encode(b"v2:5").decode().rstrip("=")

# CheckConsent: addresses its channel refuses (id, channel, address)
BAD_CHECK_ADDRESSES = [
    ("check-address-empty", pb.CHANNEL_SMS, ""),
    ("check-address-blank", pb.CHANNEL_SMS, "   "),
    ("check-address-10kb", pb.CHANNEL_SMS, LONG_ADDRESS),
    ("check-address-letters", pb.CHANNEL_SMS, "+1-800-FLOWERS"),
    ("check-address-redis-crlf", pb.CHANNEL_SMS, "+91 98765 43210\r\nSET x y"),
    ("check-address-no-country-code-no-region", pb.CHANNEL_SMS, "98765 43210"),
    ("check-sms-bare-digits-are-not-a-whatsapp-id", pb.CHANNEL_SMS, "919876543210"),
    ("check-address-too-short", pb.CHANNEL_SMS, "+1 555"),
    ("check-address-unknown-country-code", pb.CHANNEL_SMS, "+999 1234567"),
    ("check-address-fullwidth-plus", pb.CHANNEL_SMS, "\uff0b" + FULLWIDTH),
    ("check-address-rtl-marks", pb.CHANNEL_SMS, "+91\u200f98765\u200f43210"),
    ("check-address-extension", pb.CHANNEL_SMS, "+91 98765 43210 ext 5"),
    ("check-email-no-dot", pb.CHANNEL_EMAIL, "jane@localhost"),
    ("check-phone-on-email-channel", pb.CHANNEL_EMAIL, WA_NORM),
    ("check-email-on-sms-channel", pb.CHANNEL_SMS, EMAIL_NORM),
    ("check-email-nul", pb.CHANNEL_EMAIL, "jane\x00@example.com"),
    ("check-email-sqli", pb.CHANNEL_EMAIL, "' OR 1=1 --@example.com"),
]

MATRIX = [
    # CheckConsent: tenant ids
    B(check_req(tenant_id=""), "tenant_id", id="check-tenant-empty"),
    B(check_req(tenant_id=upper), "tenant_id", id="check-tenant-uppercase"),
    B(check_req(tenant_id="' OR 1=1 --"), "tenant_id", id="check-tenant-sqli"),
    B(check_req(tenant_id="{cp01}"), "tenant_id", id="check-tenant-hashtag"),
    B(check_req(tenant_id="*"), "tenant_id", id="check-tenant-glob"),
    B(check_req(tenant_id=LUA_TENANT), "tenant_id", id="check-tenant-lua"),
    B(check_req(tenant_id=lambda t: t + "\r\nFLUSHALL"), "tenant_id", id="check-tenant-crlf"),
    B(check_req(tenant_id="a" * 65), "tenant_id", id="check-tenant-65-chars"),
    B(check_req(tenant_id="../../etc/passwd"), "tenant_id", id="check-tenant-path-traversal"),
    B(check_req(tenant_id=lambda t: t + "\n"), "tenant_id", id="check-tenant-nl"),
    # CheckConsent: recipients
    B(check_req(recipient=OMIT), "recipient", id="check-recipient-missing"),
    B(
        check_req(recipient=rcpt(pb.CHANNEL_UNSPECIFIED, WA_NORM)),
        "recipient.channel",
        id="check-channel-unspecified",
    ),
    B(check_req(recipient=rcpt(99, WA_NORM)), "recipient.channel", id="check-channel-99"),
    *(
        B(check_req(recipient=rcpt(ch, a)), "recipient.address", id=i)
        for i, ch, a in BAD_CHECK_ADDRESSES
    ),
    # CheckConsent: topics
    B(check_req(topic="' OR 1=1 --"), "topic", id="check-topic-sqli"),
    B(check_req(topic="*"), "topic", id="check-topic-glob"),
    B(check_req(topic="{cp01}"), "topic", id="check-topic-hashtag"),
    B(check_req(topic=EMOJI_TOPIC), "topic", id="check-topic-emoji"),
    B(check_req(topic=RTL_TOPIC), "topic", id="check-topic-rtl"),
    B(check_req(topic="m" * 65), "topic", id="check-topic-65-chars"),
    B(check_req(topic="marketing\n"), "topic", id="check-topic-trailing-nl"),
    B(
        check_req(tenant_id="BAD", recipient=rcpt(99, "x"), topic="*"),
        "tenant_id",
        "recipient.channel",
        "topic",
        id="check-names-every-bad-field",
    ),
    # BatchCheckConsent (per-item errors are tested separately)
    B(batch_req(recipients=[]), "recipients", id="batch-empty"),
    B(batch_req(recipients=TEN_THOUSAND_AND_ONE), "recipients", id="batch-10001-recipients"),
    B(batch_req(tenant_id=upper), "tenant_id", id="batch-tenant-uppercase"),
    B(batch_req(topic="{cp01}"), "topic", id="batch-topic-hashtag"),
    # OptOut
    B(optout_req(tenant_id=LUA_TENANT), "tenant_id", id="optout-tenant-lua"),
    B(optout_req(tenant_id=upper), "tenant_id", id="optout-tenant-uppercase"),
    B(optout_req(recipient=OMIT), "recipient", id="optout-recipient-missing"),
    B(optout_req(recipient=rcpt(42, WA_NORM)), "recipient.channel", id="optout-channel-42"),
    B(
        optout_req(recipient=rcpt(pb.CHANNEL_WHATSAPP, LONG_ADDRESS)),
        "recipient.address",
        id="optout-address-10kb",
    ),
    B(optout_req(source=42), "source", id="optout-source-42"),
    B(optout_req(topic=RESP_TOPIC), "topic", id="optout-topic-resp-protocol"),
    B(optout_req(topic="../../etc/passwd"), "topic", id="optout-topic-path"),
    B(optout_req(evidence="e" * 2048), "evidence", id="optout-evidence-2kb"),
    B(optout_req(evidence="ok\x00evil"), "evidence", id="optout-evidence-nul"),
    # (An opt-out from the future is recorded at the receive time: tests/test_event_times.py.)
    B(
        optout_req(occurred_at=Timestamp(seconds=1_700_000_000, nanos=1_000_000_000)),
        "occurred_at",
        id="optout-occurred-at-nanos-1e9",
    ),
    B(
        optout_req(occurred_at=Timestamp(seconds=1_700_000_000, nanos=-1)),
        "occurred_at",
        id="optout-occurred-at-nanos-negative",
    ),
    B(
        optout_req(occurred_at=Timestamp(seconds=-1)),
        "occurred_at",
        id="optout-occurred-at-before-1970",
    ),
    B(
        optout_req(occurred_at=Timestamp(seconds=253_402_300_800)),
        "occurred_at",
        id="optout-occurred-at-year-10000",
    ),
    B(optout_req(event_id="ev 1"), "event_id", id="optout-event-id-space"),
    B(optout_req(event_id="ev\r\nSET x y"), "event_id", id="optout-event-id-crlf"),
    B(optout_req(event_id="e" * 129), "event_id", id="optout-event-id-129-chars"),
    B(optout_req(event_id="ev-\U0001f6d1"), "event_id", id="optout-event-id-emoji"),
    B(
        optout_req(tenant_id="", topic="*", source=99, evidence="x" * 1025, event_id=" "),
        "tenant_id",
        "topic",
        "source",
        "evidence",
        "event_id",
        id="optout-names-every-bad-field",
    ),
    # OptIn
    B(optin_req(source=99), "source", id="optin-source-99"),
    B(optin_req(occurred_at=FUTURE), "occurred_at", id="optin-occurred-at-future"),
    B(
        optin_req(evidence="\u00e9" * 600),  # 600 characters, 1200 bytes of UTF-8
        "evidence",
        id="optin-evidence-1200-utf8-bytes",
    ),
    B(optin_req(topic=EMOJI_TOPIC), "topic", id="optin-topic-emoji"),
    B(optin_req(recipient=rcpt(pb.CHANNEL_EMAIL, "")), "recipient.address", id="optin-email-empty"),
    B(optin_req(tenant_id="{cp01}"), "tenant_id", id="optin-tenant-hashtag"),
    # SendIfAllowed
    B(send_req(message=OMIT), "message", id="send-message-missing"),
    B(send_req(message=pb.Message()), "message", id="send-message-no-content"),
    B(send_req(message=pb.Message(text="")), "message.text", id="send-text-empty"),
    B(send_req(message=pb.Message(text=" \n\t ")), "message.text", id="send-text-whitespace"),
    B(send_req(message=pb.Message(text="x" * 4097)), "message.text", id="send-text-4097-chars"),
    B(send_req(message=pb.Message(text="x" * (1 << 20))), "message", id="send-text-1mb"),
    B(
        send_req(message=pb.Message(template=pb.TemplateMessage(name="", language="en"))),
        "message.template.name",
        id="send-template-no-name",
    ),
    B(
        send_req(
            message=pb.Message(template=pb.TemplateMessage(name="promo", parameters=["p"] * 101))
        ),
        "message.template.parameters",
        id="send-template-101-params",
    ),
    B(
        send_req(message=pb.Message(payload=pb.Payload(content_type="", data=b"{}"))),
        "message.payload.content_type",
        id="send-payload-no-content-type",
    ),
    B(
        send_req(message=pb.Message(payload=pb.Payload(content_type="application/json"))),
        "message.payload.data",
        id="send-payload-empty-data",
    ),
    B(send_req(topic=""), "topic", id="send-topic-missing"),
    B(send_req(topic=EMOJI_TOPIC), "topic", id="send-topic-emoji"),
    B(send_req(topic="' OR 1=1 --"), "topic", id="send-topic-sqli"),
    B(
        send_req(metadata={f"k{i}": "v" for i in range(33)}),
        "metadata",
        id="send-metadata-33-entries",
    ),
    B(send_req(metadata={"": "v"}), "metadata['']", id="send-metadata-empty-key"),
    B(send_req(metadata={"k": "v" * 513}), "metadata['k']", id="send-metadata-value-513-chars"),
    B(
        send_req(metadata={"k" * 65: "v"}),
        "metadata['" + "k" * 64 + "']",
        id="send-metadata-key-65-chars",
    ),
    B(send_req(idempotency_key="k 1"), "idempotency_key", id="send-idempotency-key-space"),
    B(send_req(idempotency_key="k\r\nDEL x"), "idempotency_key", id="send-idempotency-key-crlf"),
    B(send_req(idempotency_key="k" * 129), "idempotency_key", id="send-idempotency-key-129-chars"),
    B(send_req(not_after=lambda t: ts(-60)), "not_after", id="send-not-after-in-the-past"),
    B(
        send_req(not_after=Timestamp(seconds=2_000_000_000, nanos=-5)),
        "not_after",
        id="send-not-after-invalid-nanos",
    ),
    B(send_req(recipient=rcpt(99, WA_NORM)), "recipient.channel", id="send-channel-99"),
    B(
        send_req(recipient=rcpt(pb.CHANNEL_WHATSAPP, LONG_ADDRESS)),
        "recipient.address",
        id="send-address-10kb",
    ),
    B(send_req(tenant_id=upper), "tenant_id", id="send-tenant-uppercase"),
    B(
        send_req(topic="", message=OMIT, idempotency_key="a b", not_after=lambda t: ts(-1)),
        "topic",
        "message",
        "idempotency_key",
        "not_after",
        id="send-names-every-bad-field",
    ),
    # ListConsentEvents
    B(list_req(page_size=1001), "page_size", id="list-page-size-1001"),
    B(list_req(page_size=-1), "page_size", id="list-page-size-negative"),
    B(list_req(page_token="garbage!!"), "page_token", id="list-token-garbage"),
    B(list_req(page_token="' OR 1=1 --"), "page_token", id="list-token-sqli"),
    B(list_req(page_token=_V2), "page_token", id="list-token-other-version"),
    B(list_req(page_token=_V1_NEG), "page_token", id="list-token-negative"),
    B(list_req(recipient=OMIT), "recipient", id="list-recipient-missing"),
    B(list_req(tenant_id="*"), "tenant_id", id="list-tenant-glob"),
    # HandleInboundMessage: a bad field refuses the whole message, even a matching STOP
    B(inbound_req(tenant_id=""), "tenant_id", id="inbound-tenant-empty"),
    B(inbound_req(tenant_id=LUA_TENANT), "tenant_id", id="inbound-tenant-lua"),
    B(inbound_req(provider_message_id=""), "provider_message_id", id="inbound-provider-id-missing"),
    B(
        inbound_req(provider_message_id="wamid 1"),
        "provider_message_id",
        id="inbound-provider-id-space",
    ),
    B(
        inbound_req(provider_message_id="w" * 129),
        "provider_message_id",
        id="inbound-provider-id-129",
    ),
    B(inbound_req(recipient=OMIT), "recipient", id="inbound-no-recipient"),
    B(
        inbound_req(recipient=rcpt(pb.CHANNEL_UNSPECIFIED, WA_NORM)),
        "recipient.channel",
        id="inbound-channel-unspecified",
    ),
    B(
        inbound_req(recipient=rcpt(pb.CHANNEL_WHATSAPP, "STOP")),
        "recipient.address",
        id="inbound-address-garbage",
    ),
    B(inbound_req(text="STOP " + "x" * 4096), "text", id="inbound-text-4097"),
    B(inbound_req(text="STOP\x00"), "text", id="inbound-text-nul"),
    B(inbound_req(button_payload="U" * 257), "button_payload", id="inbound-button-257"),
    B(
        inbound_req(received_at=FUTURE, text="START"),  # a STOP would be clamped, not refused
        "received_at",
        id="inbound-start-received-in-future",
    ),
    B(
        inbound_req(received_at=Timestamp(seconds=0, nanos=-1)),
        "received_at",
        id="inbound-received-bad-nanos",
    ),
    B(
        inbound_req(tenant_id="", provider_message_id="", recipient=OMIT, text="x" * 5000),
        "tenant_id",
        "provider_message_id",
        "recipient",
        "text",
        id="inbound-names-every-bad-field",
    ),
    # GetMessageStatus
    B(status_req(message_id=""), "message_id", id="status-id-empty"),
    B(status_req(message_id="m 1"), "message_id", id="status-id-space"),
    B(status_req(tenant_id=upper), "tenant_id", id="status-tenant-uppercase"),
    B(status_req(), code=NOT_FOUND, id="status-unknown-id"),
    B(status_req(message_id="../../etc/passwd"), code=NOT_FOUND, id="status-id-path-traversal"),
    B(status_req(message_id="*"), code=NOT_FOUND, id="status-id-glob"),
    B(status_req(message_id="{cp01}"), code=NOT_FOUND, id="status-id-hashtag"),
]


def _seed(stub: Any, tenant: str) -> int:
    """Give the recipient some state (an opt-in to marketing an hour ago), so a stray
    write would show; returns the recipient's revision."""
    return int(
        opt(
            stub, "in", tenant, topic="marketing", occurred_at=ts(-3600), event_id="ev-seed"
        ).revision
    )


@pytest.mark.parametrize("case", MATRIX)
def test_bad_input_is_rejected_and_changes_nothing(stub: Any, tenant: str, case: Bad) -> None:
    revision = _seed(stub, tenant)
    before = snapshot(stub, tenant)
    request = case.build(tenant)

    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, case.rpc)(request, timeout=30)
    err = raised.value
    assert err.code() == case.code, err.details()
    st, details = rich(err)
    assert st.code == case.code.value[0]
    info = details["ErrorInfo"]
    assert info.domain == "consent.v1"
    if case.code == INVALID:
        assert info.reason == "INVALID_REQUEST"
        found = violations(details)
        assert sorted(v.field for v in found) == sorted(case.fields), err.details()
        assert all(v.description for v in found)
    else:
        assert info.reason == "MESSAGE_NOT_FOUND"
    assert_no_pii(err, details, request)

    # Nothing changed: same history and decisions, the revision counter did not move
    # (the next event gets the next revision), and the send's idempotency key is unused.
    assert snapshot(stub, tenant) == before
    probe = send(stub, tenant, idempotency_key=MATRIX_KEY)
    assert not probe.duplicate
    after = opt(stub, "out", tenant, event_id="ev-matrix")
    assert not after.duplicate and after.revision == revision + 1


def test_matrix_is_big_enough_and_covers_every_rpc() -> None:
    rpcs = {p.values[0].rpc for p in MATRIX}
    assert len(MATRIX) >= 40
    assert rpcs == {
        "CheckConsent",
        "BatchCheckConsent",
        "OptOut",
        "OptIn",
        "SendIfAllowed",
        "ListConsentEvents",
        "GetMessageStatus",
        "HandleInboundMessage",
    }


def test_other_tenants_message_id_is_not_found(stub: Any, tenant: str, create_tenant: Any) -> None:
    mine = send(stub, tenant).message_id
    other = create_tenant(tenant + "-other")
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetMessageStatus(pb.GetMessageStatusRequest(tenant_id=other, message_id=mine))
    assert raised.value.code() == NOT_FOUND
    _, details = rich(raised.value)
    assert details["ErrorInfo"].reason == "MESSAGE_NOT_FOUND"
    # ...and the owner still sees it.
    status = stub.GetMessageStatus(pb.GetMessageStatusRequest(tenant_id=tenant, message_id=mine))
    assert status.message_id == mine


# -- ugly but valid input is stored verbatim and never escapes its record ----------------

UGLY_IDS = [
    "{cp01}",
    "*",
    "../../etc/passwd",
    "'OR'1'='1'--",
    "a|b|c|d|e",
    "e:x",
    "s:*",
    "rev",
    "redis.call('FLUSHALL')",
    "$-1",
    "~!@#$%^&*()_+`-=[]\\{}|;':\",./<>?",
]


@pytest.mark.parametrize("event_id", UGLY_IDS)
def test_injection_looking_event_ids_are_plain_ids(stub: Any, tenant: str, event_id: str) -> None:
    out = opt(stub, "out", tenant, event_id=event_id, evidence=event_id)
    assert out.event_id == event_id and out.applied and not out.duplicate
    # It is an id like any other: a replay is a duplicate, another id is not.
    again = opt(stub, "out", tenant, event_id=event_id)
    assert again.duplicate and again.revision == out.revision
    other = opt(stub, "in", tenant, event_id="plain-1")
    assert not other.duplicate and other.revision == out.revision + 1
    assert check(stub, tenant).status == pb.CONSENT_STATUS_OPTED_IN
    events = history(stub, tenant)
    assert [e.event_id for e in events] == ["plain-1", event_id]
    assert events[1].evidence == event_id
    # The same id for another recipient is independent.
    sms = rcpt(pb.CHANNEL_SMS, WA_NORM)
    assert not opt(stub, "out", tenant, sms, event_id=event_id).duplicate


@pytest.mark.parametrize(
    "evidence",
    [
        "' OR 1=1 --",
        "{cp01}",
        "redis.call('FLUSHALL')",
        "a|b|c",
        RTL_TEXT,
        "\U0001f6d1 STOP \U0001f6d1",
        "\u00e9" * 512,  # exactly 1024 bytes
    ],
    ids=["sqli", "hashtag", "lua", "pipes", "rtl", "emoji", "1024-bytes"],
)
def test_evidence_is_kept_verbatim(stub: Any, tenant: str, evidence: str) -> None:
    opt(stub, "out", tenant, evidence=evidence, source=pb.SOURCE_LINK)
    [event] = history(stub, tenant)
    assert event.evidence == evidence and event.source == pb.SOURCE_LINK


@pytest.mark.parametrize("key", ["*", "{cp01}", "../../etc/passwd", "k|1|2", "'OR'1'='1'--"])
def test_injection_looking_idempotency_keys_are_plain_keys(
    stub: Any, tenant: str, key: str
) -> None:
    first = send(stub, tenant, idempotency_key=key)
    assert not first.duplicate
    assert send(stub, tenant, idempotency_key=key).message_id == first.message_id
    other = send(stub, tenant, idempotency_key="plain")
    assert not other.duplicate and other.message_id != first.message_id


def test_glob_and_hashtag_email_local_parts_are_ordinary_addresses(stub: Any, tenant: str) -> None:
    for local in ("*", "{cp01}", "a|b"):
        weird = rcpt(pb.CHANNEL_EMAIL, f"{local}@example.com")
        out = opt(stub, "out", tenant, weird)
        assert out.recipient.address == f"{local}@example.com"
        assert not check(stub, tenant, weird).allowed
    assert check(stub, tenant, EMAIL).allowed
    assert history(stub, tenant, EMAIL) == []


def test_limits_are_inclusive(stub: Any, tenant: str, create_tenant: Any) -> None:
    """Values exactly at each documented limit are accepted."""
    long_tenant = create_tenant((tenant + "x" * 64)[:64])
    topic64 = "t" * 64
    out = opt(
        stub,
        "out",
        long_tenant,
        topic=topic64.upper(),
        evidence="e" * 1024,
        event_id="e" * 128,
        occurred_at=ts(4 * 60),
    )
    assert out.applied and out.topic == topic64 and out.event_id == "e" * 128
    assert opt(stub, "in", long_tenant, topic=topic64, occurred_at=ts(4 * 60 + 1)).applied
    accepted = send(
        stub,
        tenant,
        text="x" * 4096,
        idempotency_key="k" * 128,
        metadata={f"{i:064d}": "v" * 512 for i in range(32)},
        not_after=ts(3600),
    )
    assert accepted.message_id
    assert send(stub, tenant, topic="Order_Updates").recipient.address == WA_NORM
    template = pb.Message(template=pb.TemplateMessage(name="n" * 512, parameters=["p"] * 100))
    assert stub.SendIfAllowed(
        pb.SendIfAllowedRequest(tenant_id=tenant, recipient=WA, topic="m", message=template)
    ).message_id
    page = stub.ListConsentEvents(
        pb.ListConsentEventsRequest(tenant_id=long_tenant, recipient=WA, page_size=1000)
    )
    assert len(page.events) == 2


# -- 2. spellings of one address are one recipient ---------------------------------------

WA_SPELLINGS = [
    "+91 98765 43210",
    "whatsapp:+919876543210",
    "919876543210",  # a WhatsApp ID, as webhooks deliver it
    "(+91) 98765-43210",
    "tel:+91.98765.43210",
    "sms:+91-98765-43210",
    "  WhatsApp: +91 98765 43210  ",
    "+91/98765/43210",
    "+" + ARABIC_INDIC,
    ARABIC_INDIC,  # a WhatsApp ID in Arabic-Indic digits
    "+" + DEVANAGARI,
]


@pytest.mark.parametrize("opt_out_with", [0, 2, 4, 8], ids=lambda i: f"opt-out-as-{i}")
def test_whatsapp_spellings_are_one_recipient(stub: Any, tenant: str, opt_out_with: int) -> None:
    spellings = [rcpt(pb.CHANNEL_WHATSAPP, s) for s in WA_SPELLINGS]
    out = opt(stub, "out", tenant, spellings[opt_out_with], source=pb.SOURCE_BUTTON)
    assert out.recipient == rcpt(pb.CHANNEL_WHATSAPP, WA_NORM)
    for r in spellings:
        decision = check(stub, tenant, r)
        assert not decision.allowed and decision.decided_by == pb.SCOPE_ALL, r.address
        assert decision.recipient.address == WA_NORM
        with pytest.raises(grpc.RpcError) as blocked:
            send(stub, tenant, r)
        assert blocked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert rich(blocked.value)[1]["ErrorInfo"].reason == "RECIPIENT_OPTED_OUT"
    back = opt(stub, "in", tenant, spellings[(opt_out_with + 1) % len(spellings)])
    assert back.changed and back.revision > out.revision
    histories = {
        tuple(e.SerializeToString(deterministic=True) for e in history(stub, tenant, r))
        for r in spellings
    }
    assert len(histories) == 1 and len(next(iter(histories))) == 2
    for r in spellings:
        assert send(stub, tenant, r).recipient.address == WA_NORM


def test_phone_channels_normalise_alike_but_consent_is_per_channel(stub: Any, tenant: str) -> None:
    spellings = ["+91 98765 43210", "tel:+919876543210", "sms:+91.98765.43210", "(+91) 98765-43210"]
    opt(stub, "out", tenant, rcpt(pb.CHANNEL_SMS, spellings[1]))
    for s in spellings:
        d = check(stub, tenant, rcpt(pb.CHANNEL_SMS, s))
        assert not d.allowed and d.recipient == rcpt(pb.CHANNEL_SMS, WA_NORM)
        # The same number on other channels is someone the SMS opt-out does not cover.
        for channel in (pb.CHANNEL_WHATSAPP, pb.CHANNEL_RCS, pb.CHANNEL_VOICE):
            assert check(stub, tenant, rcpt(channel, s)).allowed
    assert len(history(stub, tenant, rcpt(pb.CHANNEL_SMS, spellings[3]))) == 1
    assert history(stub, tenant, rcpt(pb.CHANNEL_WHATSAPP, spellings[0])) == []


def test_fictional_555_numbers_work(stub: Any, tenant: str) -> None:
    r = rcpt(pb.CHANNEL_SMS, "+1 (202) 555-0123")
    assert opt(stub, "out", tenant, r).recipient.address == "+12025550123"
    assert not check(stub, tenant, rcpt(pb.CHANNEL_SMS, "tel:+1.202.555.0123")).allowed


EMAIL_SPELLINGS = [
    "jane.doe@example.com",
    " Jane.Doe@Example.COM ",
    "JANE.DOE@EXAMPLE.COM",
    "\tjane.doe@example.com\n",
    "Jane.Doe@example.Com",
]


def test_email_spellings_are_one_recipient(stub: Any, tenant: str) -> None:
    spellings = [rcpt(pb.CHANNEL_EMAIL, s) for s in EMAIL_SPELLINGS]
    out = opt(stub, "out", tenant, spellings[2], topic="newsletter")
    assert out.recipient.address == EMAIL_NORM and out.topic == "newsletter"
    for r in spellings:
        d = check(stub, tenant, r, "Newsletter")
        assert not d.allowed and d.recipient.address == EMAIL_NORM and d.topic == "newsletter"
        assert check(stub, tenant, r, "receipts").allowed
        page = stub.ListConsentEvents(pb.ListConsentEventsRequest(tenant_id=tenant, recipient=r))
        assert page.recipient.address == EMAIL_NORM and len(page.events) == 1
    # A different mailbox is a different recipient.
    assert check(stub, tenant, rcpt(pb.CHANNEL_EMAIL, "jane.doe@example.org"), "newsletter").allowed


def test_idn_email_domain_is_echoed_in_ascii(stub: Any, tenant: str) -> None:
    unicode_domain = rcpt(pb.CHANNEL_EMAIL, "Jane@Ex\u00e4mple.com")
    out = opt(stub, "out", tenant, unicode_domain)
    assert out.recipient.address == "jane@xn--exmple-cua.com"
    assert not check(stub, tenant, rcpt(pb.CHANNEL_EMAIL, "jane@xn--exmple-cua.com")).allowed


def test_tenant_default_region_reads_national_numbers(redis_proc: Any, tenant: str) -> None:
    """Numbers without '+' are read in the tenant's default_region. The settings
    admin RPC comes later, so the test writes the settings hash into a private
    redis-server and runs its own server process on it."""
    import redis

    with redis.Redis.from_url(redis_proc.url) as r:
        r.hset(f"ca:tenant:{tenant}:settings", mapping={"default_region": "IN"})
    srv = ServerProcess(
        {"CONSENT_REDIS_URL": redis_proc.url, "CONSENT_TENANTS": f"{tenant},{tenant}-other"}
    ).start()
    try:
        with grpc.insecure_channel(srv.target) as channel:
            stub = consent_pb2_grpc.ConsentServiceStub(channel)
            for national in ("98765 43210", "098765-43210", "sms:09876543210"):
                got = check(stub, tenant, rcpt(pb.CHANNEL_SMS, national)).recipient.address
                assert got == WA_NORM
            opt(stub, "out", tenant, rcpt(pb.CHANNEL_SMS, "098765 43210"))
            assert not check(stub, tenant, rcpt(pb.CHANNEL_SMS, "+91 98765 43210")).allowed
            # Without the tenant setting the same national number is refused, not guessed.
            with pytest.raises(grpc.RpcError) as err:
                check(stub, tenant + "-other", rcpt(pb.CHANNEL_SMS, "98765 43210"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        assert srv.stop() == 0


# -- 3. idempotent replays ---------------------------------------------------------------


@pytest.mark.parametrize("action", ["out", "in"])
def test_event_replay_is_a_duplicate_with_the_first_outcome(
    stub: Any, tenant: str, action: str
) -> None:
    first = opt(stub, action, tenant, topic="marketing", event_id="wamid.42", evidence="first")
    assert first.applied and first.changed and not first.duplicate
    replay = opt(stub, action, tenant, topic="marketing", event_id="wamid.42", evidence="again")
    assert replay.duplicate
    for name in ("applied", "changed", "status", "revision", "event_id", "recipient", "topic"):
        assert getattr(replay, name) == getattr(first, name), name
    assert replay.recorded_at == first.recorded_at
    [event] = history(stub, tenant)
    assert event.event_id == "wamid.42" and event.evidence == "first"


def test_event_replay_under_another_spelling_is_a_duplicate(stub: Any, tenant: str) -> None:
    out = opt(stub, "out", tenant, topic="marketing", event_id="ev-1")
    replay = opt(
        stub,
        "out",
        tenant,
        rcpt(pb.CHANNEL_WHATSAPP, "919876543210"),
        topic="MARKETING",
        event_id="ev-1",
        source=pb.SOURCE_KEYWORD,
        occurred_at=ts(-60),
    )
    assert replay.duplicate and replay.revision == out.revision
    assert len(history(stub, tenant)) == 1


def _first_event(stub: Any, tenant: str) -> None:
    opt(stub, "out", tenant, topic="marketing", event_id="ev-1")


def _first_send(stub: Any, tenant: str) -> None:
    send(stub, tenant, idempotency_key="key-1", not_after=Timestamp(seconds=4_000_000_000))


REUSE = [
    pytest.param(_first_event, optin_req(event_id="ev-1"), "event_id", id="event-id-opt-in"),
    pytest.param(
        _first_event, optout_req(topic="", event_id="ev-1"), "event_id", id="event-id-all"
    ),
    pytest.param(
        _first_event,
        optout_req(topic="order_updates", event_id="ev-1"),
        "event_id",
        id="event-id-other-topic",
    ),
    pytest.param(
        _first_send,
        send_req(
            idempotency_key="key-1",
            message=pb.Message(text="other text"),
            not_after=Timestamp(seconds=4_000_000_000),
        ),
        "idempotency_key",
        id="send-key-other-text",
    ),
    pytest.param(
        _first_send,
        send_req(idempotency_key="key-1", topic="order_updates"),
        "idempotency_key",
        id="send-key-other-topic",
    ),
    pytest.param(
        _first_send,
        send_req(idempotency_key="key-1", not_after=Timestamp(seconds=4_000_000_001)),
        "idempotency_key",
        id="send-key-other-not-after",
    ),
    pytest.param(
        _first_send,
        send_req(
            idempotency_key="key-1",
            metadata={"campaign": "x"},
            not_after=Timestamp(seconds=4_000_000_000),
        ),
        "idempotency_key",
        id="send-key-other-metadata",
    ),
]


@pytest.mark.parametrize(("first", "build", "field_path"), REUSE)
def test_id_reused_for_a_different_request_is_refused(
    stub: Any,
    tenant: str,
    first: Callable[[Any, str], None],
    build: Request,
    field_path: str,
) -> None:
    first(stub, tenant)
    before = snapshot(stub, tenant)
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, build.rpc)(build(tenant))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    _, details = rich(raised.value)
    assert details["ErrorInfo"].reason in ("EVENT_ID_REUSED", "IDEMPOTENCY_KEY_REUSED")
    assert [v.field for v in violations(details)] == [field_path]
    assert_no_pii(raised.value, details, build(tenant))
    assert snapshot(stub, tenant) == before
    # The true replay is still a duplicate.
    if build.rpc == "SendIfAllowed":
        again = send(
            stub, tenant, idempotency_key="key-1", not_after=Timestamp(seconds=4_000_000_000)
        )
    else:
        again = opt(stub, "out", tenant, topic="marketing", event_id="ev-1")
    assert again.duplicate


def test_generated_event_ids_are_unique(stub: Any, tenant: str) -> None:
    a = opt(stub, "out", tenant)
    b = opt(stub, "out", tenant)
    assert a.event_id and b.event_id and a.event_id != b.event_id
    assert not b.duplicate and b.applied and not b.changed and b.revision == a.revision + 1
    assert [e.event_id for e in history(stub, tenant)] == [b.event_id, a.event_id]


def test_send_replay_returns_the_first_message(stub: Any, tenant: str) -> None:
    first = send(stub, tenant, idempotency_key="order-17-shipped", topic="order_updates")
    assert first.message_id and not first.duplicate
    assert first.recipient == rcpt(pb.CHANNEL_WHATSAPP, WA_NORM)
    replay = send(
        stub,
        tenant,
        rcpt(pb.CHANNEL_WHATSAPP, "whatsapp:+919876543210"),
        idempotency_key="order-17-shipped",
        topic="order_updates",
    )
    assert replay.duplicate and replay.message_id == first.message_id
    assert replay.consent_revision == first.consent_revision
    # Keys are per recipient: the same key for someone else is a new message.
    other = send(stub, tenant, EMAIL, idempotency_key="order-17-shipped")
    assert not other.duplicate and other.message_id != first.message_id
    # No key: never a duplicate.
    assert send(stub, tenant).message_id != send(stub, tenant).message_id

    status = stub.GetMessageStatus(
        pb.GetMessageStatusRequest(tenant_id=tenant, message_id=first.message_id)
    )
    assert status.message_id == first.message_id
    assert status.status == pb.MESSAGE_STATUS_ACCEPTED
    assert status.recipient == rcpt(pb.CHANNEL_WHATSAPP, WA_NORM)
    assert status.topic == "order_updates"
    assert status.accepted_at.seconds == first.accepted_at.seconds
    assert status.attempts == 0


def test_send_consent_revision_follows_the_recipient(stub: Any, tenant: str) -> None:
    assert send(stub, tenant).consent_revision == 0
    rev = opt(stub, "in", tenant, topic="marketing").revision
    assert send(stub, tenant).consent_revision == rev


# -- 4. late events and scopes -----------------------------------------------------------


def test_late_event_is_kept_but_not_applied(stub: Any, tenant: str) -> None:
    t = time.time() - 600
    out = opt(stub, "out", tenant, occurred_at=ts(base=t), event_id="stop")
    late = opt(stub, "in", tenant, occurred_at=ts(-3600, base=t), event_id="late-start")
    assert not late.applied and not late.changed and not late.duplicate
    assert late.status == pb.CONSENT_STATUS_OPTED_OUT
    assert late.revision > out.revision
    d = check(stub, tenant)
    assert not d.allowed and d.revision == out.revision and d.since.seconds == int(t)
    newest, oldest = history(stub, tenant)
    assert (newest.event_id, newest.applied, newest.action) == (
        "late-start",
        False,
        pb.CONSENT_ACTION_OPT_IN,
    )
    assert newest.occurred_at.seconds == int(t) - 3600
    assert (oldest.event_id, oldest.applied) == ("stop", True)
    assert newest.revision > oldest.revision
    # A newer opt-in does apply.
    assert opt(stub, "in", tenant, occurred_at=ts(1, base=t)).applied
    assert check(stub, tenant).allowed


def test_late_event_for_another_scope_does_not_outrank_a_newer_all(stub: Any, tenant: str) -> None:
    t = time.time() - 600
    opt(stub, "out", tenant, occurred_at=ts(base=t))
    late = opt(stub, "in", tenant, topic="marketing", occurred_at=ts(-3600, base=t))
    assert late.applied  # the marketing scope had no record
    d = check(stub, tenant, topic="marketing")
    assert not d.allowed and d.decided_by == pb.SCOPE_ALL


def test_same_instant_the_later_revision_wins(stub: Any, tenant: str) -> None:
    at = ts(-60)
    opt(stub, "out", tenant, occurred_at=at)
    opt(stub, "in", tenant, topic="marketing", occurred_at=at)
    d = check(stub, tenant, topic="marketing")
    assert d.allowed and d.decided_by == pb.SCOPE_TOPIC


def test_topic_and_all_interplay(stub: Any, tenant: str) -> None:
    """The decision rule: STOP (ALL) after a marketing opt-in blocks marketing; a later opt-in to
    order_updates re-allows order_updates only; START (ALL) later re-allows everything."""
    t0 = time.time() - 3600
    revisions = []

    revisions.append(opt(stub, "in", tenant, topic="marketing", occurred_at=ts(base=t0)).revision)
    d = check(stub, tenant, topic="marketing")
    assert d.allowed and d.decided_by == pb.SCOPE_TOPIC and d.status == pb.CONSENT_STATUS_OPTED_IN

    stop = opt(stub, "out", tenant, occurred_at=ts(60, base=t0), source=pb.SOURCE_KEYWORD)
    revisions.append(stop.revision)
    for topic in ("marketing", "order_updates", "general"):
        d = check(stub, tenant, topic=topic)
        assert not d.allowed and d.decided_by == pb.SCOPE_ALL, topic
        assert d.reason == "RECIPIENT_OPTED_OUT" and d.source == pb.SOURCE_KEYWORD

    revisions.append(
        opt(stub, "in", tenant, topic="order_updates", occurred_at=ts(120, base=t0)).revision
    )
    d = check(stub, tenant, topic="order_updates")
    assert d.allowed and d.decided_by == pb.SCOPE_TOPIC
    assert send(stub, tenant, topic="order_updates").message_id
    assert not check(stub, tenant, topic="marketing").allowed
    assert not check(stub, tenant, topic="general").allowed
    with pytest.raises(grpc.RpcError) as blocked:
        send(stub, tenant, topic="marketing")
    meta = rich(blocked.value)[1]["ErrorInfo"].metadata
    assert meta["scope"] == "ALL" and meta["topic"] == "marketing"

    revisions.append(opt(stub, "in", tenant, occurred_at=ts(180, base=t0)).revision)
    for topic in ("marketing", "order_updates", "anything_else", "general"):
        assert check(stub, tenant, topic=topic).allowed, topic
    d = check(stub, tenant, topic="marketing")
    assert d.decided_by == pb.SCOPE_ALL and d.revision == revisions[-1]

    assert revisions == sorted(set(revisions))
    assert [e.revision for e in history(stub, tenant)] == revisions[::-1]


def test_topic_opt_out_blocks_only_that_topic(stub: Any, tenant: str) -> None:
    opt(stub, "out", tenant, topic="Marketing", source=pb.SOURCE_BUTTON)
    d = check(stub, tenant, topic="MARKETING")
    assert not d.allowed and d.decided_by == pb.SCOPE_TOPIC and d.topic == "marketing"
    assert check(stub, tenant, topic="order_updates").allowed
    assert check(stub, tenant, topic="general").allowed
    with pytest.raises(grpc.RpcError) as blocked:
        send(stub, tenant, topic="marketing")
    assert rich(blocked.value)[1]["ErrorInfo"].metadata["scope"] == "TOPIC"


# -- 5. BatchCheckConsent ----------------------------------------------------------------


def _item_violations(result: pb.BatchCheckConsentResult) -> list[str]:
    assert result.WhichOneof("result") == "error"
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    return status_fields(result.error)


def test_batch_mixed_items_in_request_order(stub: Any, tenant: str) -> None:
    opt(stub, "out", tenant, topic="marketing")
    opt(stub, "out", tenant, EMAIL)
    items = [
        (WA, "out"),
        (rcpt(pb.CHANNEL_SMS, "not a number"), "recipients[1].address"),
        (rcpt(pb.CHANNEL_SMS, "+1 202 555 0123"), "in"),
        (rcpt(99, WA_NORM), "recipients[3].channel"),
        (rcpt(pb.CHANNEL_WHATSAPP, "919876543210"), "out"),  # duplicate of item 0
        (rcpt(pb.CHANNEL_EMAIL, ""), "recipients[5].address"),
        (rcpt(pb.CHANNEL_EMAIL, "JANE.DOE@example.com"), "out"),
        (rcpt(pb.CHANNEL_WHATSAPP, LONG_ADDRESS), "recipients[7].address"),
        (WA, "out"),
    ]
    resp = stub.BatchCheckConsent(
        pb.BatchCheckConsentRequest(
            tenant_id=tenant, topic="Marketing", recipients=[r for r, _ in items]
        )
    )
    assert len(resp.results) == len(items)
    for (r, expect), result in zip(items, resp.results, strict=True):
        if expect in ("in", "out"):
            assert result.WhichOneof("result") == "decision", r.address
            assert result.decision.allowed == (expect == "in")
            assert result.decision.topic == "marketing"
        else:
            assert _item_violations(result) == [expect]
            assert "9876543210" not in result.error.message
    decisions = [res.decision for res in resp.results if res.WhichOneof("result") == "decision"]
    assert [d.recipient.address for d in decisions] == [
        WA_NORM,
        "+12025550123",
        WA_NORM,
        EMAIL_NORM,
        WA_NORM,
    ]
    assert decisions[0] == decisions[2] == decisions[4]
    assert decisions[0].decided_by == pb.SCOPE_TOPIC and decisions[3].decided_by == pb.SCOPE_ALL


def test_batch_of_ten_thousand_in_one_call(stub: Any, tenant: str) -> None:
    recipients = [rcpt(pb.CHANNEL_SMS, f"+1 202-555-{i:04d}") for i in range(10_000)]
    blocked = {17, 4242, 9999}
    for i in blocked:
        opt(stub, "out", tenant, recipients[i])
    start = time.monotonic()
    resp = stub.BatchCheckConsent(
        pb.BatchCheckConsentRequest(tenant_id=tenant, topic="marketing", recipients=recipients),
        timeout=60,
    )
    elapsed = time.monotonic() - start
    assert len(resp.results) == 10_000
    for i, result in enumerate(resp.results):
        assert result.decision.recipient.address == f"+1202555{i:04d}"
        assert result.decision.allowed == (i not in blocked)
    assert elapsed < 30


def test_batch_needs_a_topic_and_an_existing_tenant(stub: Any, tenant: str) -> None:
    opt(stub, "out", tenant, topic="marketing")
    with pytest.raises(grpc.RpcError) as no_topic:
        stub.BatchCheckConsent(
            pb.BatchCheckConsentRequest(tenant_id=tenant, topic="", recipients=[WA])
        )
    assert no_topic.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations(rich(no_topic.value)[1])] == ["topic"]
    with pytest.raises(grpc.RpcError) as unknown:
        stub.BatchCheckConsent(
            pb.BatchCheckConsentRequest(
                tenant_id=tenant + "-new", topic="marketing", recipients=[WA]
            )
        )
    assert unknown.value.code() == NOT_FOUND
    assert rich(unknown.value)[1]["ErrorInfo"].reason == "TENANT_NOT_FOUND"


# -- 6. tenant isolation -----------------------------------------------------------------


def test_tenants_are_isolated(stub: Any, tenant: str, create_tenant: Any) -> None:
    a, b = tenant, create_tenant(tenant + "-b")
    out = opt(stub, "out", a, event_id="shared-ev", evidence="tenant a")
    message = send(stub, a, EMAIL, idempotency_key="shared-key")

    d = check(stub, b)
    assert d.allowed and d.status == pb.CONSENT_STATUS_NO_RECORD
    assert history(stub, b) == []
    assert send(stub, b).message_id
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetMessageStatus(
            pb.GetMessageStatusRequest(tenant_id=b, message_id=message.message_id)
        )
    assert raised.value.code() == NOT_FOUND

    # Ids are per tenant too: B's event and key with A's names are new, not replays.
    b_out = opt(stub, "out", b, event_id="shared-ev", evidence="tenant b")
    assert not b_out.duplicate and b_out.revision == 1
    b_msg = send(stub, b, EMAIL, idempotency_key="shared-key")
    assert not b_msg.duplicate and b_msg.message_id != message.message_id

    # B's changes do not leak back into A either.
    opt(stub, "in", b)
    assert not check(stub, a).allowed
    [a_event] = history(stub, a)
    assert a_event.evidence == "tenant a" and a_event.revision == out.revision
    assert [e.evidence for e in history(stub, b)] == ["", "tenant b"]


def test_tenant_ids_are_case_sensitive_not_folded(stub: Any, tenant: str) -> None:
    """An upper-case tenant id is rejected, never folded onto the lower-case tenant."""
    opt(stub, "out", tenant)
    with pytest.raises(grpc.RpcError) as raised:
        check(stub, tenant.upper())
    assert raised.value.code() == INVALID


# -- 7. history paging -------------------------------------------------------------------


def _page_all(stub: Any, tenant: str, size: int) -> list[pb.ListConsentEventsResponse]:
    pages, token = [], ""
    while True:
        page = stub.ListConsentEvents(
            pb.ListConsentEventsRequest(
                tenant_id=tenant, recipient=WA, page_size=size, page_token=token
            )
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 100


def test_history_paging(stub: Any, tenant: str) -> None:
    base = time.time() - 3600
    created = []
    for i in range(25):
        resp = opt(
            stub,
            "out" if i % 2 == 0 else "in",
            tenant,
            topic="marketing" if i % 3 == 0 else "",
            event_id=f"ev-{i:02d}",
            evidence=f"evidence {i}",
            occurred_at=ts(i, base=base),
            source=pb.SOURCE_IMPORT,
        )
        created.append((resp.event_id, resp.revision))

    pages = _page_all(stub, tenant, 10)
    assert [len(p.events) for p in pages] == [10, 10, 5]
    assert [bool(p.next_page_token) for p in pages] == [True, True, False]
    events = [e for p in pages for e in p.events]
    assert [(e.event_id, e.revision) for e in events] == created[::-1]  # newest first
    assert len({e.event_id for e in events}) == 25
    assert [e.revision for e in events] == list(range(25, 0, -1))  # no gaps
    assert all(p.recipient.address == WA_NORM for p in pages)
    first = events[-1]
    assert first.action == pb.CONSENT_ACTION_OPT_OUT and first.topic == "marketing"
    assert first.evidence == "evidence 0" and first.source == pb.SOURCE_IMPORT
    assert first.occurred_at.seconds == int(base) and first.recorded_at.seconds >= int(base)
    assert first.applied and first.principal == "anonymous"

    # Exact multiples end with an empty token, and the default page size holds them all.
    assert [len(p.events) for p in _page_all(stub, tenant, 5)] == [5] * 5
    assert [len(p.events) for p in _page_all(stub, tenant, 25)] == [25]
    default = stub.ListConsentEvents(pb.ListConsentEventsRequest(tenant_id=tenant, recipient=WA))
    assert len(default.events) == 25 and not default.next_page_token
    # Paging is stable under appends: a new event does not shift a page already handed out.
    second = stub.ListConsentEvents(
        pb.ListConsentEventsRequest(
            tenant_id=tenant, recipient=WA, page_size=10, page_token=pages[0].next_page_token
        )
    )
    opt(stub, "in", tenant)
    again = stub.ListConsentEvents(
        pb.ListConsentEventsRequest(
            tenant_id=tenant, recipient=WA, page_size=10, page_token=pages[0].next_page_token
        )
    )
    assert list(again.events) == list(second.events) == list(pages[1].events)


def test_history_of_an_unknown_recipient_is_empty(stub: Any, tenant: str) -> None:
    page = stub.ListConsentEvents(
        pb.ListConsentEventsRequest(tenant_id=tenant, recipient=EMAIL, page_size=1)
    )
    assert list(page.events) == [] and page.next_page_token == ""
    assert page.recipient.address == EMAIL_NORM


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("before", [0, 1, 9_999_999_999_999_999_999], ids=["0", "1", "max"])
def test_well_formed_page_tokens_at_the_edges(stub: Any, tenant: str, before: int) -> None:
    """Tokens the server could have made never crash it (v1:0 used to be INTERNAL on
    real Redis: XREVRANGE rejects the exclusive start "(0-0")."""
    opt(stub, "out", tenant)
    page = stub.ListConsentEvents(
        pb.ListConsentEventsRequest(
            tenant_id=tenant, recipient=WA, page_token=_token(f"v1:{before}")
        )
    )
    assert len(page.events) == (1 if before > 1 else 0) and page.next_page_token == ""
