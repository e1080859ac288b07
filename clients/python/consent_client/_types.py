"""Plain Python values the client takes and returns (frozen dataclasses and str enums).

Every result keeps the response proto it was built from in ``.raw`` (left out of
``repr`` and equality), for fields a newer server may add.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from .v1 import admin_pb2 as apb
from .v1 import consent_pb2 as pb

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from ._errors import ClientValidationError, ConsentError


def _invalid(message: str, field: str = "") -> ClientValidationError:
    # Imported here: _errors imports this module's enums.
    from ._errors import client_validation_error

    return client_validation_error(message, field)


class Channel(enum.StrEnum):
    """The channel a recipient is reached on (``consent.v1.Channel``)."""

    WHATSAPP = "whatsapp"
    SMS = "sms"
    EMAIL = "email"
    RCS = "rcs"
    VOICE = "voice"
    UNSPECIFIED = "unspecified"


class Source(enum.StrEnum):
    """Where a consent change came from (``consent.v1.Source``)."""

    API = "api"
    KEYWORD = "keyword"
    BUTTON = "button"
    LINK = "link"
    ADMIN = "admin"
    IMPORT = "import"
    PROVIDER = "provider"
    ERASURE = "erasure"
    UNSPECIFIED = "unspecified"


class ConsentStatus(enum.StrEnum):
    """The consent state of a scope (``consent.v1.ConsentStatus``)."""

    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"
    NO_RECORD = "no_record"
    UNSPECIFIED = "unspecified"


class Scope(enum.StrEnum):
    """Which record decided (``consent.v1.Scope``)."""

    TOPIC = "topic"
    ALL = "all"
    DEFAULT_POLICY = "default_policy"
    UNSPECIFIED = "unspecified"


class ConsentAction(enum.StrEnum):
    """What a consent event did (``consent.v1.ConsentAction``)."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    UNSPECIFIED = "unspecified"


class InboundAction(enum.StrEnum):
    """What an inbound message did (``consent.v1.InboundAction``)."""

    NONE = "none"
    OPTED_OUT = "opted_out"
    OPTED_IN = "opted_in"
    HELP = "help"
    UNSPECIFIED = "unspecified"


class MessageState(enum.StrEnum):
    """Where an accepted message is in its life (``consent.v1.MessageStatus``)."""

    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    FAILED = "failed"
    EXPIRED = "expired"
    LOGGED = "logged"  # the server's log provider wrote it to its log; nothing was sent
    UNSPECIFIED = "unspecified"


ChannelLike: TypeAlias = Channel | str | int
"""A channel: ``Channel.SMS``, ``"sms"``, ``"CHANNEL_SMS"`` or ``pb.CHANNEL_SMS``."""

SourceLike: TypeAlias = Source | str | int
"""A source: ``Source.KEYWORD``, ``"keyword"``, ``"SOURCE_KEYWORD"`` or ``pb.SOURCE_KEYWORD``."""

_E = TypeVar("_E", bound=enum.StrEnum)


def _enum_from_proto(cls: type[_E], prefix: str, name_of: Mapping[int, str], value: int) -> _E:
    """The str enum member for a proto enum number; UNSPECIFIED for 0 and unknown numbers."""
    name = name_of.get(value, "")
    short = name.removeprefix(prefix).lower()
    try:
        return cls(short)
    except ValueError:
        return cls("unspecified")


def _enum_to_proto(
    cls: type[_E], prefix: str, value_of: Mapping[str, int], value: _E | str | int, what: str
) -> int:
    """The proto enum number for a friendly string, a str enum member or a number."""
    if isinstance(value, bool):
        raise _invalid(f"{what} must be a string or a consent.v1.{what.title()} value")
    if isinstance(value, int):
        if value not in value_of.values():
            raise _invalid(f"unknown {what} number {value}")
        return value
    if isinstance(value, str):
        key = value.strip().upper().replace("-", "_").replace(" ", "_")
        number = value_of.get(key if key.startswith(prefix) else prefix + key)
        if number is None:
            choices = ", ".join(repr(m.value) for m in cls if m.value != "unspecified")
            raise _invalid(f"unknown {what} {value!r}; expected one of {choices}")
        return number
    raise _invalid(f"{what} must be a string or a consent.v1.{what.title()} value")


