"""Provider delivery receipts ("status callbacks"): what a provider reports after it
accepted a message (delivered, read, failed) updates the message's status.

The HTTP routes that receive them (WhatsApp ``statuses`` webhooks, webhook-provider
call-backs) belong to the HTTP edge (SPEC §12); they call ``apply_receipt``. Unknown
ids and other tenants' ids are ignored safely. A failed receipt whose error code means
the user opted out (131050, 21610) also records that opt-out with SOURCE_PROVIDER.
"""

from __future__ import annotations

import json
import logging
import time

from consent_server.domain.delivery import ProviderKind, ReceiptOutcome, ReceiptStatus
from consent_server.domain.errors import IdConflict
from consent_server.domain.masking import mask_address
from consent_server.domain.model import Action, ConsentEventInput, Source
from consent_server.domain.whatsapp import StatusHandler, StatusReceipt
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.repository import RedisConsentStore

from . import metrics as m
from .providers.base import OPT_OUT_CODES
from .providers.webhook import verify

log = logging.getLogger("consent_server.delivery")


async def apply_receipt(
    consent: RedisConsentStore,
    outbox: DeliveryRepository,
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
    outcome, ours = await outbox.apply_receipt(
        tenant_id,
        status,
        message_id=message_id,
        provider_message_id=provider_message_id,
        error=f"{provider} receipt: {detail}" if status is ReceiptStatus.FAILED else "",
    )
    if outcome is ReceiptOutcome.UNKNOWN:
        log.info("receipt for an unknown message ignored", extra={"tenant": tenant_id})
        return outcome
    if status is ReceiptStatus.FAILED and error_code in OPT_OUT_CODES:
        await _record_opt_out(consent, tenant_id, ours, OPT_OUT_CODES[error_code], detail, provider)
    return outcome


async def _record_opt_out(
    consent: RedisConsentStore,
    tenant_id: str,
    message_id: str,
    topic: str,
    detail: str,
    provider: str,
) -> None:
    info = await consent.message_status(tenant_id, message_id)
    if info is None:
        return
    event = ConsentEventInput(
        tenant_id=tenant_id,
        recipient=info.recipient,
        topic=topic,
        action=Action.OPT_OUT,
        source=Source.PROVIDER,
        evidence=f"{provider} receipt for message {message_id}: {detail}"[:1000],
        occurred_at_ms=time.time_ns() // 1_000_000,
        event_id=f"provider-receipt:{message_id}",  # a re-sent receipt is a replay
        principal="delivery-receipts",
    )
    try:
        outcome = await consent.record_event(event)
    except IdConflict:
        return
    if not outcome.duplicate:
        m.PROVIDER_OPT_OUTS.labels(provider).inc()
        log.info(
            "provider receipt reported an opt-out: recorded",
            extra={
                "message_id": message_id,
                "tenant": tenant_id,
                "to": mask_address(info.recipient.address),
                "scope": topic or "all",
            },
        )


_WHATSAPP_STATUSES = {
    "delivered": ReceiptStatus.DELIVERED,
    "read": ReceiptStatus.READ,
    "failed": ReceiptStatus.FAILED,
}


def whatsapp_status_handler(
    consent: RedisConsentStore, outbox: DeliveryRepository
) -> StatusHandler:
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
            consent,
            outbox,
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

    def __init__(self, consent: RedisConsentStore, outbox: DeliveryRepository) -> None:
        self._consent = consent
        self._outbox = outbox

    async def receive(
        self, tenant_id: str, body: bytes, timestamp: str | None, signature: str | None
    ) -> ReceiptOutcome:
        """Verify and apply one call-back; CallbackRefused says why not.

        Raises StoreUnavailable (answer 503: the provider should retry) when the store
        is unreachable."""
        if not timestamp or not signature:
            raise CallbackRefused(401, "missing X-Consent-Timestamp or X-Consent-Signature")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > CALLBACK_MAX_AGE_S:
            raise CallbackRefused(401, "timestamp missing, malformed or too old")
        if await self._consent.tenant_lookup(tenant_id) is None:
            # The same answer as a tenant without a webhook provider: nothing changes.
            raise CallbackRefused(404, "no webhook provider is configured for this tenant")
        webhook_secrets = [
            c.secret
            for c in (await self._outbox.providers(tenant_id)).values()
            if c.kind is ProviderKind.WEBHOOK and c.secret
        ]
        if not webhook_secrets:
            raise CallbackRefused(404, "no webhook provider is configured for this tenant")
        if not any(verify(s, timestamp, body, signature) for s in webhook_secrets):
            raise CallbackRefused(401, "bad signature")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
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
            self._consent,
            self._outbox,
            tenant_id,
            status,
            message_id=message_id[:128],
            provider_message_id=provider_message_id[:256],
            error_code=code,
            error=error[:500],
            provider="webhook",
        )


_WEBHOOK_STATUSES = dict(_WHATSAPP_STATUSES)
