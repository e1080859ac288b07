"""Domain values shared by the api and store layers.

Enum values are named like the proto enums without their prefix; the api layer
converts by name, so the domain never imports generated code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .values import fast_init


class Channel(enum.Enum):
    """The channel a recipient is reached on."""

    WHATSAPP = "whatsapp"
    SMS = "sms"
    EMAIL = "email"
    RCS = "rcs"
    VOICE = "voice"


class Status(enum.Enum):
    """Consent status of a record (or its absence)."""

    OPTED_IN = "in"
    OPTED_OUT = "out"
    NO_RECORD = "none"


class Action(enum.Enum):
    """What a consent event does."""

    OPT_OUT = "out"
    OPT_IN = "in"

    @property
    def status(self) -> Status:
        """The status a scope has after this action is applied."""
        return Status.OPTED_OUT if self is Action.OPT_OUT else Status.OPTED_IN


class Scope(enum.Enum):
    """Which record decided."""

    TOPIC = "topic"
    ALL = "all"
    DEFAULT_POLICY = "default_policy"


class Source(enum.Enum):
    """Where a consent change came from."""

    API = "api"
    KEYWORD = "keyword"
    BUTTON = "button"
    LINK = "link"
    ADMIN = "admin"
    IMPORT = "import"
    PROVIDER = "provider"
    ERASURE = "erasure"


class Policy(enum.Enum):
    """Default policy when a recipient has no record."""

    ALLOW_UNLESS_OPTED_OUT = "allow"
    REQUIRE_OPT_IN = "require_opt_in"


class BlockReason(enum.Enum):
    """Why a send is blocked; the value is the wire ErrorInfo.reason."""

    RECIPIENT_OPTED_OUT = "RECIPIENT_OPTED_OUT"
    OPT_IN_REQUIRED = "OPT_IN_REQUIRED"


class MessageState(enum.Enum):
    """Delivery status of an accepted message."""

    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    FAILED = "failed"
    EXPIRED = "expired"
    # Final: the log provider wrote it to the server log; nothing was sent.
    LOGGED = "logged"


@fast_init
@dataclass(frozen=True, slots=True)
class Recipient:
    """A normalised recipient; ``address`` is E.164 or a lower-cased e-mail."""

    channel: Channel
    address: str


@fast_init
@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """The current record of one scope. Times are Unix milliseconds."""

    status: Status
    occurred_at_ms: int
    revision: int
    source: Source
    event_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of the decision rule for one recipient and topic."""

    allowed: bool
    status: Status
    decided_by: Scope
    record: ConsentRecord | None
    block_reason: BlockReason | None


@fast_init
@dataclass(frozen=True, slots=True)
class ConsentEventInput:
    """A validated opt-out or opt-in, ready to record."""

    tenant_id: str
    recipient: Recipient
    topic: str
    action: Action
    source: Source
    evidence: str
    occurred_at_ms: int
    event_id: str
    principal: str


@fast_init
@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What recording an event did (or did the first time, when ``duplicate``)."""

    applied: bool
    changed: bool
    status: Status
    revision: int
    event_id: str
    duplicate: bool
    recorded_at_ms: int


@dataclass(frozen=True, slots=True)
class ConfirmedChange:
    """A recorded inbound change and the confirmation it queued ("" = none queued:
    the status did not change, or this is a replay whose first delivery queued none)."""

    outcome: ChangeOutcome
    confirmation_id: str


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One entry of a recipient's history."""

    event_id: str
    action: Action
    topic: str
    source: Source
    evidence: str
    occurred_at_ms: int
    recorded_at_ms: int
    applied: bool
    revision: int
    principal: str


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of history, newest first; ``next_revision`` continues it (None: last page)."""

    events: list[ConsentEvent]
    next_before_revision: int | None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A message body: exactly one of text, template or payload (kind says which)."""

    kind: str  # "text" | "template" | "payload"
    text: str = ""
    template_name: str = ""
    template_language: str = ""
    template_parameters: tuple[str, ...] = ()
    content_type: str = ""
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class SendInput:
    """A validated SendIfAllowed request."""

    tenant_id: str
    recipient: Recipient
    topic: str
    message: OutboundMessage
    idempotency_key: str
    not_after_ms: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendAccepted:
    """An accepted (or replayed) send."""

    message_id: str
    accepted_at_ms: int
    consent_revision: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class SendBlocked:
    """A refused send and the decision that refused it."""

    decision: Decision