_CHANNEL_NAMES = {int(v): k for k, v in pb.Channel.items()}
_SOURCE_NAMES = {int(v): k for k, v in pb.Source.items()}
_STATUS_NAMES = {int(v): k for k, v in pb.ConsentStatus.items()}
_SCOPE_NAMES = {int(v): k for k, v in pb.Scope.items()}
_ACTION_NAMES = {int(v): k for k, v in pb.ConsentAction.items()}
_INBOUND_NAMES = {int(v): k for k, v in pb.InboundAction.items()}
_MESSAGE_NAMES = {int(v): k for k, v in pb.MessageStatus.items()}


def channel_to_pb(value: ChannelLike) -> pb.Channel.ValueType:
    """The ``consent.v1.Channel`` number for a friendly channel value."""
    return pb.Channel.ValueType(
        _enum_to_proto(Channel, "CHANNEL_", dict(pb.Channel.items()), value, "channel")
    )


def source_to_pb(value: SourceLike) -> pb.Source.ValueType:
    """The ``consent.v1.Source`` number for a friendly source value."""
    return pb.Source.ValueType(
        _enum_to_proto(Source, "SOURCE_", dict(pb.Source.items()), value, "source")
    )


def channel_from_pb(value: int) -> Channel:
    """The :class:`Channel` for a ``consent.v1.Channel`` number."""
    return _enum_from_proto(Channel, "CHANNEL_", _CHANNEL_NAMES, value)


def source_from_pb(value: int) -> Source:
    """The :class:`Source` for a ``consent.v1.Source`` number."""
    return _enum_from_proto(Source, "SOURCE_", _SOURCE_NAMES, value)


def ts_to_datetime(ts: Timestamp) -> datetime:
    """A protobuf Timestamp as a tz-aware UTC datetime."""
    return ts.ToDatetime(tzinfo=UTC)


def _ts_or_none(msg: Message, name: str) -> datetime | None:
    """The optional Timestamp field ``name`` as a datetime; None when it is not set."""
    return ts_to_datetime(getattr(msg, name)) if msg.HasField(name) else None


_D = TypeVar("_D", bound="DataclassInstance")


def _from_message(cls: type[_D], msg: Message, **converted: Any) -> _D:
    """The result dataclass ``cls`` read from the response message ``msg``.

    A field named in ``converted`` takes the value given there (the timestamps, enums,
    nested messages and tuples its ``from_pb`` converts); ``raw`` is ``msg`` itself
    unless given; every other field is ``msg``'s scalar field of the same name, as is.
    One rule for the plain fields, so that no result restates its message field by field.
    """
    values: dict[str, Any] = {"raw": msg, **converted}
    for f in fields(cls):
        if f.init and f.name not in values:
            values[f.name] = getattr(msg, f.name)
    return cls(**values)


