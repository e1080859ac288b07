"""Encoding of the values the Lua scripts store: both directions in one place."""

from __future__ import annotations

import base64
import json

from consent_server.domain.model import (
    Action,
    ChangeOutcome,
    ConsentEvent,
    ConsentRecord,
    OutboundMessage,
    Source,
    Status,
)

_STATUS = {"in": Status.OPTED_IN, "out": Status.OPTED_OUT}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_record(raw: bytes | str | None) -> ConsentRecord | None:
    """A scope record ``status|occurred_ms|revision|source|event_id``."""
    if raw is None:
        return None
    status, occurred, revision, source, event_id = _text(raw).split("|", 4)
    return ConsentRecord(
        status=_STATUS[status],
        occurred_at_ms=int(occurred),
        revision=int(revision),
        source=Source(source),
        event_id=event_id,
    )


def parse_outcome(raw: bytes | str, event_id: str, *, duplicate: bool) -> ChangeOutcome:
    """An event outcome ``applied|changed|status|revision|recorded_ms|action:topic``."""
    applied, changed, status, revision, recorded, _fingerprint = _text(raw).split("|")
    return ChangeOutcome(
        applied=applied == "1",
        changed=changed == "1",
        status=_STATUS[status],
        revision=int(revision),
        event_id=event_id,
        duplicate=duplicate,
        recorded_at_ms=int(recorded),
    )


def parse_history_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> ConsentEvent:
    """One history stream entry."""
    f = {_text(k): _text(v) for k, v in fields.items()}
    return ConsentEvent(
        event_id=f["id"],
        action=Action.OPT_IN if f["a"] == "in" else Action.OPT_OUT,
        topic=f["t"],
        source=Source(f["s"]),
        evidence=f["ev"],
        occurred_at_ms=int(f["o"]),
        recorded_at_ms=int(f["r"]),
        applied=f["ap"] == "1",
        revision=int(_text(entry_id).split("-", 1)[0]),
        principal=f["p"],
    )


def encode_body(message: OutboundMessage) -> str:
    """The message body as JSON for the outbox (bytes as base64)."""
    if message.kind == "text":
        body: dict[str, object] = {"kind": "text", "text": message.text}
    elif message.kind == "template":
        body = {
            "kind": "template",
            "name": message.template_name,
            "language": message.template_language,
            "parameters": list(message.template_parameters),
        }
    else:
        body = {
            "kind": "payload",
            "content_type": message.content_type,
            "data": base64.b64encode(message.data).decode(),
        }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))
