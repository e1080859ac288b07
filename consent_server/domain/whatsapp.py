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

Everything else (unknown fields, other message types, other webhook fields) is
ignored and counted, so a payload that is well-formed JSON is always accepted.
Timestamps arrive as strings or integers of Unix seconds.

Event ids are derived from the payload, so a redelivered webhook changes nothing:
the ``wamid`` for messages, ``wa.131050.<wamid of the failed message>`` for the
status error, and a digest of (wa_id, category, value, timestamp) for preferences.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from .model import Action, Channel, Recipient
from .recipients import AddressError, normalise_address

MARKETING_TOPIC = "marketing"
ERROR_USER_STOPPED_MARKETING = 131050
SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIG_RE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
MAX_TEXT_CHARS = 4096
MAX_BUTTON_PAYLOAD = 256


class WebhookMalformed(ValueError):
    """The body is not a JSON webhook notification (HTTP 400)."""


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


@dataclass(frozen=True, slots=True)
class StatusReceipt:
    """A delivery receipt for a message we sent (sent, delivered, read, failed...)."""

    tenant_id: str
    provider_message_id: str
    status: str
    recipient: Recipient | None
    timestamp_ms: int | None
    error_codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ProviderConsentChange:
    """An opt-out/opt-in the channel reported (recorded with SOURCE_PROVIDER)."""

    recipient: Recipient
    topic: str
    action: Action
    occurred_at_ms: int | None
    event_id: str
    evidence: str


@dataclass(slots=True)
class WebhookBatch:
    """Everything one notification asks of us, in payload order."""

    replies: list[InboundReply] = field(default_factory=list)
    statuses: list[StatusReceipt] = field(default_factory=list)
    changes: list[ProviderConsentChange] = field(default_factory=list)
    ignored: int = 0


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
    elif isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 12:
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
    return value if isinstance(value, str) else ""


def parse_webhook(tenant_id: str, body: bytes) -> WebhookBatch:
    """Translate a notification body; raise WebhookMalformed when it is not one.

    Only the envelope must be right (a JSON object whose ``entry`` is a list when
    present); anything inside that we do not understand is counted in ``ignored``.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WebhookMalformed(f"body is not JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise WebhookMalformed("body is not a JSON object")
    entries = doc.get("entry", [])
    if not isinstance(entries, list):
        raise WebhookMalformed("'entry' is not a list")
    batch = WebhookBatch()
    for entry in entries:
        for change in _list(_dict(entry).get("changes")):
            value = _dict(_dict(change).get("value"))
            known = False
            for msg in _list(value.get("messages")):
                known = True
                _message(tenant_id, _dict(msg), batch)
            for st in _list(value.get("statuses")):
                known = True
                _status(tenant_id, _dict(st), batch)
            for pref in _list(value.get("user_preferences")):
                known = True
                _preference(_dict(pref), batch)
            if not known:
                batch.ignored += 1
    return batch


def _message(tenant_id: str, msg: dict[str, Any], batch: WebhookBatch) -> None:
    sender = _wa_recipient(msg.get("from"))
    wamid = _id(msg.get("id"))
    kind = msg.get("type")
    text = payload = ""
    if kind == "text":
        text = _str(_dict(msg.get("text")).get("body"))
    elif kind == "button":  # a template's quick-reply button
        button = _dict(msg.get("button"))
        payload = _str(button.get("payload"))
        text = _str(button.get("text"))
    elif kind == "interactive":
        inter = _dict(msg.get("interactive"))
        if inter.get("type") == "button_reply":
            reply = _dict(inter.get("button_reply"))
            payload = _str(reply.get("id"))
            text = _str(reply.get("title"))
    if sender is None or wamid is None or not (text or payload):
        batch.ignored += 1
        return
    batch.replies.append(
        InboundReply(
            tenant_id=tenant_id,
            recipient=sender,
            text=text[:MAX_TEXT_CHARS],
            button_payload=payload[:MAX_BUTTON_PAYLOAD],
            provider_message_id=wamid,
            received_at_ms=timestamp_ms(msg.get("timestamp")),
        )
    )


def _status(tenant_id: str, st: dict[str, Any], batch: WebhookBatch) -> None:
    wamid = _id(st.get("id"))
    status = st.get("status")
    if wamid is None or not isinstance(status, str) or not status:
        batch.ignored += 1
        return
    codes: list[int] = []
    for err in _list(st.get("errors")):
        code = _dict(err).get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            codes.append(code)
        elif isinstance(code, str) and code.isdigit():
            codes.append(int(code))
    recipient = _wa_recipient(st.get("recipient_id"))
    when = timestamp_ms(st.get("timestamp"))
    batch.statuses.append(
        StatusReceipt(tenant_id, wamid, status[:32], recipient, when, tuple(codes))
    )
    if status == "failed" and ERROR_USER_STOPPED_MARKETING in codes and recipient is not None:
        event_id = f"wa.131050.{wamid}"
        if not _ID_RE.match(event_id):
            event_id = "wa.131050." + hashlib.sha256(wamid.encode()).hexdigest()[:40]
        batch.changes.append(
            ProviderConsentChange(
                recipient=recipient,
                topic=MARKETING_TOPIC,
                action=Action.OPT_OUT,
                occurred_at_ms=when,
                event_id=event_id,
                evidence=f"whatsapp status failed, error 131050, message {wamid}"[:1024],
            )
        )


def _preference(pref: dict[str, Any], batch: WebhookBatch) -> None:
    recipient = _wa_recipient(pref.get("wa_id"))
    category = pref.get("category")
    value = pref.get("value")
    actions = {"stop": Action.OPT_OUT, "resume": Action.OPT_IN}
    if recipient is None or category != "marketing_messages" or value not in actions:
        batch.ignored += 1
        return
    raw_ts = pref.get("timestamp")
    # No id in this webhook: the digest of what identifies the user's act is the id.
    ident = f"{recipient.address}|{category}|{value}|{raw_ts}"
    event_id = "wa.pref." + hashlib.sha256(ident.encode()).hexdigest()[:40]
    batch.changes.append(
        ProviderConsentChange(
            recipient=recipient,
            topic=MARKETING_TOPIC,
            action=actions[value],
            occurred_at_ms=timestamp_ms(raw_ts),
            event_id=event_id,
            evidence=f"whatsapp user_preferences marketing_messages {value}",
        )
    )