def datetime_to_ts(value: datetime, what: str) -> Timestamp:
    """A tz-aware datetime as a protobuf Timestamp (naive datetimes are ambiguous: rejected)."""
    if not isinstance(value, datetime):
        raise _invalid(f"{what} must be a datetime", what)
    if value.tzinfo is None or value.utcoffset() is None:
        raise _invalid(f"{what} must be timezone-aware (e.g. datetime.now(UTC))", what)
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who is messaged: a channel and an address on it.

    ``channel`` accepts the friendly forms of :data:`ChannelLike` and is stored as a
    :class:`Channel`.
    """

    channel: Channel
    address: str

    def __init__(self, channel: ChannelLike, address: str) -> None:
        object.__setattr__(self, "channel", channel_from_pb(channel_to_pb(channel)))
        object.__setattr__(self, "address", address)

    def to_pb(self) -> pb.Recipient:
        """The ``consent.v1.Recipient`` message."""
        return pb.Recipient(channel=channel_to_pb(self.channel), address=self.address)

    @classmethod
    def from_pb(cls, msg: pb.Recipient) -> Recipient:
        """A Recipient from a ``consent.v1.Recipient`` message (any channel number)."""
        r = object.__new__(cls)
        object.__setattr__(r, "channel", channel_from_pb(msg.channel))
        object.__setattr__(r, "address", msg.address)
        return r


RecipientLike: TypeAlias = Recipient | pb.Recipient | tuple[ChannelLike, str]
"""A recipient: :class:`Recipient`, ``consent.v1.Recipient`` or ``(channel, address)``."""


def recipient_to_pb(value: RecipientLike) -> pb.Recipient:
    """The ``consent.v1.Recipient`` for any accepted recipient form."""
    if isinstance(value, pb.Recipient):
        return value
    if isinstance(value, Recipient):
        return value.to_pb()
    if isinstance(value, tuple) and len(value) == 2:
        channel, address = value
        return pb.Recipient(channel=channel_to_pb(channel), address=address)
    raise _invalid("a recipient is a Recipient, a consent.v1.Recipient or (channel, address)")


@dataclass(frozen=True, slots=True)
class Template:
    """A pre-approved provider template (``consent.v1.TemplateMessage``)."""

    name: str
    language: str = ""
    parameters: tuple[str, ...] = ()

    def to_pb(self) -> pb.TemplateMessage:
        """The ``consent.v1.TemplateMessage`` message."""
        return pb.TemplateMessage(
            name=self.name, language=self.language, parameters=list(self.parameters)
        )


@dataclass(frozen=True, slots=True)
class Payload:
    """Opaque content handed to the provider as is (``consent.v1.Payload``)."""

    content_type: str
    data: bytes

    def to_pb(self) -> pb.Payload:
        """The ``consent.v1.Payload`` message."""
        return pb.Payload(content_type=self.content_type, data=self.data)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a recipient may be messaged about a topic now (``CheckConsent``)."""

    allowed: bool
    status: ConsentStatus
    decided_by: Scope
    reason: str
    """Empty when allowed; else ``"RECIPIENT_OPTED_OUT"`` or ``"OPT_IN_REQUIRED"``."""
    since: datetime | None
    """When the customer acted; None when the default policy decided."""
    source: Source | None
    """Source of the deciding record; None when the default policy decided."""
    revision: int
    recipient: Recipient
    topic: str
    raw: pb.CheckConsentResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: pb.CheckConsentResponse) -> Decision:
        """A Decision from a ``CheckConsentResponse``."""
        source = source_from_pb(msg.source)
        return _from_message(
            cls,
            msg,
            status=_enum_from_proto(ConsentStatus, "CONSENT_STATUS_", _STATUS_NAMES, msg.status),
            decided_by=_enum_from_proto(Scope, "SCOPE_", _SCOPE_NAMES, msg.decided_by),
            since=_ts_or_none(msg, "since"),
            source=None if source is Source.UNSPECIFIED else source,
            recipient=Recipient.from_pb(msg.recipient),
        )


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """A decided item of :meth:`~consent_client.ConsentClient.batch_check_consent`.

    ``ok`` is ``Literal[True]`` and ``decision`` is never None, so after ``if item.ok:``
    (or ``isinstance(item, BatchDecision)``) a type checker knows ``item.decision``.
    """

    index: int
    """The item's position in the request."""
    decision: Decision
    ok: Literal[True] = field(default=True, init=False)
    error: None = field(default=None, init=False)


@dataclass(frozen=True, slots=True)
class BatchError:
    """An item of :meth:`~consent_client.ConsentClient.batch_check_consent` that could not
    be decided: ``error`` is the typed exception (usually
    :class:`~consent_client.InvalidArgument`) it would have raised on its own."""

    index: int
    """The item's position in the request."""
    error: ConsentError
    ok: Literal[False] = field(default=False, init=False)
    decision: None = field(default=None, init=False)


BatchItem: TypeAlias = BatchDecision | BatchError
"""One answer of a batch check: a :class:`BatchDecision` or a :class:`BatchError`,
told apart by ``ok`` (or ``isinstance`` / ``match``)."""


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The outcome of ``OptOut`` / ``OptIn``."""

    applied: bool
    """False when an older event arrived late: kept in history, state unchanged."""
    changed: bool
    """True when the scope's status flipped (or the scope had no record)."""
    status: ConsentStatus
    revision: int
    event_id: str
    duplicate: bool
    """True when this event_id was seen before (a replay or a client retry)."""
    recipient: Recipient
    topic: str
    recorded_at: datetime
    raw: pb.OptOutResponse | pb.OptInResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: pb.OptOutResponse | pb.OptInResponse) -> ChangeResult:
        """A ChangeResult from an ``OptOutResponse`` or ``OptInResponse``."""
        return _from_message(
            cls,
            msg,
            status=_enum_from_proto(ConsentStatus, "CONSENT_STATUS_", _STATUS_NAMES, msg.status),
            recipient=Recipient.from_pb(msg.recipient),
            recorded_at=ts_to_datetime(msg.recorded_at),
        )


