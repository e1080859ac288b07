"""ConsentAdminService handlers for the HTTP edge: per-tenant WhatsApp webhook settings
and the dead letters of the WhatsApp webhook."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from consent_client.v1 import admin_pb2 as apb
from consent_server.domain import validation as val
from consent_server.domain.errors import InvalidArgument, NotConfigured
from consent_server.domain.whatsapp_edge import (
    DeadLetter,
    PhoneNumberTaken,
    WhatsAppEdge,
    WhatsAppStore,
    validate_webhook_config,
)

from .consent_service import Ctx, rpc

APP_WEBHOOK_PATH = "/whatsapp"


def webhook_path(tenant_id: str) -> str:
    """The tenant's webhook path on the HTTP edge."""
    return f"{APP_WEBHOOK_PATH}/{tenant_id}"


def _tenant(tenant_id: str) -> str:
    v = val.Violations()
    tenant = val.tenant_id(v, tenant_id)
    v.raise_if_any()
    return tenant


def dead_letter_pb(item: DeadLetter) -> apb.UnappliedNotification:
    """A dead letter on the wire."""
    received = Timestamp()
    received.FromMilliseconds(item.received_at_ms)
    return apb.UnappliedNotification(
        id=item.id,
        received_at=received,
        reason=item.reason,
        detail=item.detail,
        kind=item.kind,
        path=item.path,
        phone_number_id=item.phone_number_id,
        raw=item.raw,
        attempts=item.attempts,
    )


class WhatsAppWebhookHandlers:
    """Set/Get/DeleteWhatsAppWebhook and the webhook's dead letters (List/Replay/Discard
    UnappliedNotification).

    ``public_url`` is the edge's base URL; without one, responses carry only the path.
    ``whatsapp`` is the webhook use case that replays dead letters (None: not wired).
    """

    def __init__(
        self, edge_store: WhatsAppStore, public_url: str | None, whatsapp: WhatsAppEdge | None
    ) -> None:
        self._edge_store = edge_store
        self._public_url = public_url.rstrip("/") if public_url else None
        self._whatsapp = whatsapp

    def _webhook_url(self, tenant_id: str) -> str:
        return f"{self._public_url}{webhook_path(tenant_id)}" if self._public_url else ""

    def _edge(self) -> WhatsAppEdge:
        if self._whatsapp is None:
            raise NotConfigured("the WhatsApp edge is not wired in this server")
        return self._whatsapp

    @rpc
    async def SetWhatsAppWebhook(
        self, request: apb.SetWhatsAppWebhookRequest, context: Ctx
    ) -> apb.SetWhatsAppWebhookResponse:
        v = val.Violations()
        tenant = val.tenant_id(v, request.tenant_id)
        try:
            config = validate_webhook_config(
                request.verify_token,
                request.app_secret,
                list(request.phone_number_ids),
                request.waba_id,
            )
        except InvalidArgument as exc:
            v.items.extend(exc.violations)
            config = None
        v.raise_if_any()
        assert config is not None
        try:
            await self._edge_store.set_whatsapp_webhook(tenant, config)
        except PhoneNumberTaken as exc:
            raise InvalidArgument.single(
                f"phone_number_ids[{exc.index}]",
                "is registered to another tenant's WhatsApp webhook: a phone number "
                "belongs to one tenant; nothing changed",
            ) from None
        return apb.SetWhatsAppWebhookResponse(
            webhook_path=webhook_path(tenant),
            webhook_url=self._webhook_url(tenant),
            app_webhook_path=APP_WEBHOOK_PATH,
        )

    @rpc
    async def GetWhatsAppWebhook(
        self, request: apb.GetWhatsAppWebhookRequest, context: Ctx
    ) -> apb.GetWhatsAppWebhookResponse:
        tenant = _tenant(request.tenant_id)
        config = await self._edge_store.whatsapp_webhook(tenant)
        return apb.GetWhatsAppWebhookResponse(
            configured=config is not None,
            webhook_path=webhook_path(tenant),
            webhook_url=self._webhook_url(tenant),
            phone_number_ids=list(config.phone_number_ids) if config else [],
            waba_id=config.waba_id if config else "",
        )

    @rpc
    async def DeleteWhatsAppWebhook(
        self, request: apb.DeleteWhatsAppWebhookRequest, context: Ctx
    ) -> apb.DeleteWhatsAppWebhookResponse:
        tenant = _tenant(request.tenant_id)
        return apb.DeleteWhatsAppWebhookResponse(
            deleted=await self._edge_store.delete_whatsapp_webhook(tenant)
        )

    @rpc
    async def ListUnappliedNotifications(
        self, request: apb.ListUnappliedNotificationsRequest, context: Ctx
    ) -> apb.ListUnappliedNotificationsResponse:
        page = await self._edge().list_unapplied(
            request.tenant_id, request.page_size, request.page_token
        )
        return apb.ListUnappliedNotificationsResponse(
            notifications=[dead_letter_pb(i) for i in page.items],
            next_page_token=page.next_page_token,
            total=page.total,
        )

    @rpc
    async def ReplayUnappliedNotification(
        self, request: apb.ReplayUnappliedNotificationRequest, context: Ctx
    ) -> apb.ReplayUnappliedNotificationResponse:
        result = await self._edge().replay(request.tenant_id, request.id)
        return apb.ReplayUnappliedNotificationResponse(
            applied=result.applied, notification=dead_letter_pb(result.item)
        )

    @rpc
    async def DiscardUnappliedNotification(
        self, request: apb.DiscardUnappliedNotificationRequest, context: Ctx
    ) -> apb.DiscardUnappliedNotificationResponse:
        discarded = await self._edge().discard(request.tenant_id, request.id)
        return apb.DiscardUnappliedNotificationResponse(discarded=discarded)
