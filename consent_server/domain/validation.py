"""Field validation. Every check adds to a Violations list, so one
INVALID_ARGUMENT names every bad field at once; nothing is written before all pass."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import FieldViolation, InvalidArgument
from .masking import mask_text
from .model import Channel, OutboundMessage, Recipient
from .recipients import AddressError, normalise_address
from .values import fast_init

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TOPIC_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
# Free text stored or shown to people must not carry terminal control codes: C0, DEL
# and C1 (ESC and CSI start every ANSI escape sequence), which could rewrite an
# operator's terminal or forge log lines. Multi-line text keeps tab, LF and CR.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MULTILINE_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

MAX_EVIDENCE_BYTES = 1024
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_TEXT_CHARS = 4096
MAX_TEMPLATE_NAME = 512
MAX_TEMPLATE_LANGUAGE = 16
MAX_TEMPLATE_PARAMS = 100
MAX_CONTENT_TYPE = 255
MAX_MESSAGE_BYTES = 64 * 1024
MAX_FUTURE_MS = 5 * 60 * 1000
# 0001-01-01 .. 9999-12-31, as google.protobuf.Timestamp allows.
_MIN_TS_SECONDS = -62135596800
MAX_TS_SECONDS = 253402300799  # a valid timestamp's last second (9999-12-31)


@fast_init
@dataclass(frozen=True, slots=True)
class RawTimestamp:
    """A timestamp as it came off the wire, not yet validated."""

    seconds: int
    nanos: int


@fast_init
@dataclass(frozen=True, slots=True)
class RawRecipient:
    """A recipient as it came off the wire; channel None = unspecified or unknown."""

    channel: Channel | None
    address: str


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message body as it came off the wire; ``kind`` None = no content set."""

    kind: str | None
    text: str = ""
    template_name: str = ""
    template_language: str = ""
    template_parameters: tuple[str, ...] = ()
    content_type: str = ""
    data: bytes = b""
    serialized_size: int = 0


class Violations:
    """Collects field violations; ``raise_if_any`` turns them into InvalidArgument."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record that ``field`` is bad."""
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        """Raise InvalidArgument naming every violation, if there is one."""
        if self.items:
            raise InvalidArgument(self.items)


def has_control(value: str, *, multiline: bool = False) -> bool:
    """True when ``value`` holds a C0/C1 control character or DEL (ANSI escapes start with
    one); ``multiline`` allows tab, line feed and carriage return."""
    return (MULTILINE_CONTROL_RE if multiline else CONTROL_RE).search(value) is not None


def free_text(
    v: Violations,
    value: str,
    field: str,
    *,
    max_chars: int | None = None,
    max_bytes: int | None = None,
    multiline: bool = False,
) -> str:
    """Free text within its limit and without control characters, or "" after recording
    a violation. The one check every free-text field uses (evidence, names, keywords,
    templates, metadata, message text)."""
    if max_chars is not None and len(value) > max_chars:
        v.add(field, f"must be at most {max_chars} characters")
        return ""
    if max_bytes is not None and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        v.add(field, f"must be at most {max_bytes} bytes of UTF-8")
        return ""
    if has_control(value, multiline=multiline):
        allowed = " (tab and line breaks are allowed)" if multiline else ""
        v.add(field, f"must not contain control characters or escape sequences{allowed}")
        return ""
    return value


def tenant_id(v: Violations, value: str, field: str = "tenant_id") -> str:
    """A tenant id, or "" after recording a violation."""
    return slug(v, value, field)


def _matching(
    v: Violations,
    value: str,
    field: str,
    pattern: re.Pattern[str],
    invalid: str,
    *,
    required: bool,
    missing: str = "is required",
) -> str:
    """``value`` when it matches ``pattern``; "" when it is empty (a violation only if
    ``required``) or after recording that it does not match."""
    if not value:
        if required:
            v.add(field, missing)
    elif not pattern.fullmatch(value):
        v.add(field, invalid)
    else:
        return value
    return ""


