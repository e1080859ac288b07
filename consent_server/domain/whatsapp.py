"""WhatsApp Cloud API webhooks as pure functions: signature check and translation.

Meta posts ``{"object": "whatsapp_business_account", "entry": [{"changes": [{"field":
..., "value": {...}}]}]}``. We read three things from it:

- ``value.messages[]`` of type ``text``, ``button`` (template quick reply) and
  ``interactive.button_reply`` -> :class:`InboundReply` for the inbound flow;
- ``value.statuses[]`` -> :class:`StatusReceipt` for delivery; a ``failed`` status
  carrying error 131050 ("user stopped marketing messages") is also an opt-out of
  ``marketing`` (:class:`ProviderConsentChange`);
- ``value.user_preferences[]`` (category ``marketing_messages``): ``stop`` -> opt-out,
  ``resume`` -> opt-in of ``marketing``.

Every item carries the ``metadata.phone_number_id`` of its change, which binds it to
a tenant (see whatsapp_edge). Other webhook fields and message types that cannot carry
a customer's words (images, reactions...) are ignored and counted. What we should read
but cannot (an entry that is not an object, a message without a usable sender, a
preference we do not know, a message type Meta could not decode) is an
:class:`Unapplied` item: kept for an operator, never dropped silently. A payload that
is well-formed JSON is always accepted. Timestamps arrive as strings or integers of
Unix seconds.

Event ids are derived from the payload, so a redelivered webhook changes nothing:
the ``wamid`` for messages, ``wa.131050.<wamid of the failed message>`` for the
status error, and a digest of (wa_id, category, value, timestamp) for preferences.
When a wamid is missing or unusable the id is a digest of the signed body and the
item's place in it (:func:`derived_event_id`): Meta redelivers the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .model import Action, Channel, Recipient
from .recipients import AddressError, normalise_address

MARKETING_TOPIC = "marketing"
ERROR_USER_STOPPED_MARKETING = 131050
SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIG_RE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
PHONE_NUMBER_ID_RE = re.compile(r"^[0-9]{1,32}$")
MAX_TEXT_CHARS = 4096
MAX_BUTTON_PAYLOAD = 256


class WebhookMalformed(ValueError):
    """The body is not a JSON webhook notification (HTTP 400)."""


# Message types that carry no words a customer could opt out with.
_SILENT_TYPES = frozenset(
    {"image", "audio", "video", "document", "sticker", "location", "contacts", "reaction"}
    | {"order", "system", "request_welcome", "ephemeral", "referral"}
)


def derived_event_id(body_digest: str, path: str, prefix: str = "wa.body.") -> str:
    """A stable event id for an item without a usable id: a digest of the signed body's
    digest and the item's path in it (``entry[0].changes[0].messages[1]``)."""
    return prefix + hashlib.sha256(f"{body_digest}|{path}".encode()).hexdigest()[:40]


