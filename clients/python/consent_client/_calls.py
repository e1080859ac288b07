"""What each RPC sends, whether it may be retried, and how its answer is read.

Shared by the sync and asyncio clients, which only differ in how they wait.
"""

from __future__ import annotations

import enum
import itertools
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.wrappers_pb2 import Int32Value, StringValue

from ._errors import client_validation_error, error_from_status
from ._tenant import checked_tenant
from ._types import (
    ApiKey,
    ApiKeyRoleLike,
    BatchDecision,
    BatchError,
    BatchItem,
    ChangeResult,
    ChangeWebhook,
    ChangeWebhookDeliveries,
    ChannelLike,
    ConsentLinks,
    CreatedApiKey,
    Decision,
    DeletedTenant,
    DeliveryProviderInfo,
    DeliveryProviderKind,
    DeliveryProviderKindLike,
    DeploymentHealth,
    EventPage,
    ForgetResult,
    InboundResult,
    MessageStatus,
    NotificationPage,
    Payload,
    RecipientLike,
    ReplayResult,
    RevokedApiKey,
    SendResult,
    SetChangeWebhookResult,
    SourceLike,
    Template,
    Tenant,
    TenantPage,
    WhatsAppWebhook,
    api_key_role_to_pb,
    channel_to_pb,
    datetime_to_ts,
    provider_kind_from,
    recipient_to_pb,
    source_to_pb,
)
from .v1 import admin_pb2 as apb
from .v1 import consent_pb2 as pb

T = TypeVar("T")


class RetryMode(enum.Enum):
    """Which failures a call may be retried on without changing its effect."""

    NEVER = "never"
    """Not idempotent: a retry could apply it twice."""
    IDEMPOTENT_WRITE = "idempotent_write"
    """A write carrying its idempotency key: retried on UNAVAILABLE."""
    READ = "read"
    """Read-only: retried on UNAVAILABLE and DEADLINE_EXCEEDED."""

    def retries_on(self, code: grpc.StatusCode) -> bool:
        """True when a failure with ``code`` may be retried in this mode."""
        if self is RetryMode.READ:
            return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        if self is RetryMode.IDEMPOTENT_WRITE:
            return code is grpc.StatusCode.UNAVAILABLE
        return False


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, honouring the server's RetryInfo hint."""

    initial: float = 0.1
    maximum: float = 2.0
    multiplier: float = 2.0
    max_hint: float = 30.0

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (``attempt`` from 0)."""
        if hint is not None and hint > 0:
            return min(hint, self.max_hint) * random.uniform(1.0, 1.2)
        ceiling = min(self.maximum, self.initial * self.multiplier**attempt)
        return ceiling * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One RPC to make: the request, its retry mode and its parser.

    The request names the RPC: buf lint (RPC_REQUEST_STANDARD_NAME) holds each request
    message to ``<Method>Request``, and ConsentAdminService's messages live in its own
    admin.proto, so a builder states the method once, in the message it builds.
    """

    request: ProtoMessage
    mode: RetryMode
    parse: Callable[[Any], T]

    @property
    def method(self) -> str:
        """The RPC's name and stub attribute: ``CheckConsentRequest`` -> ``CheckConsent``."""
        return self.request.DESCRIPTOR.name.removesuffix("Request")

    @property
    def admin(self) -> bool:
        """True for a ``consent.v1.ConsentAdminService`` method (a message of admin.proto)."""
        return self.request.DESCRIPTOR.file.name == apb.DESCRIPTOR.name


def new_event_id() -> str:
    """A fresh event id for OptOut/OptIn, so that retries are idempotent."""
    return "ev_" + uuid.uuid4().hex


def new_idempotency_key() -> str:
    """A fresh idempotency key for SendIfAllowed, so that retries never double-queue."""
    return "idem_" + uuid.uuid4().hex


def _recipient(channel: ChannelLike, address: str) -> pb.Recipient:
    if not isinstance(address, str) or not address.strip():
        raise client_validation_error("the recipient's address is required", "recipient.address")
    return pb.Recipient(channel=channel_to_pb(channel), address=address)


def check_consent(
    tenant_id: str, channel: ChannelLike, address: str, topic: str, at: datetime | None = None
) -> Call[Decision]:
    """CheckConsent: read-only; ``at`` asks about that instant."""
    req = pb.CheckConsentRequest(
        tenant_id=tenant_id, recipient=_recipient(channel, address), topic=topic
    )
    if at is not None:
        req.at.CopyFrom(datetime_to_ts(at, "at"))
    return Call(req, RetryMode.READ, Decision.from_pb)