@dataclass(frozen=True, slots=True)
class SendResult:
    """An accepted message (``SendIfAllowed``)."""

    message_id: str
    accepted_at: datetime
    consent_revision: int
    duplicate: bool
    """True when the idempotency key was seen before: nothing new was queued."""
    recipient: Recipient
    idempotency_key: str
    """The key the send was made with (generated by the client unless disabled); "" if none."""
    raw: pb.SendIfAllowedResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: pb.SendIfAllowedResponse, idempotency_key: str = "") -> SendResult:
        """A SendResult from a ``SendIfAllowedResponse``."""
        return _from_message(
            cls,
            msg,
            accepted_at=ts_to_datetime(msg.accepted_at),
            recipient=Recipient.from_pb(msg.recipient),
            idempotency_key=idempotency_key,
        )


@dataclass(frozen=True, slots=True)
class InboundResult:
    """What an inbound message did (``HandleInboundMessage``)."""

    action: InboundAction
    matched_keyword: str
    reply_text: str
    reply_message_id: str
    revision: int
    raw: pb.HandleInboundMessageResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: pb.HandleInboundMessageResponse) -> InboundResult:
        """An InboundResult from a ``HandleInboundMessageResponse``."""
        return _from_message(
            cls,
            msg,
            action=_enum_from_proto(InboundAction, "INBOUND_ACTION_", _INBOUND_NAMES, msg.action),
        )


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One recorded consent event (the evidence)."""

    event_id: str
    action: ConsentAction
    topic: str
    source: Source
    evidence: str
    occurred_at: datetime
    recorded_at: datetime
    applied: bool
    revision: int
    principal: str
    raw: pb.ConsentEvent = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: pb.ConsentEvent) -> ConsentEvent:
        """A ConsentEvent from a ``consent.v1.ConsentEvent``."""
        return _from_message(
            cls,
            msg,
            action=_enum_from_proto(ConsentAction, "CONSENT_ACTION_", _ACTION_NAMES, msg.action),
            source=source_from_pb(msg.source),
            occurred_at=ts_to_datetime(msg.occurred_at),
            recorded_at=ts_to_datetime(msg.recorded_at),
        )


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of consent history, newest first (``ListConsentEvents``)."""

    events: tuple[ConsentEvent, ...]
    next_page_token: str
    """Pass as ``page_token`` for the next page; empty on the last page."""
    recipient: Recipient
    raw: pb.ListConsentEventsResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: pb.ListConsentEventsResponse) -> EventPage:
        """An EventPage from a ``ListConsentEventsResponse``."""
        return _from_message(
            cls,
            msg,
            events=tuple(ConsentEvent.from_pb(e) for e in msg.events),
            recipient=Recipient.from_pb(msg.recipient),
        )


@dataclass(frozen=True, slots=True)
class MessageStatus:
    """A message's delivery status (``GetMessageStatus``)."""

    message_id: str
    status: MessageState
    attempts: int
    last_error: str
    provider_message_id: str
    accepted_at: datetime
    updated_at: datetime
    recipient: Recipient
    topic: str
    raw: pb.GetMessageStatusResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: pb.GetMessageStatusResponse) -> MessageStatus:
        """A MessageStatus from a ``GetMessageStatusResponse``."""
        return _from_message(
            cls,
            msg,
            status=_enum_from_proto(MessageState, "MESSAGE_STATUS_", _MESSAGE_NAMES, msg.status),
            accepted_at=ts_to_datetime(msg.accepted_at),
            updated_at=ts_to_datetime(msg.updated_at),
            recipient=Recipient.from_pb(msg.recipient),
        )