def body_digest(body: bytes) -> str:
    """The hex SHA-256 of a notification's raw body."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class UnappliedItem:
    """An item we should act on but cannot: what it is, why, and where it was.

    ``raw`` is the item as received (JSON text, for an operator to replay); ``kind``
    says where it sat (``messages``, ``statuses``, ``user_preferences``, or
    ``entry``/``change`` for a broken envelope part). Both the item as parsing finds it
    (Unapplied) and the dead letter that keeps it (whatsapp_edge.DeadLetter) carry these.
    """

    reason: str
    detail: str
    kind: str
    path: str
    phone_number_id: str
    raw: str


@dataclass(frozen=True, slots=True)
class Unapplied(UnappliedItem):
    """An unapplied item as parsing finds it; ``field`` is the change field it sat in."""

    field: str = "messages"


@dataclass(frozen=True, slots=True)
class InboundReply:
    """A customer's reply or button tap, ready for HandleInboundMessage.

    ``recipient`` is the sender (channel WHATSAPP, E.164 from the WhatsApp ID);
    ``provider_message_id`` is the wamid (the event id); ``received_at_ms`` is the
    message's timestamp, None when the payload had none.
    """

    tenant_id: str
    recipient: Recipient
    text: str
    button_payload: str
    provider_message_id: str
    received_at_ms: int | None
    phone_number_id: str = ""
    path: str = ""
    # A button was tapped (a quick reply or interactive reply), even without a payload:
    # its text is the button's title, never matched as if the customer typed it.
    tapped: bool = False


@dataclass(frozen=True, slots=True)
class StatusReceipt:
    """A delivery receipt for a message we sent (sent, delivered, read, failed...)."""

    tenant_id: str
    provider_message_id: str
    status: str
    recipient: Recipient | None
    timestamp_ms: int | None
    error_codes: tuple[int, ...] = ()
    phone_number_id: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class ProviderConsentChange:
    """An opt-out/opt-in the channel reported (recorded with SOURCE_PROVIDER)."""

    recipient: Recipient
    topic: str
    action: Action
    occurred_at_ms: int | None
    event_id: str
    evidence: str
    phone_number_id: str = ""
    path: str = ""
    # The wamid of the message a status reports on: the change stands only if this
    # tenant sent that message ("" = not a status, nothing to check).
    sent_message_id: str = ""
    raw: str = ""


@dataclass(slots=True)
class WebhookBatch:
    """Everything one notification asks of us, in payload order."""

    replies: list[InboundReply] = field(default_factory=list)
    statuses: list[StatusReceipt] = field(default_factory=list)
    changes: list[ProviderConsentChange] = field(default_factory=list)
    unapplied: list[Unapplied] = field(default_factory=list)
    ignored: int = 0

    def extend(self, other: WebhookBatch) -> None:
        """Append ``other``'s items to this batch."""
        self.replies += other.replies
        self.statuses += other.statuses
        self.changes += other.changes
        self.unapplied += other.unapplied
        self.ignored += other.ignored


class InboundHandler(Protocol):
    """Where inbound replies go (the HandleInboundMessage use case).

    Raise StoreUnavailable when the store is down (the webhook answers 503 and
    WhatsApp redelivers); any other exception is logged and the webhook answers 200,
    because a redelivery would fail the same way.
    """

    async def __call__(self, reply: InboundReply) -> None:
        """Handle one reply."""
        ...


class StatusHandler(Protocol):
    """Where delivery receipts go (the delivery worker's receipt method)."""

    async def __call__(self, receipt: StatusReceipt) -> None:
        """Handle one receipt."""
        ...