def batch_check_consent(
    tenant_id: str, recipients: Iterable[RecipientLike], topic: str, at: datetime | None = None
) -> Call[list[BatchItem]]:
    """BatchCheckConsent: read-only; per-item errors become typed exceptions."""
    req = pb.BatchCheckConsentRequest(
        tenant_id=tenant_id, topic=topic, recipients=[recipient_to_pb(r) for r in recipients]
    )
    if at is not None:
        req.at.CopyFrom(datetime_to_ts(at, "at"))

    def parse(resp: pb.BatchCheckConsentResponse) -> list[BatchItem]:
        items: list[BatchItem] = []
        for i, r in enumerate(resp.results):
            if r.WhichOneof("result") == "decision":
                items.append(BatchDecision(i, Decision.from_pb(r.decision)))
            else:
                items.append(BatchError(i, error_from_status(r.error)))
        return items

    return Call(req, RetryMode.READ, parse)


def change(
    method: str,
    tenant_id: str,
    channel: ChannelLike,
    address: str,
    topic: str,
    source: SourceLike,
    evidence: str,
    occurred_at: datetime | None,
    event_id: str | None,
) -> Call[ChangeResult]:
    """OptOut / OptIn: an event_id is generated when none is given, so retries are safe."""
    fields: dict[str, Any] = {
        "tenant_id": tenant_id,
        "recipient": _recipient(channel, address),
        "topic": topic,
        "source": source_to_pb(source),
        "evidence": evidence,
        "event_id": event_id if event_id is not None else new_event_id(),
    }
    if occurred_at is not None:
        fields["occurred_at"] = datetime_to_ts(occurred_at, "occurred_at")
    req: ProtoMessage = (
        pb.OptOutRequest(**fields) if method == "OptOut" else pb.OptInRequest(**fields)
    )
    mode = RetryMode.IDEMPOTENT_WRITE if fields["event_id"] else RetryMode.NEVER
    return Call(req, mode, ChangeResult.from_pb)


def message(
    text: str | None,
    template: Template | pb.TemplateMessage | None,
    payload: Payload | pb.Payload | None,
) -> pb.Message:
    """The ``consent.v1.Message`` for exactly one of text, template and payload."""
    given = [x for x in (text, template, payload) if x is not None]
    if len(given) != 1:
        raise client_validation_error(
            "give exactly one of text=, template= and payload=", "message"
        )
    if text is not None:
        return pb.Message(text=text)
    if template is not None:
        return pb.Message(
            template=template if isinstance(template, pb.TemplateMessage) else template.to_pb()
        )
    assert payload is not None
    return pb.Message(payload=payload if isinstance(payload, pb.Payload) else payload.to_pb())


def send_if_allowed(
    tenant_id: str,
    channel: ChannelLike,
    address: str,
    topic: str,
    content: pb.Message,
    idempotency_key: str | None,
    auto_idempotency_key: bool,
    not_after: datetime | None,
    metadata: Mapping[str, str] | None,
) -> Call[SendResult]:
    """SendIfAllowed: retried only when it carries an idempotency key (generated by default)."""
    key = idempotency_key
    if key is None and auto_idempotency_key:
        key = new_idempotency_key()
    req = pb.SendIfAllowedRequest(
        tenant_id=tenant_id,
        recipient=_recipient(channel, address),
        topic=topic,
        message=content,
        idempotency_key=key or "",
        metadata=dict(metadata or {}),
    )
    if not_after is not None:
        req.not_after.CopyFrom(datetime_to_ts(not_after, "not_after"))
    mode = RetryMode.IDEMPOTENT_WRITE if key else RetryMode.NEVER
    used = key or ""
    return Call(req, mode, lambda r: SendResult.from_pb(r, used))


def handle_inbound_message(
    tenant_id: str,
    channel: ChannelLike,
    address: str,
    text: str,
    button_payload: str,
    provider_message_id: str,
    received_at: datetime | None,
) -> Call[InboundResult]:
    """HandleInboundMessage: idempotent by provider_message_id, so retried on UNAVAILABLE."""
    req = pb.HandleInboundMessageRequest(
        tenant_id=tenant_id,
        recipient=_recipient(channel, address),
        text=text,
        button_payload=button_payload,
        provider_message_id=provider_message_id,
    )
    if received_at is not None:
        req.received_at.CopyFrom(datetime_to_ts(received_at, "received_at"))
    mode = RetryMode.IDEMPOTENT_WRITE if provider_message_id else RetryMode.NEVER
    return Call(req, mode, InboundResult.from_pb)