@dataclass(frozen=True, slots=True)
class ConsentLinks:
    """Signed opt-out and re-subscribe links for one recipient (``CreateConsentLink``).

    Put ``list_unsubscribe`` and ``list_unsubscribe_post`` into an e-mail's
    ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` headers for RFC 8058
    one-click unsubscribe.
    """

    opt_out_url: str
    resubscribe_url: str
    list_unsubscribe: str
    list_unsubscribe_post: str
    opt_out_token_id: str
    resubscribe_token_id: str
    expires_at: datetime
    recipient: Recipient
    topic: str
    raw: pb.CreateConsentLinkResponse = field(repr=False, compare=False)
    #: With ``short_links=True``: ``<public URL>/l/<code>`` forms of the two links, for
    #: SMS ("" otherwise, or when the recipient was erased).
    short_opt_out_url: str = ""
    short_resubscribe_url: str = ""

    @classmethod
    def from_pb(cls, msg: pb.CreateConsentLinkResponse) -> ConsentLinks:
        """ConsentLinks from a ``CreateConsentLinkResponse``."""
        return _from_message(
            cls,
            msg,
            expires_at=ts_to_datetime(msg.expires_at),
            recipient=Recipient.from_pb(msg.recipient),
        )


# -- ConsentAdminService: API keys and delivery providers ---------------------------------


class ApiKeyRole(enum.StrEnum):
    """What an API key may do (``consent.v1.ApiKeyRole``); see the README's roles table."""

    ADMIN = "admin"
    WRITER = "writer"
    SENDER = "sender"
    READER = "reader"
    UNSPECIFIED = "unspecified"


class DeliveryProviderKind(enum.StrEnum):
    """Which provider delivers a channel's messages (``consent.v1.DeliveryProviderKind``)."""

    LOG = "log"
    WEBHOOK = "webhook"
    WHATSAPP_CLOUD = "whatsapp_cloud"
    UNSPECIFIED = "unspecified"


ApiKeyRoleLike: TypeAlias = ApiKeyRole | str | int
"""A role: ``ApiKeyRole.READER``, ``"reader"``, ``"API_KEY_ROLE_READER"`` or the number."""

DeliveryProviderKindLike: TypeAlias = DeliveryProviderKind | str | int
"""A provider kind: ``DeliveryProviderKind.WEBHOOK``, ``"webhook"`` or the proto number."""


def api_key_role_to_pb(value: ApiKeyRoleLike) -> apb.ApiKeyRole.ValueType:
    """The ``consent.v1.ApiKeyRole`` number for a friendly role value."""
    return apb.ApiKeyRole.ValueType(
        _enum_to_proto(ApiKeyRole, "API_KEY_ROLE_", dict(apb.ApiKeyRole.items()), value, "role")
    )


def provider_kind_from(value: DeliveryProviderKindLike) -> DeliveryProviderKind:
    """The :class:`DeliveryProviderKind` for a friendly kind value."""
    number = _enum_to_proto(
        DeliveryProviderKind,
        "DELIVERY_PROVIDER_KIND_",
        dict(apb.DeliveryProviderKind.items()),
        value,
        "provider kind",
    )
    return _enum_from_proto(
        DeliveryProviderKind,
        "DELIVERY_PROVIDER_KIND_",
        {int(v): k for k, v in apb.DeliveryProviderKind.items()},
        number,
    )


