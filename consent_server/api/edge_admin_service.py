"""ConsentAdminService RPCs of the HTTP edge: per-tenant WhatsApp webhook settings.

``EdgeAdminMixin`` holds the handlers and ``EdgeAdminServicer`` adds its state;
:class:`consent_server.api.admin.ConsentAdminService` combines it with the other
areas' admin RPCs into the one servicer of the service.
"""

from __future__ import annotations

from typing import Any

import grpc

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc as apb_grpc
from consent_server.domain import validation as val
from consent_server.domain.edge import EdgeStore, validate_webhook_config
from consent_server.domain.errors import InvalidArgument

from .consent_service import rpc

Ctx = grpc.aio.ServicerContext[Any, Any]


def webhook_path(tenant_id: str) -> str:
    """The tenant's webhook path on the HTTP edge."""
    return f"/whatsapp/{tenant_id}"


def _tenant(tenant_id: str) -> str:
    v = val.Violations()
    tenant = val.tenant_id(v, tenant_id)
    v.raise_if_any()
    return tenant


class EdgeAdminMixin:
    """Handlers for SetWhatsAppWebhook, GetWhatsAppWebhook and DeleteWhatsAppWebhook."""

    _edge_store: EdgeStore
    _public_url: str | None

    def _webhook_url(self, tenant_id: str) -> str:
        return f"{self._public_url}{webhook_path(tenant_id)}" if self._public_url else ""

    @rpc
    async def SetWhatsAppWebhook(
        self, request: apb.SetWhatsAppWebhookRequest, context: Ctx
    ) -> apb.SetWhatsAppWebhookResponse:
        v = val.Violations()
        tenant = val.tenant_id(v, request.tenant_id)
        try:
            config = validate_webhook_config(request.verify_token, request.app_secret)
        except InvalidArgument as exc:
            v.items.extend(exc.violations)
            config = None
        v.raise_if_any()
        assert config is not None
        await self._edge_store.set_whatsapp_webhook(tenant, config)
        return apb.SetWhatsAppWebhookResponse(
            webhook_path=webhook_path(tenant), webhook_url=self._webhook_url(tenant)
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
        )

    @rpc
    async def DeleteWhatsAppWebhook(
        self, request: apb.DeleteWhatsAppWebhookRequest, context: Ctx
    ) -> apb.DeleteWhatsAppWebhookResponse:
        tenant = _tenant(request.tenant_id)
        return apb.DeleteWhatsAppWebhookResponse(
            deleted=await self._edge_store.delete_whatsapp_webhook(tenant)
        )


class EdgeAdminServicer(EdgeAdminMixin, apb_grpc.ConsentAdminServiceServicer):
    """ConsentAdminService serving the edge's RPCs (the others answer UNIMPLEMENTED)."""

    def __init__(self, edge_store: EdgeStore, public_url: str | None) -> None:
        self._edge_store = edge_store
        self._public_url = public_url.rstrip("/") if public_url else None