@dataclass(frozen=True, slots=True)
class MessageStatusInfo:
    """The stored status of one message."""

    message_id: str
    state: MessageState
    recipient: Recipient
    topic: str
    attempts: int
    last_error: str
    provider_message_id: str
    accepted_at_ms: int
    updated_at_ms: int


class InboundAction(enum.Enum):
    """What an inbound message did."""

    NONE = "none"
    OPTED_OUT = "opted_out"
    OPTED_IN = "opted_in"
    HELP = "help"


class KeywordKind(enum.Enum):
    """What an inbound keyword or button does."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


@dataclass(frozen=True, slots=True)
class KeywordSet:
    """Keywords of one language and kind; opt-outs/opt-ins act on ``topic`` ("" = all).

    Keywords are stored normalised (``domain.keywords.normalise``)."""

    language: str
    kind: KeywordKind
    keywords: tuple[str, ...]
    topic: str = ""


@dataclass(frozen=True, slots=True)
class ButtonPayload:
    """A quick-reply button payload and what tapping it does.

    ``language`` picks the confirmation template ("" = the tenant's default language)."""

    payload: str
    kind: KeywordKind
    topic: str = ""
    language: str = ""


@dataclass(frozen=True, slots=True)
class LanguageTemplates:
    """The reply texts of one language; "" = the built-in default text."""

    language: str
    opt_out_confirmation: str = ""
    opt_in_confirmation: str = ""
    help: str = ""


DEFAULT_LANGUAGE = "en"

# The keywords every tenant starts with (already normalised).
DEFAULT_KEYWORD_SETS: tuple[KeywordSet, ...] = (
    KeywordSet(
        "en",
        KeywordKind.OPT_OUT,
        (
            "stop",
            "stopall",
            "unsubscribe",
            "cancel",
            "end",
            "quit",
            "revoke",
            "optout",
            "opt out",
        ),
    ),
    KeywordSet("en", KeywordKind.OPT_OUT, ("stop promotions",), "marketing"),
    KeywordSet("en", KeywordKind.OPT_IN, ("start", "unstop", "subscribe", "opt in")),
    KeywordSet("en", KeywordKind.HELP, ("help", "info")),
)

# WhatsApp-style quick-reply payloads every tenant starts with.
DEFAULT_BUTTON_PAYLOADS: tuple[ButtonPayload, ...] = (
    ButtonPayload("UNSUBSCRIBE", KeywordKind.OPT_OUT),
    ButtonPayload("STOP_PROMOTIONS", KeywordKind.OPT_OUT, "marketing"),
    ButtonPayload("SUBSCRIBE", KeywordKind.OPT_IN),
)


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """A tenant's settings; every field has a default, so a new tenant works at once."""

    default_region: str | None = None
    default_policy: Policy = Policy.ALLOW_UNLESS_OPTED_OUT
    topic_policies: dict[str, Policy] = field(default_factory=dict)
    business_name: str = ""
    default_language: str = DEFAULT_LANGUAGE
    keyword_sets: tuple[KeywordSet, ...] = DEFAULT_KEYWORD_SETS
    button_payloads: tuple[ButtonPayload, ...] = DEFAULT_BUTTON_PAYLOADS
    templates: tuple[LanguageTemplates, ...] = ()
    infer_opt_out_in_sentences: bool = True
    resubscribe_url: str = ""
    # Whether an unconfigured button's title may act as a keyword (never for all topics).
    match_button_titles: bool = False
    # The languages of the consent-link pages, first = default; () = default_language.
    page_languages: tuple[str, ...] = ()
    # The stored version (0 = never written); a write must name the version it read.
    version: int = 0

    def policy_for(self, topic: str) -> Policy:
        """The default policy for ``topic`` ("" = tenant-wide)."""
        return self.topic_policies.get(topic, self.default_policy) if topic else self.default_policy


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """What ExportConsent exports: None = no filter. ``scope`` is a topic, or "" for the
    all-topics records; ``since_ms`` keeps records that occurred at or after it."""

    channel: Channel | None = None
    scope: str | None = None
    status: Status | None = None
    since_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ExportedRecord:
    """One current record of one recipient and scope ("" = all topics)."""

    recipient: Recipient
    topic: str
    record: ConsentRecord


@dataclass(frozen=True, slots=True)
class ExportPage:
    """A page of an export, with its progress: keys of the store walked so far, of the
    store's key count at the start."""

    records: list[ExportedRecord]
    keys_scanned: int
    keys_total: int