def sign(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(app_secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the HMAC-SHA256 of the raw ``body`` with ``app_secret``.

    Compared in constant time; a missing or malformed header is False.
    """
    if not header or not app_secret:
        return False
    m = _SIG_RE.match(header.strip())
    if not m:
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, m.group(1).lower())


def timestamp_ms(value: object) -> int | None:
    """Unix seconds as an int or a digit string -> milliseconds; None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        seconds = value
    elif (
        isinstance(value, str)
        and value.strip().isascii()
        and value.strip().isdigit()
        and len(value.strip()) <= 12
    ):
        seconds = int(value.strip())
    else:
        return None
    if not 0 < seconds < 253402300800:
        return None
    return seconds * 1000


def _wa_recipient(value: object) -> Recipient | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        return Recipient(Channel.WHATSAPP, normalise_address(Channel.WHATSAPP, str(value), None))
    except AddressError:
        return None


def _id(value: object) -> str | None:
    return value if isinstance(value, str) and _ID_RE.match(value) else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    # JSON may spell lone surrogates ("\\ud800"), which no store or log can encode.
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else ""


def _raw(value: object, limit: int = 16 * 1024) -> str:
    """The item as JSON text for the dead-letter list, cut at ``limit`` characters."""
    try:
        text = json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = repr(type(value))
    return text[:limit]


def phone_number_id_of(value: dict[str, Any]) -> str:
    """The ``metadata.phone_number_id`` of a change's value ("" when absent or odd)."""
    pnid = _dict(value.get("metadata")).get("phone_number_id")
    if isinstance(pnid, int) and not isinstance(pnid, bool):
        pnid = str(pnid)
    return pnid if isinstance(pnid, str) and PHONE_NUMBER_ID_RE.fullmatch(pnid) else ""


def parse_webhook(tenant_id: str, body: bytes) -> WebhookBatch:
    """Translate a notification body; raise WebhookMalformed when it is not one.

    Only the envelope must be right (a JSON object whose ``entry`` is a list when
    present); anything inside it is an item, an ignored part (counted) or an
    :class:`Unapplied` one.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        # ValueError: also Python's limit on the digits of a huge integer.
        raise WebhookMalformed(f"body is not JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise WebhookMalformed("body is not a JSON object")
    entries = doc.get("entry", [])
    if not isinstance(entries, list):
        raise WebhookMalformed("'entry' is not a list")
    digest = body_digest(body)
    batch = WebhookBatch()
    for e, entry in enumerate(entries):
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            batch.unapplied.append(
                Unapplied(
                    "malformed",
                    "entry is not an object with a changes list",
                    "entry",
                    f"entry[{e}]",
                    "",
                    _raw(entry),
                    "",
                )
            )
            continue
        for c, change in enumerate(changes):
            path = f"entry[{e}].changes[{c}]"
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                batch.unapplied.append(
                    Unapplied(
                        "malformed",
                        "change has no value object",
                        "change",
                        path,
                        "",
                        _raw(change),
                        "",
                    )
                )
                continue
            batch.extend(parse_change(tenant_id, change, digest, path))
    return batch


def parse_change(tenant_id: str, change: dict[str, Any], digest: str, path: str) -> WebhookBatch:
    """One ``changes[]`` element: its messages, statuses and user preferences.

    ``digest`` (of the whole signed body) and ``path`` derive the event ids of items
    without a usable id; a replay passes the stored ones, so it is the same event."""
    batch = WebhookBatch()
    value = _dict(change.get("value"))
    pnid = phone_number_id_of(value)
    known = False
    for kind in _PARSERS:
        items = value.get(kind)
        if items is None:
            continue
        known = True
        if not isinstance(items, list):
            batch.unapplied.append(
                Unapplied(
                    "malformed",
                    f"{kind} is not a list",
                    kind,
                    f"{path}.{kind}",
                    pnid,
                    _raw(items),
                    kind,
                )
            )
            continue
        for i, item in enumerate(items):
            parse_item(tenant_id, kind, item, batch, pnid, f"{path}.{kind}[{i}]", digest)
    if not known:
        batch.ignored += 1
    return batch


def parse_item(
    tenant_id: str,
    kind: str,
    item: object,
    batch: WebhookBatch,
    phone_number_id: str,
    path: str,
    digest: str,
) -> None:
    """Add one item of ``value.<kind>`` (messages, statuses, user_preferences) to
    ``batch``; ``path`` and ``digest`` place it in its signed body (see parse_change)."""
    at = _Where(phone_number_id, path, digest)
    if not isinstance(item, dict):
        batch.unapplied.append(at.unapplied("malformed", "item is not an object", kind, item))
        return
    _PARSERS[kind](tenant_id, item, batch, at)


@dataclass(frozen=True, slots=True)
class _Where:
    pnid: str
    path: str
    digest: str

    def unapplied(self, reason: str, detail: str, kind: str, item: object) -> Unapplied:
        return Unapplied(reason, detail, kind, self.path, self.pnid, _raw(item), kind)


def _message(tenant_id: str, msg: dict[str, Any], batch: WebhookBatch, at: _Where) -> None:
    kind = msg.get("type")
    kind = kind if isinstance(kind, str) else repr(type(kind).__name__)
    text = payload = ""
    tapped = kind in ("button", "interactive")
    if kind in _SILENT_TYPES:
        batch.ignored += 1
        return
    if kind == "text":
        text = _str(_dict(msg.get("text")).get("body"))
    elif kind == "button":  # a template's quick-reply button
        button = _dict(msg.get("button"))
        payload = _str(button.get("payload"))
        text = _str(button.get("text"))
    elif kind == "interactive":
        inter = _dict(msg.get("interactive"))
        inter_type = inter.get("type")
        if isinstance(inter_type, str) and inter_type in ("button_reply", "list_reply"):
            reply = _dict(inter.get(inter_type))
            payload = _str(reply.get("id"))
            text = _str(reply.get("title"))
        else:
            batch.ignored += 1  # flows and other interactive answers carry no keyword
            return
    else:
        batch.unapplied.append(
            at.unapplied("unsupported", f"message type {kind[:32]!r} is not read", "messages", msg)
        )
        return
    sender = _wa_recipient(msg.get("from"))
    if sender is None:
        batch.unapplied.append(
            at.unapplied("malformed", "no usable sender (from)", "messages", msg)
        )
        return
    if not (text or payload):
        batch.ignored += 1
        return
    wamid = _id(msg.get("id")) or derived_event_id(at.digest, at.path)
    batch.replies.append(
        InboundReply(
            tenant_id=tenant_id,
            recipient=sender,
            text=text[:MAX_TEXT_CHARS],
            button_payload=payload[:MAX_BUTTON_PAYLOAD],
            provider_message_id=wamid,
            received_at_ms=timestamp_ms(msg.get("timestamp")),
            phone_number_id=at.pnid,
            path=at.path,
            tapped=tapped,
        )
    )


def _status(tenant_id: str, st: dict[str, Any], batch: WebhookBatch, at: _Where) -> None:
    raw_id = st.get("id")
    status = st.get("status")
    codes: list[int] = []
    for err in _list(st.get("errors")):
        code = _dict(err).get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            codes.append(code)
        elif isinstance(code, str) and code.isascii() and code.isdigit() and len(code) <= 9:
            codes.append(int(code))
    opt_out = status == "failed" and ERROR_USER_STOPPED_MARKETING in codes
    if not isinstance(raw_id, str) or not raw_id or not isinstance(status, str) or not status:
        if opt_out or status == "failed":
            batch.unapplied.append(
                at.unapplied("malformed", "failed status without a message id", "statuses", st)
            )
        else:
            batch.ignored += 1
        return
    # An id we cannot store as is is still the message's id: a receipt only finds the
    # message by the exact id, so an unusable one is looked up (and found nowhere).
    wamid = _str(raw_id)[:256]
    recipient = _wa_recipient(st.get("recipient_id"))
    when = timestamp_ms(st.get("timestamp"))
    batch.statuses.append(
        StatusReceipt(
            tenant_id, wamid, _str(status)[:32], recipient, when, tuple(codes), at.pnid, at.path
        )
    )
    if opt_out:
        event_id = f"wa.131050.{wamid}"
        if not _ID_RE.match(event_id):
            event_id = "wa.131050." + hashlib.sha256(wamid.encode()).hexdigest()[:40]
        if recipient is None:
            batch.unapplied.append(
                at.unapplied("malformed", "131050 status without a recipient_id", "statuses", st)
            )
            return
        batch.changes.append(
            ProviderConsentChange(
                recipient=recipient,
                topic=MARKETING_TOPIC,
                action=Action.OPT_OUT,
                occurred_at_ms=when,
                event_id=event_id,
                evidence=f"whatsapp status failed, error 131050, message {wamid[:128]}"[:1024],
                phone_number_id=at.pnid,
                path=at.path,
                sent_message_id=wamid,
                raw=_raw(st),
            )
        )


def _preference(_tenant: str, pref: dict[str, Any], batch: WebhookBatch, at: _Where) -> None:
    recipient = _wa_recipient(pref.get("wa_id"))
    category = pref.get("category")
    value = pref.get("value")
    actions = {"stop": Action.OPT_OUT, "resume": Action.OPT_IN}
    if (
        recipient is None
        or category != "marketing_messages"
        or not isinstance(value, str)
        or value not in actions
    ):
        batch.unapplied.append(
            at.unapplied(
                "malformed",
                "not a marketing_messages stop/resume with a usable wa_id",
                "user_preferences",
                pref,
            )
        )
        return
    raw_ts = pref.get("timestamp")
    # No id in this webhook: the digest of what identifies the user's act is the id.
    ident = f"{recipient.address}|{category}|{value}|{str(raw_ts)[:32]}"
    event_id = "wa.pref." + hashlib.sha256(ident.encode()).hexdigest()[:40]
    batch.changes.append(
        ProviderConsentChange(
            recipient=recipient,
            topic=MARKETING_TOPIC,
            action=actions[value],
            occurred_at_ms=timestamp_ms(raw_ts),
            event_id=event_id,
            evidence=f"whatsapp user_preferences marketing_messages {value}",
            phone_number_id=at.pnid,
            path=at.path,
            raw=_raw(pref),
        )
    )


_PARSERS: dict[str, Callable[[str, dict[str, Any], WebhookBatch, _Where], None]] = {
    "messages": _message,
    "statuses": _status,
    "user_preferences": _preference,
}