_ROLE_NAMES = {int(v): k for k, v in apb.ApiKeyRole.items()}
_KIND_NAMES = {int(v): k for k, v in apb.DeliveryProviderKind.items()}


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant (``CreateTenant`` / ``GetTenant`` / ``ListTenants``)."""

    tenant_id: str
    display_name: str
    created_at: datetime
    raw: apb.Tenant = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.Tenant) -> Tenant:
        """A Tenant from a ``consent.v1.Tenant``."""
        return cls(msg.tenant_id, msg.display_name, ts_to_datetime(msg.created_at), msg)


@dataclass(frozen=True, slots=True)
class TenantPage:
    """A page of tenants by id (``ListTenants``)."""

    tenants: tuple[Tenant, ...]
    next_page_token: str
    """Pass as ``page_token`` for the next page; empty on the last page."""
    raw: apb.ListTenantsResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.ListTenantsResponse) -> TenantPage:
        """A TenantPage from a ``ListTenantsResponse``."""
        return cls(tuple(Tenant.from_pb(t) for t in msg.tenants), msg.next_page_token, msg)


@dataclass(frozen=True, slots=True)
class DeletedTenant:
    """What ``DeleteTenant`` removed: the tenant as it was, and how many keys it revoked."""

    tenant: Tenant
    api_keys_revoked: int
    raw: apb.DeleteTenantResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.DeleteTenantResponse) -> DeletedTenant:
        """A DeletedTenant from a ``DeleteTenantResponse``."""
        return cls(Tenant.from_pb(msg.tenant), msg.api_keys_revoked, msg)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """The stored description of an API key (never its secret)."""

    key_id: str
    tenant_id: str
    """The key's tenant; ``"*"`` for an operator key."""
    role: ApiKeyRole
    description: str
    created_at: datetime
    created_by: str
    revoked: bool
    revoked_at: datetime | None
    rate_limit_per_second: int
    """0 = the server's default."""
    raw: apb.ApiKey = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.ApiKey) -> ApiKey:
        """An ApiKey from a ``consent.v1.ApiKey``."""
        return _from_message(
            cls,
            msg,
            role=_enum_from_proto(ApiKeyRole, "API_KEY_ROLE_", _ROLE_NAMES, msg.role),
            created_at=ts_to_datetime(msg.created_at),
            revoked_at=_ts_or_none(msg, "revoked_at"),
        )


@dataclass(frozen=True, slots=True)
class RevokedApiKey:
    """The outcome of ``RevokeApiKey``."""

    key: ApiKey
    already_revoked: bool
    """True when the key was revoked before (e.g. a retry after a lost answer)."""
    raw: apb.RevokeApiKeyResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.RevokeApiKeyResponse) -> RevokedApiKey:
        """A RevokedApiKey from a ``RevokeApiKeyResponse``."""
        return cls(ApiKey.from_pb(msg.key), msg.already_revoked, msg)


@dataclass(frozen=True, slots=True)
class ForgetResult:
    """What ``ForgetRecipient`` erased; ``suppressed`` says an opt-out is kept (as a
    keyed hash, never the address) so the person is still never messaged."""

    records_removed: int
    events_removed: int
    idempotency_entries_removed: int
    messages_cancelled: int
    messages_erased: int
    suppressed: bool
    suppressed_topics: tuple[str, ...]
    erasure_id: str
    recipient: Recipient
    other_records_removed: int
    raw: apb.ForgetRecipientResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.ForgetRecipientResponse) -> ForgetResult:
        """A ForgetResult from a ``ForgetRecipientResponse``."""
        return _from_message(
            cls,
            msg,
            suppressed_topics=tuple(msg.suppressed_topics),
            recipient=Recipient.from_pb(msg.recipient),
        )


@dataclass(frozen=True, slots=True)
class DeliveryProviderInfo:
    """A channel's configured delivery provider, without secrets."""

    channel: Channel
    """``Channel.UNSPECIFIED`` = every channel without a provider of its own."""
    kind: DeliveryProviderKind
    url: str
    phone_number_id: str
    timeout_ms: int
    secret_set: bool
    """Whether a write-only secret (signing secret / access token) is stored."""
    raw: apb.DeliveryProviderInfo = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.DeliveryProviderInfo) -> DeliveryProviderInfo:
        """A DeliveryProviderInfo from its message."""
        return _from_message(
            cls,
            msg,
            channel=channel_from_pb(msg.channel),
            kind=_enum_from_proto(
                DeliveryProviderKind, "DELIVERY_PROVIDER_KIND_", _KIND_NAMES, msg.kind
            ),
        )