def slug(v: Violations, value: str, field: str) -> str:
    """A required identifier of the tenant-id form (tenant ids, change webhook names),
    or "" after recording a violation."""
    return _matching(
        v, value, field, TENANT_RE, "must match ^[a-z0-9][a-z0-9_-]{0,63}$", required=True
    )


def topic(v: Violations, value: str, *, required: bool = False, field: str = "topic") -> str:
    """A lower-cased topic ("" = all topics) or "" after recording a violation."""
    return _matching(
        v,
        value.lower(),
        field,
        TOPIC_RE,
        "must match ^[a-z0-9][a-z0-9_.-]{0,63}$ (case-insensitive)",
        required=required,
        missing="is required: name what the message is about, e.g. 'marketing'",
    )


def identifier(v: Violations, value: str, field: str, *, required: bool = False) -> str:
    """An id: 1-128 printable ASCII characters without spaces."""
    return _matching(
        v,
        value,
        field,
        ID_RE,
        "must be 1-128 printable ASCII characters without spaces",
        required=required,
    )


def recipient(
    v: Violations, raw: RawRecipient | None, region: str | None, field: str = "recipient"
) -> Recipient | None:
    """A normalised recipient, or None after recording violations."""
    if raw is None:
        v.add(field, "is required")
        return None
    if raw.channel is None:
        v.add(f"{field}.channel", "must be one of WHATSAPP, SMS, EMAIL, RCS, VOICE")
        return None
    try:
        return Recipient(raw.channel, normalise_address(raw.channel, raw.address, region))
    except AddressError as exc:
        v.add(f"{field}.address", str(exc))
        return None


def evidence(
    v: Violations, value: str, field: str = "evidence", *, max_bytes: int = MAX_EVIDENCE_BYTES
) -> str:
    """Free-text evidence, at most ``max_bytes`` (1 KiB) of UTF-8, one line without
    control characters."""
    return free_text(v, value, field, max_bytes=max_bytes)


def timestamp_ms(v: Violations, raw: RawTimestamp | None, field: str) -> int | None:
    """Unix milliseconds of a wire timestamp; None when unset or invalid."""
    if raw is None:
        return None
    if not (0 <= raw.nanos < 1_000_000_000) or not (
        _MIN_TS_SECONDS <= raw.seconds <= MAX_TS_SECONDS
    ):
        v.add(field, "is not a valid timestamp")
        return None
    if raw.seconds < 0:
        v.add(field, "must not be before 1970-01-01")
        return None
    return raw.seconds * 1000 + raw.nanos // 1_000_000


def occurred_at(
    v: Violations, raw: RawTimestamp | None, now_ms: int, field: str, *, opt_out: bool = False
) -> int:
    """When the customer acted, in Unix ms, checked against the clock (see event_time):
    defaults to now; a future time is clamped to now, except that an opt-in more than
    5 minutes ahead is a violation. Use event_time to keep the given time as evidence."""
    return event_time(v, timestamp_ms(v, raw, field), now_ms, field, opt_out=opt_out).ms


@dataclass(frozen=True, slots=True)
class EventTime:
    """When an event is recorded as having happened, and the given time when it was
    later than the receive time (kept as evidence: the record uses the receive time)."""

    ms: int
    given_ms: int | None = None

    def evidence(self, text: str, field: str, max_bytes: int = MAX_EVIDENCE_BYTES) -> str:
        """``text`` with a note of the given time when it was clamped, within ``max_bytes``."""
        if self.given_ms is None:
            return text
        given = datetime.fromtimestamp(self.given_ms / 1000, UTC).isoformat(timespec="milliseconds")
        note = f" [given {field} {given} was later than the receive time]"
        room = max(0, max_bytes - len(note.encode()))
        head = text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
        return head + note


