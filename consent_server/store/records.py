"""Encoding of the values the Lua scripts store: both directions in one place."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from redis.typing import XReadGroupResponse, ZSetRangeResponse

from consent_server.domain.model import (
    Action,
    ButtonPayload,
    ChangeOutcome,
    Channel,
    ConsentEvent,
    ConsentEventInput,
    ConsentRecord,
    KeywordKind,
    KeywordSet,
    LanguageTemplates,
    OutboundMessage,
    Policy,
    Source,
    Status,
    TenantSettings,
)

from . import keys
from .client import Reply

_STATUS = {"in": Status.OPTED_IN, "out": Status.OPTED_OUT}
# An outcome's status may also be "none": an event ignored because it is dated before
# the recipient's erasure answers what a check would, and that may be no record.
_OUTCOME_STATUS = {**_STATUS, "none": Status.NO_RECORD}


def text(value: Reply | None) -> str:
    """A Redis reply as str ("" for a missing value); every store module decodes with it."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def fields(raw: Mapping[Reply, Reply] | None) -> dict[str, str]:
    """A hash (HGETALL) or stream entry's fields as str, decoded once ({} for none)."""
    return {text(k): text(v) for k, v in (raw or {}).items()}


def parse_record(raw: bytes | str | None) -> ConsentRecord | None:
    """A scope record ``status|occurred_ms|revision|source|event_id``."""
    if raw is None:
        return None
    status, occurred, revision, source, event_id = text(raw).split("|", 4)
    return ConsentRecord(
        status=_STATUS[status],
        occurred_at_ms=int(occurred),
        revision=int(revision),
        source=Source(source),
        event_id=event_id,
    )


def record_event_args(event: ConsentEventInput, maxlen: int | str, descriptor: str) -> list[str]:
    """ARGV[1..13] of record_event.lua: the event, then the change feed's fields and max
    length (the feed is appended in the same step), then the recipient's layout
    descriptor (keys.layout)."""
    return [
        event.event_id,
        _ACTION_VALUE[event.action],
        keys.scope_field(event.topic),
        event.topic,
        _SOURCE_VALUE[event.source],
        event.evidence,
        str(event.occurred_at_ms),
        event.principal,
        event.tenant_id,
        _CHANNEL_VALUE[event.recipient.channel],
        event.recipient.address,
        str(maxlen),
        descriptor,
    ]


def import_profile(event: ConsentEventInput) -> tuple[str, ...]:
    """What the import's batch script (store/bulk.py) takes once for all the events of a
    call that share it: record_event.lua's action, scope field, topic, source, evidence
    and principal, then the channel and its letter in the recipient's field name. Each
    event then sends only its own values (number of its profile, event id, time,
    address, bucket, tombstone digest): Redis turns every argument into a string and
    the script into a Lua value, so an argument sent once per call instead of once per
    event is Redis time saved per record. RedisBulkStore.apply reuses the previous
    event's profile when the six event values read here are the same: a value added
    here must be compared there too."""
    channel = _CHANNEL_VALUE[event.recipient.channel]
    return (
        _ACTION_VALUE[event.action],
        keys.scope_field(event.topic),
        event.topic,
        _SOURCE_VALUE[event.source],
        event.evidence,
        event.principal,
        channel,
        keys.channel_letter(channel),
    )


# An enum member's .value is a descriptor call (~0.5 us on Python 3.11); an import
# builds these arguments for every record, so the values are looked up in dicts.
_ACTION_VALUE = {a: a.value for a in Action}
_SOURCE_VALUE = {s: s.value for s in Source}
_CHANNEL_VALUE = {c: c.value for c in Channel}


def parse_outcome(raw: bytes | str, event_id: str, *, duplicate: bool) -> ChangeOutcome:
    """An event outcome ``applied|changed|status|revision|recorded_ms|action:topic``."""
    applied, changed, status, revision, recorded, _fingerprint = text(raw).split("|")
    return ChangeOutcome(
        applied=applied == "1",
        changed=changed == "1",
        status=_OUTCOME_STATUS[status],
        revision=int(revision),
        event_id=event_id,
        duplicate=duplicate,
        recorded_at_ms=int(recorded),
    )


def stream_entries(
    reply: Sequence[tuple[Reply | None, Mapping[Reply, Reply] | None]] | None,
) -> list[tuple[str, dict[str, str]]]:
    """A stream range (XRANGE / XREVRANGE) as (entry id, fields), decoded once."""
    return [(text(entry_id), fields(raw)) for entry_id, raw in reply or ()]


def members(reply: ZSetRangeResponse) -> list[str]:
    """A sorted-set range (ZRANGE and kin, asked without WITHSCORES) as str members."""
    out = []
    for member in reply:
        if not isinstance(member, bytes | str):
            raise TypeError("members() reads ranges asked without WITHSCORES")
        out.append(text(member))
    return out


def stream_reads(reply: XReadGroupResponse | None) -> list[tuple[str, list[Any]]]:
    """An XREAD(GROUP) reply (a RESP2 list or a RESP3 map) as (stream name, raw entries);
    ``stream_entries`` decodes the entries."""
    pairs = reply.items() if isinstance(reply, dict) else reply or []
    return [(text(name), list(rows)) for name, rows in pairs]


