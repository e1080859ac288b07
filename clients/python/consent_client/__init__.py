"""Thin Python client for the consent authority (consent.v1).

Usage::

    from consent_client import ConsentClient, RecipientOptedOut

    with ConsentClient("127.0.0.1:50051", api_key="...") as client:
        decision = client.check_consent("acme", "whatsapp", "+919876543210", "marketing")
        try:
            client.send_if_allowed("acme", "whatsapp", "+919876543210", "marketing", text="Hi")
        except RecipientOptedOut as blocked:
            print(blocked.since, blocked.source)

:class:`AsyncConsentClient` is the asyncio twin. Errors are the typed exceptions of
the hierarchy documented in :mod:`consent_client._errors` (all subclasses of
:class:`ConsentError`). The generated protobuf modules live in ``consent_client.v1``.
"""

from ._async_client import AsyncConsentClient, AsyncTenantConsentClient
from ._calls import Backoff
from ._client import ConsentClient, TenantConsentClient
from ._errors import (
    AlreadyExists,
    ClientValidationError,
    ConsentError,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    OptInRequired,
    OtherError,
    PermissionDenied,
    RecipientOptedOut,
    ResourceExhausted,
    SendBlocked,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from ._types import (
    ApiKey,
    ApiKeyRole,
    BatchDecision,
    BatchError,
    BatchItem,
    ChangeResult,
    ChangeWebhook,
    ChangeWebhookDeliveries,
    ChangeWebhookDelivery,
    ChangeWebhookDeliveryStatus,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentLinks,
    ConsentStatus,
    CreatedApiKey,
    Decision,
    DeletedTenant,
    DeliveryProviderInfo,
    DeliveryProviderKind,
    DeploymentHealth,
    EventPage,
    ForgetResult,
    InboundAction,
    InboundResult,
    MessageState,
    MessageStatus,
    NotificationPage,
    Payload,
    Recipient,
    ReplayResult,
    RevokedApiKey,
    Scope,
    SendResult,
    SetChangeWebhookResult,
    Source,
    Template,
    Tenant,
    TenantPage,
    UnappliedNotification,
    WhatsAppWebhook,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "ApiKey",
    "ApiKeyRole",
    "AsyncConsentClient",
    "AsyncTenantConsentClient",
    "Backoff",
    "BatchDecision",
    "BatchError",
    "BatchItem",
    "ChangeResult",
    "ChangeWebhook",
    "ChangeWebhookDeliveries",
    "ChangeWebhookDelivery",
    "ChangeWebhookDeliveryStatus",
    "Channel",
    "ClientValidationError",
    "ConsentAction",
    "ConsentClient",
    "ConsentError",
    "ConsentEvent",
    "ConsentLinks",
    "ConsentStatus",
    "CreatedApiKey",
    "DeadlineExceeded",
    "Decision",
    "DeletedTenant",
    "DeliveryProviderInfo",
    "DeliveryProviderKind",
    "DeploymentHealth",
    "EventPage",
    "FailedPrecondition",
    "ForgetResult",
    "InboundAction",
    "InboundResult",
    "InternalError",
    "InvalidArgument",
    "MessageState",
    "MessageStatus",
    "NotFound",
    "NotificationPage",
    "OptInRequired",
    "OtherError",
    "Payload",
    "PermissionDenied",
    "Recipient",
    "RecipientOptedOut",
    "ReplayResult",
    "ResourceExhausted",
    "RevokedApiKey",
    "Scope",
    "SendBlocked",
    "SendResult",
    "SetChangeWebhookResult",
    "Source",
    "Template",
    "Tenant",
    "TenantConsentClient",
    "TenantPage",
    "UnappliedNotification",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "WhatsAppWebhook",
    "__version__",
]
