"""Provider delivery receipts ("status callbacks"): what a provider reports after it
accepted a message (delivered, read, failed) updates the message's status.

The HTTP routes that receive them (WhatsApp ``statuses`` webhooks, webhook-provider
call-backs) belong to the HTTP edge; they call ``apply_receipt``. Unknown ids and other
tenants' ids are ignored safely. A failed receipt whose error code means the user opted
out (131050, 21610) also records that opt-out, through the provider-feedback use case
(``domain.feedback``) like a provider's answer to a delivery.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable

from consent_server.domain.delivery import (
    ProviderConfigStore,
    ProviderKind,
    ReceiptOutcome,
    ReceiptStatus,
)
from consent_server.domain.feedback import (
    FeedbackPath,
    ProviderFeedback,
    ProviderOptOut,
    opt_out_scope,
)
from consent_server.domain.ports import ReceiptStore
from consent_server.domain.whatsapp import StatusHandler, StatusReceipt

from .providers.webhook import verify

log = logging.getLogger("consent_server.delivery")


async def apply_receipt(
    receipts: ReceiptStore,
    feedback: ProviderFeedback,
    tenant_id: str,
    status: ReceiptStatus,
    *,
    message_id: str = "",
    provider_message_id: str = "",
    error_code: int | None = None,
    error: str = "",
    provider: str = "provider",
) -> ReceiptOutcome:
    """Apply one receipt, found by our message id or the provider's; see the module doc."""
    detail = error or (f"error {error_code}" if error_code is not None else "")
    if status is ReceiptStatus.FAILED and error_code is not None and str(error_code) not in detail:
        detail = f"error {error_code}: {detail}"
    outcome, ours = await receipts.apply_receipt(
        tenant_id,
        status,
        message_id=message_id,
        provider_message_id=provider_message_id,
        error=f"{provider} receipt: {detail}" if status is ReceiptStatus.FAILED else "",
    )
    if outcome is ReceiptOutcome.UNKNOWN:
        log.info("receipt for an unknown message ignored", extra={"tenant": tenant_id})
        return outcome
    scope = opt_out_scope(error_code) if status is ReceiptStatus.FAILED else None
    if scope is not None:
        await feedback.opted_out(
            ProviderOptOut(
                tenant_id=tenant_id,
                message_id=ours,
                provider=provider,
                topic=scope,
                detail=detail,
                path=FeedbackPath.RECEIPT,
            )
        )
    return outcome


_WHATSAPP_STATUSES = {
    "delivered": ReceiptStatus.DELIVERED,
    "read": ReceiptStatus.READ,
    "failed": ReceiptStatus.FAILED,
}


def whatsapp_status_handler(receipts: ReceiptStore, feedback: ProviderFeedback) -> StatusHandler:
    """The HTTP edge's handler for WhatsApp ``statuses`` webhooks: apply them as receipts.

    ``sent`` (and any other status) says nothing new and is ignored. Error codes go
    into the message's last error only: the edge itself records the opt-out that a
    131050 means (with an event id of its own), so passing the code here would record
    it twice.
    """

    async def handle(receipt: StatusReceipt) -> None:
        status = _WHATSAPP_STATUSES.get(receipt.status)
        if status is None:
            return
        await apply_receipt(
            receipts,
            feedback,
            receipt.tenant_id,
            status,
            provider_message_id=receipt.provider_message_id,
            error=", ".join(f"error {code}" for code in receipt.error_codes),
            provider="whatsapp_cloud",
        )

    return handle


# -- webhook-provider call-backs ---------------------------------------------------------

#: How old a signed call-back may be: older ones are refused as possible replays.
CALLBACK_MAX_AGE_S = 300


class CallbackRefused(Exception):
    """A webhook-provider call-back that is not applied; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class WebhookCallbacks:
    """Delivery receipts POSTed back by a tenant's webhook provider.

    The call-back is signed exactly like our deliveries to it (``X-Consent-Timestamp``
    and ``X-Consent-Signature: v1=HMAC-SHA256(secret, "<ts>.<body>")``) with the
    secret of one of the tenant's webhook providers, so only that endpoint can send it.
    Body: ``{"message_id": "m…", "status": "delivered"|"read"|"failed",
    "error_code": 21610, "error": "…"}`` (``provider_message_id`` may stand in for
    ``message_id``). A 21610 / 131050 failure also records the opt-out.
    """

    def __init__(
        self,
        receipts: ReceiptStore,
        providers: ProviderConfigStore,
        feedback: ProviderFeedback,
        *,
        tenant_lookup: Callable[[str], Awaitable[object | None]] | None = None,
    ) -> None:
        self._receipts = receipts
        self._providers = providers
        self._feedback = feedback
        # A deleted tenant's configuration is gone too, so no call-back verifies; the
        # lookup makes an unknown tenant the same 404 as the rest of the edge.
        self._tenant_lookup = tenant_lookup

    async def receive(
        self, tenant_id: str, body: bytes, timestamp: str | None, signature: str | None
    ) -> ReceiptOutcome:
        """Verify and apply one call-back; CallbackRefused says why not.

        Raises StoreUnavailable (answer 503: the provider should retry) when the store
        is unreachable."""
        if not timestamp or not signature:
            raise CallbackRefused(401, "missing X-Consent-Timestamp or X-Consent-Signature")
        # At most 12 digits: int() of a 5,000-digit header would raise, not refuse.
        if (
            not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12)
            or abs(time.time() - int(timestamp)) > CALLBACK_MAX_AGE_S
        ):
            raise CallbackRefused(401, "timestamp missing, malformed or too old")
        if self._tenant_lookup is not None and await self._tenant_lookup(tenant_id) is None:
            # The same answer as a tenant without a webhook provider: nothing changes.
            raise CallbackRefused(404, "no webhook provider is configured for this tenant")
        webhook_secrets = [
            c.secret
            for c in (await self._providers.providers(tenant_id)).values()
            if c.kind is ProviderKind.WEBHOOK and c.secret
        ]
        if not webhook_secrets:
            raise CallbackRefused(404, "no webhook provider is configured for this tenant")
        if not any(verify(s, timestamp, body, signature) for s in webhook_secrets):
            raise CallbackRefused(401, "bad signature")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # also huge integers and deep nesting
            raise CallbackRefused(400, "body is not JSON") from None
        if not isinstance(payload, dict):
            raise CallbackRefused(400, "body must be a JSON object")
        status = _WEBHOOK_STATUSES.get(str(payload.get("status", "")))
        message_id = payload.get("message_id", "")
        provider_message_id = payload.get("provider_message_id", "")
        code = payload.get("error_code")
        error = payload.get("error", "")
        if status is None:
            raise CallbackRefused(400, "status must be delivered, read or failed")
        if not isinstance(message_id, str) or not isinstance(provider_message_id, str):
            raise CallbackRefused(400, "message_id and provider_message_id must be strings")
        if not (message_id or provider_message_id):
            raise CallbackRefused(400, "message_id or provider_message_id is required")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise CallbackRefused(400, "error_code must be an integer")
        if not isinstance(error, str):
            raise CallbackRefused(400, "error must be a string")
        return await apply_receipt(
            self._receipts,
            self._feedback,
            tenant_id,
            status,
            message_id=message_id[:128],
            provider_message_id=provider_message_id[:256],
            error_code=code,
            error=error[:500],
            provider="webhook",
        )


_WEBHOOK_STATUSES = dict(_WHATSAPP_STATUSES)