@dataclass(frozen=True, slots=True)
class WhatsAppWebhook:
    """A tenant's WhatsApp webhook (``SetWhatsAppWebhook`` / ``GetWhatsAppWebhook``);
    never its secrets. Point the Meta app at ``webhook_url`` (or ``webhook_path`` on the
    server's public address)."""

    configured: bool
    webhook_path: str
    webhook_url: str
    """Empty when the server does not know its public URL."""
    app_webhook_path: str
    """The app-level path that routes by phone number id (set answers only)."""
    phone_number_ids: tuple[str, ...]
    waba_id: str
    raw: apb.SetWhatsAppWebhookResponse | apb.GetWhatsAppWebhookResponse = field(
        repr=False, compare=False
    )

    @classmethod
    def from_pb(
        cls, msg: apb.SetWhatsAppWebhookResponse | apb.GetWhatsAppWebhookResponse
    ) -> WhatsAppWebhook:
        """A WhatsAppWebhook from either answer (a set one is configured by definition)."""
        if isinstance(msg, apb.SetWhatsAppWebhookResponse):
            return cls(True, msg.webhook_path, msg.webhook_url, msg.app_webhook_path, (), "", msg)
        return _from_message(
            cls, msg, app_webhook_path="", phone_number_ids=tuple(msg.phone_number_ids)
        )


@dataclass(frozen=True, slots=True)
class UnappliedNotification:
    """A WhatsApp notification item the webhook could not apply (a dead letter).

    Here ``raw`` is the notification's original JSON, as the proto names it; the
    message itself is ``message``.
    """

    id: str
    received_at: datetime
    reason: str
    detail: str
    kind: str
    path: str
    phone_number_id: str
    raw: str
    """The notification item as received (JSON text)."""
    attempts: int
    message: apb.UnappliedNotification = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.UnappliedNotification) -> UnappliedNotification:
        """An UnappliedNotification from its message."""
        # Here ``raw`` is the message's own JSON text field, and the message is ``message``.
        return _from_message(
            cls, msg, received_at=ts_to_datetime(msg.received_at), raw=msg.raw, message=msg
        )


@dataclass(frozen=True, slots=True)
class NotificationPage:
    """A page of dead letters, newest first (``ListUnappliedNotifications``)."""

    notifications: tuple[UnappliedNotification, ...]
    next_page_token: str
    total: int
    raw: apb.ListUnappliedNotificationsResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.ListUnappliedNotificationsResponse) -> NotificationPage:
        """A NotificationPage from its response."""
        items = tuple(UnappliedNotification.from_pb(n) for n in msg.notifications)
        return cls(items, msg.next_page_token, msg.total, msg)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The outcome of ``ReplayUnappliedNotification``: ``applied`` False = still refused
    (kept, with ``notification`` updated)."""

    applied: bool
    notification: UnappliedNotification
    raw: apb.ReplayUnappliedNotificationResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.ReplayUnappliedNotificationResponse) -> ReplayResult:
        """A ReplayResult from its response."""
        return cls(msg.applied, UnappliedNotification.from_pb(msg.notification), msg)


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A key made by ``CreateApiKey``: its stored description and the key itself.

    ``api_key`` (``"ck_<key_id>_<secret>"``) is shown only this once: store it now.
    It is left out of ``repr`` (as is ``raw``, which carries it too), so that logging
    the result does not leak it.
    """

    key: ApiKey
    """The stored description (id, tenant, role...): never the secret."""
    api_key: str = field(repr=False)
    """The key to send as ``authorization: Bearer <api_key>``."""
    raw: apb.CreateApiKeyResponse = field(repr=False, compare=False)

    @property
    def key_id(self) -> str:
        """The key's id (16 hex characters), as ListApiKeys shows it."""
        return self.key.key_id

    @classmethod
    def from_pb(cls, msg: apb.CreateApiKeyResponse) -> CreatedApiKey:
        """A CreatedApiKey from a ``CreateApiKeyResponse``."""
        return cls(key=ApiKey.from_pb(msg.key), api_key=msg.api_key, raw=msg)


@dataclass(frozen=True, slots=True)
class DeploymentHealth:
    """How the deployment keeps consent (``GetDeploymentHealth``, operator keys only)."""

    server_time: datetime
    """The server's clock when it answered: compare with yours for skew."""
    store: str
    """``"embedded"`` (memory, lost on stop), ``"redis"`` or ``"redis_cluster"``."""
    durability_checked: bool
    """False when the store's configuration could not be read (CONFIG GET refused)."""
    durability_problems: tuple[str, ...]
    """What can lose consent (persistence off, an evicting policy); empty = nothing."""
    raw: apb.GetDeploymentHealthResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.GetDeploymentHealthResponse) -> DeploymentHealth:
        """A DeploymentHealth from the answer."""
        return cls(
            ts_to_datetime(msg.server_time),
            msg.store,
            msg.durability_checked,
            tuple(msg.durability_problems),
            msg,
        )