def list_consent_events(
    tenant_id: str, channel: ChannelLike, address: str, page_size: int, page_token: str
) -> Call[EventPage]:
    """ListConsentEvents: read-only."""
    req = pb.ListConsentEventsRequest(
        tenant_id=tenant_id,
        recipient=_recipient(channel, address),
        page_size=page_size,
        page_token=page_token,
    )
    return Call(req, RetryMode.READ, EventPage.from_pb)


def get_message_status(tenant_id: str, message_id: str) -> Call[MessageStatus]:
    """GetMessageStatus: read-only."""
    req = pb.GetMessageStatusRequest(tenant_id=tenant_id, message_id=message_id)
    return Call(req, RetryMode.READ, MessageStatus.from_pb)


# -- ConsentAdminService: tenant settings -------------------------------------------------

SettingsLike = apb.TenantSettings | Mapping[str, Any]


def get_tenant_settings(tenant_id: str) -> Call[apb.TenantSettings]:
    """GetTenantSettings: read-only."""
    req = apb.GetTenantSettingsRequest(tenant_id=tenant_id)
    return Call(req, RetryMode.READ, lambda r: r)


def update_tenant_settings(
    tenant_id: str,
    settings: SettingsLike,
    update_mask: Iterable[str] | None,
    version: int | None = None,
) -> Call[apb.TenantSettings]:
    """UpdateTenantSettings: ``settings`` as a message or a dict in the proto's JSON
    form; without ``update_mask`` a dict's top-level keys are the mask. ``version`` (the
    one read) makes it conditional. Setting fields to given values is idempotent, so it
    is retried on UNAVAILABLE (a conditional one then fails with ABORTED if its first
    attempt was applied: read again)."""
    if isinstance(settings, apb.TenantSettings):
        msg = settings
        if update_mask is None:
            raise client_validation_error(
                "update_mask is required when settings is a TenantSettings message", "update_mask"
            )
    else:
        try:
            msg = json_format.ParseDict(dict(settings), apb.TenantSettings())
        except json_format.ParseError as exc:
            raise client_validation_error(f"settings: {exc}", "settings") from None
        if update_mask is None:
            update_mask = list(settings)
    paths = [_snake(p) for p in update_mask]
    req = apb.UpdateTenantSettingsRequest(
        tenant_id=tenant_id, settings=msg, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    if version is not None:
        req.version = version
    return Call(req, RetryMode.IDEMPOTENT_WRITE, lambda r: r)


def create_tenant(tenant_id: str, display_name: str) -> Call[Tenant]:
    """CreateTenant: a retry after a lost answer fails with ALREADY_EXISTS, so it is
    never retried automatically."""
    req = apb.CreateTenantRequest(tenant_id=tenant_id, display_name=display_name)
    return Call(req, RetryMode.NEVER, Tenant.from_pb)


def get_tenant(tenant_id: str) -> Call[Tenant]:
    """GetTenant: read-only."""
    req = apb.GetTenantRequest(tenant_id=tenant_id)
    return Call(req, RetryMode.READ, Tenant.from_pb)


def list_tenants(page_size: int, page_token: str) -> Call[TenantPage]:
    """ListTenants: read-only."""
    req = apb.ListTenantsRequest(page_size=page_size, page_token=page_token)
    return Call(req, RetryMode.READ, TenantPage.from_pb)


def delete_tenant(tenant_id: str) -> Call[DeletedTenant]:
    """DeleteTenant: a retry after a lost answer fails with NOT_FOUND, so never retried."""
    req = apb.DeleteTenantRequest(tenant_id=tenant_id)
    return Call(req, RetryMode.NEVER, DeletedTenant.from_pb)


def _snake(path: str) -> str:
    """``businessName`` (JSON spelling) -> ``business_name``; snake_case passes through."""
    return "".join("_" + c.lower() if c.isupper() else c for c in path)


def create_consent_link(
    tenant_id: str,
    channel: ChannelLike,
    address: str,
    topic: str,
    ttl_seconds: int,
    short_links: bool = False,
) -> Call[ConsentLinks]:
    """CreateConsentLink: mints tokens, so it is retried like a read (with short links
    a retry stores fresh codes; the unused ones expire unseen)."""
    req = pb.CreateConsentLinkRequest(
        tenant_id=tenant_id,
        recipient=_recipient(channel, address),
        topic=topic,
        ttl_seconds=ttl_seconds,
        short_links=short_links,
    )
    return Call(req, RetryMode.READ, ConsentLinks.from_pb)


# -- ConsentAdminService: API keys and erasure --------------------------------------------


def create_api_key(
    tenant_id: str, role: ApiKeyRoleLike, description: str, rate_limit_per_second: int
) -> Call[CreatedApiKey]:
    """CreateApiKey: NEVER retried. The request carries no idempotency key, so a retry
    after a lost answer would mint a second, live key the caller never sees."""
    req = apb.CreateApiKeyRequest(
        tenant_id=tenant_id,
        role=api_key_role_to_pb(role),
        description=description,
        rate_limit_per_second=rate_limit_per_second,
    )
    return Call(req, RetryMode.NEVER, CreatedApiKey.from_pb)


def list_api_keys(tenant_id: str, include_revoked: bool) -> Call[list[ApiKey]]:
    """ListApiKeys: read-only."""
    req = apb.ListApiKeysRequest(tenant_id=tenant_id, include_revoked=include_revoked)
    return Call(req, RetryMode.READ, lambda r: [ApiKey.from_pb(k) for k in r.keys])


def revoke_api_key(tenant_id: str, key_id: str) -> Call[RevokedApiKey]:
    """RevokeApiKey: revoking twice leaves the key revoked, so it is retried on UNAVAILABLE
    (a retry after a lost answer reports ``already_revoked=True``)."""
    req = apb.RevokeApiKeyRequest(tenant_id=tenant_id, key_id=key_id)
    return Call(req, RetryMode.IDEMPOTENT_WRITE, RevokedApiKey.from_pb)


def forget_recipient(tenant_id: str, channel: ChannelLike, address: str) -> Call[ForgetResult]:
    """ForgetRecipient: erasing again finds nothing more to erase and keeps the tombstone,
    so it is retried on UNAVAILABLE (the counts are then those of the last attempt)."""
    req = apb.ForgetRecipientRequest(tenant_id=tenant_id, recipient=_recipient(channel, address))
    return Call(req, RetryMode.IDEMPOTENT_WRITE, ForgetResult.from_pb)


# -- ConsentAdminService: delivery providers ----------------------------------------------


def delivery_provider(
    kind: DeliveryProviderKindLike,
    channel: ChannelLike,
    url: str,
    signing_secret: str,
    phone_number_id: str,
    access_token: str,
    timeout_ms: int,
) -> apb.DeliveryProvider:
    """The ``consent.v1.DeliveryProvider`` for plain values. ``url`` is the webhook URL or
    the WhatsApp Cloud API base URL; a secret or option of another kind is refused here
    rather than silently dropped."""
    which = provider_kind_from(kind)
    msg = apb.DeliveryProvider(channel=channel_to_pb(channel))
    extra: dict[str, object] = {
        "signing_secret": signing_secret,
        "phone_number_id": phone_number_id,
        "access_token": access_token,
    }
    if which is DeliveryProviderKind.LOG:
        extra.update(url=url, timeout_ms=timeout_ms)
        msg.log.SetInParent()
    elif which is DeliveryProviderKind.WEBHOOK:
        msg.webhook.CopyFrom(
            apb.WebhookProvider(url=url, signing_secret=signing_secret, timeout_ms=timeout_ms)
        )
        del extra["signing_secret"]
    elif which is DeliveryProviderKind.WHATSAPP_CLOUD:
        msg.whatsapp_cloud.CopyFrom(
            apb.WhatsAppCloudProvider(
                base_url=url,
                phone_number_id=phone_number_id,
                access_token=access_token,
                timeout_ms=timeout_ms,
            )
        )
        del extra["phone_number_id"], extra["access_token"]
    else:
        raise client_validation_error(
            "provider kind must be 'log', 'webhook' or 'whatsapp_cloud'", "provider"
        )
    misplaced = sorted(name for name, value in extra.items() if value)
    if misplaced:
        verb = "does" if len(misplaced) == 1 else "do"
        raise client_validation_error(
            f"{', '.join(misplaced)} {verb} not apply to a {which.value!r} provider"
        )
    return msg


def set_delivery_provider(
    tenant_id: str, provider: apb.DeliveryProvider
) -> Call[DeliveryProviderInfo]:
    """SetDeliveryProvider: replaces the channel's provider with the given one, so a
    retry sets the same value again: retried on UNAVAILABLE."""
    req = apb.SetDeliveryProviderRequest(tenant_id=tenant_id, provider=provider)
    return Call(req, RetryMode.IDEMPOTENT_WRITE, lambda r: DeliveryProviderInfo.from_pb(r.provider))


def get_delivery_providers(tenant_id: str) -> Call[list[DeliveryProviderInfo]]:
    """GetDeliveryProviders: read-only."""
    req = apb.GetDeliveryProvidersRequest(tenant_id=tenant_id)
    return Call(
        req, RetryMode.READ, lambda r: [DeliveryProviderInfo.from_pb(p) for p in r.providers]
    )


# -- ConsentAdminService: WhatsApp webhook ------------------------------------------------


def set_whatsapp_webhook(
    tenant_id: str,
    verify_token: str,
    app_secret: str,
    phone_number_ids: Iterable[str],
    waba_id: str = "",
) -> Call[WhatsAppWebhook]:
    """SetWhatsAppWebhook: replaces the settings with the given ones: retried on
    UNAVAILABLE."""
    req = apb.SetWhatsAppWebhookRequest(
        tenant_id=tenant_id,
        verify_token=verify_token,
        app_secret=app_secret,
        phone_number_ids=list(phone_number_ids),
        waba_id=waba_id,
    )
    return Call(req, RetryMode.IDEMPOTENT_WRITE, WhatsAppWebhook.from_pb)


def get_whatsapp_webhook(tenant_id: str) -> Call[WhatsAppWebhook]:
    """GetWhatsAppWebhook: read-only."""
    req = apb.GetWhatsAppWebhookRequest(tenant_id=tenant_id)
    return Call(req, RetryMode.READ, WhatsAppWebhook.from_pb)


# -- ConsentAdminService: change webhooks -------------------------------------------------


def set_change_webhook(
    tenant_id: str, name: str, url: str, signing_secret: str, status_changes_only: bool
) -> Call[SetChangeWebhookResult]:
    """SetChangeWebhook: never retried, as consentctl: a retry after a lost answer that
    had generated a secret would keep it without showing it."""
    req = apb.SetChangeWebhookRequest(
        tenant_id=tenant_id,
        name=name,
        url=url,
        signing_secret=signing_secret,
        status_changes_only=status_changes_only,
    )
    return Call(req, RetryMode.NEVER, SetChangeWebhookResult.from_pb)


def get_change_webhook(tenant_id: str, name: str) -> Call[ChangeWebhook]:
    """GetChangeWebhook: read-only."""
    req = apb.GetChangeWebhookRequest(tenant_id=tenant_id, name=name)
    return Call(req, RetryMode.READ, lambda r: ChangeWebhook.from_pb(r.webhook))


def list_change_webhooks(tenant_id: str) -> Call[list[ChangeWebhook]]:
    """ListChangeWebhooks: read-only."""
    req = apb.ListChangeWebhooksRequest(tenant_id=tenant_id)
    return Call(req, RetryMode.READ, lambda r: [ChangeWebhook.from_pb(w) for w in r.webhooks])


def delete_change_webhook(tenant_id: str, name: str) -> Call[bool]:
    """DeleteChangeWebhook: deleting twice leaves nothing, so it is retried on
    UNAVAILABLE (a retry after a lost answer reports False)."""
    req = apb.DeleteChangeWebhookRequest(tenant_id=tenant_id, name=name)
    return Call(req, RetryMode.IDEMPOTENT_WRITE, lambda r: r.deleted)


def list_change_webhook_deliveries(
    tenant_id: str, name: str, limit: int
) -> Call[ChangeWebhookDeliveries]:
    """ListChangeWebhookDeliveries: read-only."""
    req = apb.ListChangeWebhookDeliveriesRequest(tenant_id=tenant_id, name=name, limit=limit)
    return Call(req, RetryMode.READ, ChangeWebhookDeliveries.from_pb)


def redrive_change_webhook_dead_letter(tenant_id: str, name: str, event_id: str) -> Call[bool]:
    """RedriveChangeWebhookDeadLetter: queueing the same dead letter again sends the same
    event id (receivers deduplicate by it), so it is retried on UNAVAILABLE."""
    req = apb.RedriveChangeWebhookDeadLetterRequest(
        tenant_id=tenant_id, name=name, event_id=event_id
    )
    return Call(req, RetryMode.IDEMPOTENT_WRITE, lambda r: r.queued)


# grpc.health.v1 without a dependency on grpcio-health-checking: HealthCheckRequest is
# one string field 1 and HealthCheckResponse one enum (varint) field 1, the same wire
# format as the StringValue and Int32Value wrappers.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def health_request(service: str) -> bytes:
    """A serialized HealthCheckRequest for ``service`` ("" = the whole server)."""
    return StringValue(value=service).SerializeToString()


def health_status(data: bytes) -> str:
    """The status name in a serialized HealthCheckResponse."""
    value = Int32Value.FromString(data).value
    return HEALTH_STATUS.get(value, f"STATUS_{value}")


def get_deployment_health() -> Call[DeploymentHealth]:
    """GetDeploymentHealth: read-only."""
    req = apb.GetDeploymentHealthRequest()
    return Call(req, RetryMode.READ, DeploymentHealth.from_pb)


def delete_whatsapp_webhook(tenant_id: str) -> Call[bool]:
    """DeleteWhatsAppWebhook: deleting twice leaves nothing, so it is retried on
    UNAVAILABLE (a retry after a lost answer reports False)."""
    req = apb.DeleteWhatsAppWebhookRequest(tenant_id=tenant_id)
    return Call(req, RetryMode.IDEMPOTENT_WRITE, lambda r: r.deleted)


def list_unapplied_notifications(
    tenant_id: str, page_size: int = 0, page_token: str = ""
) -> Call[NotificationPage]:
    """ListUnappliedNotifications: read-only."""
    req = apb.ListUnappliedNotificationsRequest(
        tenant_id=tenant_id, page_size=page_size, page_token=page_token
    )
    return Call(req, RetryMode.READ, NotificationPage.from_pb)


def replay_unapplied_notification(tenant_id: str, notification_id: str) -> Call[ReplayResult]:
    """ReplayUnappliedNotification: the first delivery's event ids make a repeat a
    duplicate, so it is retried on UNAVAILABLE."""
    req = apb.ReplayUnappliedNotificationRequest(tenant_id=tenant_id, id=notification_id)
    return Call(req, RetryMode.IDEMPOTENT_WRITE, ReplayResult.from_pb)


def discard_unapplied_notification(tenant_id: str, notification_id: str) -> Call[bool]:
    """DiscardUnappliedNotification: not retried (a repeat would answer NOT_FOUND)."""
    req = apb.DiscardUnappliedNotificationRequest(tenant_id=tenant_id, id=notification_id)
    return Call(req, RetryMode.NEVER, lambda r: r.discarded)


def import_messages(
    tenant_id: str,
    batches: Iterable[Iterable[apb.ImportRecord]],
    *,
    opt_ins_have_proof: bool,
    dry_run: bool,
) -> Iterator[apb.ImportConsentRequest]:
    """The messages of an ImportConsent stream: the options in the first, then one
    message per batch (at most 1,000 records each). Lazy: memory stays one batch. The
    tenant is checked now, not when gRPC's thread first pulls from the stream."""
    checked_tenant(tenant_id, "tenant_id")
    first = apb.ImportConsentRequest(
        tenant_id=tenant_id, opt_ins_have_proof=opt_ins_have_proof, dry_run=dry_run
    )
    return itertools.chain([first], (apb.ImportConsentRequest(records=list(b)) for b in batches))


def export_request(
    tenant_id: str,
    *,
    channel: ChannelLike | None,
    topic: str,
    status: str,
    updated_since: datetime | None,
) -> apb.ExportConsentRequest:
    """An ExportConsentRequest; ``status`` "", "opted_in" or "opted_out"."""
    checked_tenant(tenant_id, "tenant_id")
    req = apb.ExportConsentRequest(tenant_id=tenant_id, topic=topic)
    if channel is not None:
        req.channel = channel_to_pb(channel)
    if status:
        req.status = pb.ConsentStatus.Value("CONSENT_STATUS_" + status.upper())
    if updated_since is not None:
        req.updated_since.CopyFrom(datetime_to_ts(updated_since, "updated_since"))
    return req