def parse_history_entry(entry_id: str, f: Mapping[str, str]) -> ConsentEvent:
    """One history stream entry (decoded by ``stream_entries``)."""
    return ConsentEvent(
        event_id=f["id"],
        action=Action.OPT_IN if f["a"] == "in" else Action.OPT_OUT,
        topic=f["t"],
        source=Source(f["s"]),
        evidence=f["ev"],
        occurred_at_ms=int(f["o"]),
        recorded_at_ms=int(f["r"]),
        applied=f["ap"] == "1",
        revision=int(entry_id.split("-", 1)[0]),
        principal=f["p"],
    )


# The compact layout's packed values (store/lua/layout.lua writes them).
SOURCE_CODES = {
    "api": "a",
    "keyword": "k",
    "button": "b",
    "link": "l",
    "admin": "d",
    "import": "i",
    "provider": "p",
    "erasure": "x",
}
_SOURCE_OF_CODE = {code: name for name, code in SOURCE_CODES.items()}


def parse_event(revision: int, value: str) -> ConsentEvent:
    """One packed history event (layout.lua's pack_event): flags, topic, source,
    occurred and recorded ms (base 36), event id, principal, feed id, confirmation id,
    evidence, joined by \x1f."""
    flags, topic, source, occurred, recorded, event_id, principal, _f, _c, evidence = value.split(
        "\x1f", 9
    )
    return ConsentEvent(
        event_id=event_id,
        action=Action.OPT_IN if flags[0] == "i" else Action.OPT_OUT,
        topic=topic,
        source=Source(_SOURCE_OF_CODE.get(source, source)),
        evidence=evidence,
        occurred_at_ms=int(occurred, 36),
        recorded_at_ms=int(recorded, 36),
        applied=flags[1] == "1",
        revision=revision,
        principal=principal,
    )


def parse_packed_record(packed: str) -> ConsentRecord | None:
    """A packed scope record (layout.lua's pack_record), None when empty."""
    if not packed:
        return None
    occurred, revision, source, event_id = packed[1:].split(",", 3)
    return ConsentRecord(
        status=Status.OPTED_IN if packed[0] == "i" else Status.OPTED_OUT,
        occurred_at_ms=int(occurred, 36),
        revision=int(revision, 36),
        source=Source(_SOURCE_OF_CODE.get(source, source)),
        event_id=event_id,
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


# -- tenant settings -----------------------------------------------------------------
# A per-tenant hash: scalar fields as strings, lists as JSON. A field that is absent
# means "the default" (TenantSettings' field default), so tenants stored before a
# field existed read as the defaults.


def encode_settings(settings: TenantSettings) -> dict[str, str]:
    """The hash fields of a tenant's settings (all of them: a write replaces the hash)."""
    fields = {
        "default_policy": settings.default_policy.value,
        "business_name": settings.business_name,
        "default_language": settings.default_language,
        "resubscribe_url": settings.resubscribe_url,
        "infer_opt_out": "1" if settings.infer_opt_out_in_sentences else "0",
        "match_button_titles": "1" if settings.match_button_titles else "0",
        "page_languages": ",".join(settings.page_languages),
        "keywords": json.dumps(
            [
                {"lang": k.language, "kind": k.kind.value, "topic": k.topic, "kw": list(k.keywords)}
                for k in settings.keyword_sets
            ],
            ensure_ascii=False,
        ),
        "buttons": json.dumps(
            [
                {"p": b.payload, "kind": b.kind.value, "topic": b.topic, "lang": b.language}
                for b in settings.button_payloads
            ],
            ensure_ascii=False,
        ),
        "templates": json.dumps(
            [
                {
                    "lang": t.language,
                    "out": t.opt_out_confirmation,
                    "in": t.opt_in_confirmation,
                    "help": t.help,
                }
                for t in settings.templates
            ],
            ensure_ascii=False,
        ),
    }
    if settings.default_region:
        fields["default_region"] = settings.default_region
    fields.update({f"policy:{t}": p.value for t, p in settings.topic_policies.items()})
    return fields


def parse_settings(f: Mapping[str, str]) -> TenantSettings:
    """A tenant's settings from its hash (decoded by ``fields``); absent fields take their
    defaults."""
    d = TenantSettings()
    policies = {
        name.removeprefix("policy:"): Policy(value)
        for name, value in f.items()
        if name.startswith("policy:")
    }
    keyword_sets = d.keyword_sets
    if "keywords" in f:
        keyword_sets = tuple(
            KeywordSet(k["lang"], KeywordKind(k["kind"]), tuple(k["kw"]), k["topic"])
            for k in json.loads(f["keywords"])
        )
    buttons = d.button_payloads
    if "buttons" in f:
        buttons = tuple(
            ButtonPayload(b["p"], KeywordKind(b["kind"]), b["topic"], b["lang"])
            for b in json.loads(f["buttons"])
        )
    templates = d.templates
    if "templates" in f:
        templates = tuple(
            LanguageTemplates(t["lang"], t["out"], t["in"], t["help"])
            for t in json.loads(f["templates"])
        )
    return TenantSettings(
        default_region=f.get("default_region") or None,
        default_policy=Policy(f.get("default_policy") or d.default_policy.value),
        topic_policies=policies,
        business_name=f.get("business_name", d.business_name),
        default_language=f.get("default_language") or d.default_language,
        keyword_sets=keyword_sets,
        button_payloads=buttons,
        templates=templates,
        infer_opt_out_in_sentences=f.get("infer_opt_out", "1") != "0",
        resubscribe_url=f.get("resubscribe_url", d.resubscribe_url),
        match_button_titles=f.get("match_button_titles", "0") == "1",
        page_languages=tuple(t for t in f.get("page_languages", "").split(",") if t),
        version=int(f.get("ver") or 0),
    )