class ChangeWebhookDeliveryStatus(enum.StrEnum):
    """How a change's delivery to an endpoint finished
    (``consent.v1.ChangeWebhookDeliveryStatus``)."""

    DELIVERED = "delivered"
    """The endpoint answered 2xx."""
    DEAD_LETTER = "dead_letter"
    """Every attempt failed (or was refused for good): kept as a dead letter."""
    UNSPECIFIED = "unspecified"


_DELIVERY_STATUS_NAMES = {int(v): k for k, v in apb.ChangeWebhookDeliveryStatus.items()}


@dataclass(frozen=True, slots=True)
class ChangeWebhook:
    """A tenant's change webhook: an endpoint that receives every consent change,
    signed (docs/webhooks.md). Never its secret: ``signing_secret_hint`` is masked."""

    tenant_id: str
    name: str
    url: str
    signing_secret_hint: str
    """``"whsec_…"`` and the secret's last four characters."""
    created_at: datetime
    updated_at: datetime
    status_changes_only: bool
    """True: only status changes and erasures are POSTed."""
    raw: apb.ChangeWebhook = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.ChangeWebhook) -> ChangeWebhook:
        """A ChangeWebhook from its message."""
        return _from_message(
            cls,
            msg,
            created_at=ts_to_datetime(msg.created_at),
            updated_at=ts_to_datetime(msg.updated_at),
        )


@dataclass(frozen=True, slots=True)
class SetChangeWebhookResult:
    """What ``SetChangeWebhook`` stored, and the secret it generated (if it did).

    ``signing_secret`` is set only when the server generated one: shown this once,
    store it now. It is left out of ``repr`` (as is ``raw``, which carries it too)."""

    webhook: ChangeWebhook
    signing_secret: str = field(repr=False)
    """The generated HMAC key; empty when one was given or the stored one was kept."""
    created: bool
    """True when the endpoint is new (it starts at the feed's newest change)."""
    raw: apb.SetChangeWebhookResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.SetChangeWebhookResponse) -> SetChangeWebhookResult:
        """A SetChangeWebhookResult from its response."""
        return cls(ChangeWebhook.from_pb(msg.webhook), msg.signing_secret, msg.created, msg)


@dataclass(frozen=True, slots=True)
class ChangeWebhookDelivery:
    """One change's delivery to an endpoint (the delivery log or a dead letter)."""

    event_id: str
    """The feed event's id (``X-Consent-Event-Id``; redrive a dead letter by it)."""
    status: ChangeWebhookDeliveryStatus
    attempts: int
    last_error: str
    """Why the last failed attempt failed ("http 500", "timeout"...); never a body."""
    http_status: int
    """The last answer's HTTP status (0 = no answer)."""
    latency_ms: int
    finished_at: datetime
    raw: apb.ChangeWebhookDelivery = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.ChangeWebhookDelivery) -> ChangeWebhookDelivery:
        """A ChangeWebhookDelivery from its message."""
        return _from_message(
            cls,
            msg,
            status=_enum_from_proto(
                ChangeWebhookDeliveryStatus,
                "CHANGE_WEBHOOK_DELIVERY_STATUS_",
                _DELIVERY_STATUS_NAMES,
                msg.status,
            ),
            finished_at=ts_to_datetime(msg.finished_at),
        )


@dataclass(frozen=True, slots=True)
class ChangeWebhookDeliveries:
    """An endpoint's delivery log and dead letters, newest first
    (``ListChangeWebhookDeliveries``)."""

    deliveries: tuple[ChangeWebhookDelivery, ...]
    dead_letters: tuple[ChangeWebhookDelivery, ...]
    raw: apb.ListChangeWebhookDeliveriesResponse = field(repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg: apb.ListChangeWebhookDeliveriesResponse) -> ChangeWebhookDeliveries:
        """A ChangeWebhookDeliveries from its response."""
        return cls(
            tuple(ChangeWebhookDelivery.from_pb(d) for d in msg.deliveries),
            tuple(ChangeWebhookDelivery.from_pb(d) for d in msg.dead_letters),
            msg,
        )