def event_time(
    v: Violations, given_ms: int | None, now_ms: int, field: str, *, opt_out: bool
) -> EventTime:
    """The time to record an event with, given the clock.

    Unset means now. A time ahead of the receive time is clamped to it, so that no
    clock skew can date an event after the customer's next act: an opt-out is never
    refused for its time; an opt-in more than 5 minutes ahead is refused (it must not
    outrank a real later opt-out), one within that tolerance is clamped."""
    if given_ms is None:
        return EventTime(now_ms)
    if given_ms <= now_ms:
        return EventTime(given_ms)
    if not opt_out and given_ms > now_ms + MAX_FUTURE_MS:
        v.add(field, "is more than 5 minutes in the future (an opt-in may not be post-dated)")
        return EventTime(now_ms)
    return EventTime(now_ms, given_ms)


def metadata(
    v: Violations,
    value: Mapping[str, str],
    field: str = "metadata",
    *,
    max_entries: int = MAX_METADATA_ENTRIES,
    max_value: int = MAX_METADATA_VALUE,
) -> dict[str, str]:
    """Caller metadata within the documented (or configured, lower) limits."""
    if len(value) > max_entries:
        v.add(field, f"must have at most {max_entries} entries")
        return {}
    ok = True
    for key, val in value.items():
        # The key names the field, masked: a caller may have used an address as a key.
        path = f"{field}[{mask_text(key[:MAX_METADATA_KEY])!r}]"
        if not key or len(key) > MAX_METADATA_KEY:
            v.add(path, f"keys must be 1-{MAX_METADATA_KEY} characters")
            ok = False
        elif has_control(key) or has_control(val):
            v.add(path, "must not contain control characters or escape sequences")
            ok = False
        elif len(val) > max_value:
            v.add(path, f"values must be at most {max_value} characters")
            ok = False
    return dict(value) if ok else {}


def message(v: Violations, raw: RawMessage | None, field: str = "message") -> OutboundMessage:
    """A message body: exactly one of text, template or payload, at most 64 KiB."""
    empty = OutboundMessage(kind="text")
    if raw is None or raw.kind is None:
        v.add(field, "is required: set one of text, template or payload")
        return empty
    if raw.serialized_size > MAX_MESSAGE_BYTES:
        v.add(field, f"must be at most {MAX_MESSAGE_BYTES} bytes")
        return empty
    before = len(v.items)
    if raw.kind == "text":
        if not raw.text.strip():
            v.add(f"{field}.text", "must not be empty")
        else:
            free_text(v, raw.text, f"{field}.text", max_chars=MAX_TEXT_CHARS, multiline=True)
    elif raw.kind == "template":
        if not raw.template_name.strip() or len(raw.template_name) > MAX_TEMPLATE_NAME:
            v.add(f"{field}.template.name", f"must be 1-{MAX_TEMPLATE_NAME} characters")
        else:
            free_text(v, raw.template_name, f"{field}.template.name")
        if len(raw.template_language) > MAX_TEMPLATE_LANGUAGE:
            v.add(f"{field}.template.language", "must be at most 16 characters")
        else:
            free_text(v, raw.template_language, f"{field}.template.language")
        if len(raw.template_parameters) > MAX_TEMPLATE_PARAMS:
            v.add(f"{field}.template.parameters", "must have at most 100 entries")
        for i, param in enumerate(raw.template_parameters[:MAX_TEMPLATE_PARAMS]):
            free_text(v, param, f"{field}.template.parameters[{i}]", multiline=True)
    elif raw.kind == "payload":
        if not raw.content_type or len(raw.content_type) > MAX_CONTENT_TYPE:
            v.add(f"{field}.payload.content_type", "must be 1-255 characters")
        else:
            free_text(v, raw.content_type, f"{field}.payload.content_type")
        if not raw.data:
            v.add(f"{field}.payload.data", "must not be empty")
    else:
        v.add(field, "has an unknown kind of content")
    if len(v.items) != before:
        return empty
    return OutboundMessage(
        kind=raw.kind,
        text=raw.text,
        template_name=raw.template_name,
        template_language=raw.template_language,
        template_parameters=raw.template_parameters,
        content_type=raw.content_type,
        data=raw.data,
    )
