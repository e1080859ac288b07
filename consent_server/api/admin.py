"""The one consent.v1.ConsentAdminService servicer, composed of per-area handlers.

gRPC serves a service from one servicer object. Each area's RPCs live in a handler
object of its own module (tenant settings, API keys and erasure, delivery providers,
the WhatsApp webhook); this servicer holds one of each and every RPC is one line
delegating to its area. Error mapping happens in the handlers (``@rpc``). An RPC of
the proto that no line here delegates falls through to the generated base class,
which answers UNIMPLEMENTED (a test checks that none does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc as apb_grpc

from .admin_deployment import DeploymentHandlers
from .admin_security import SecurityHandlers
from .admin_service import TenantSettingsHandlers
from .admin_tenants import TenantHandlers
from .bulk_service import BulkHandlers
from .change_webhooks_service import ChangeWebhookHandlers
from .consent_service import Ctx
from .delivery_admin_service import DeliveryProviderHandlers
from .edge_admin_service import WhatsAppWebhookHandlers


class ConsentAdminService(apb_grpc.ConsentAdminServiceServicer):
    """Tenant settings, API keys and erasure, delivery providers and the WhatsApp
    webhook, served as one service."""

    def __init__(
        self,
        *,
        tenants: TenantHandlers,
        settings: TenantSettingsHandlers,
        security: SecurityHandlers,
        delivery: DeliveryProviderHandlers,
        webhooks: WhatsAppWebhookHandlers,
        bulk: BulkHandlers,
        deployment: DeploymentHandlers,
        change_webhooks: ChangeWebhookHandlers,
    ) -> None:
        self._change_webhooks = change_webhooks
        self._deployment = deployment
        self._bulk = bulk
        self._tenants = tenants
        self._settings = settings
        self._security = security
        self._delivery = delivery
        self._webhooks = webhooks

    # -- tenants (operator keys only) --

    async def CreateTenant(self, request: apb.CreateTenantRequest, context: Ctx) -> apb.Tenant:
        return await self._tenants.CreateTenant(request, context)

    async def GetTenant(self, request: apb.GetTenantRequest, context: Ctx) -> apb.Tenant:
        return await self._tenants.GetTenant(request, context)

    async def ListTenants(
        self, request: apb.ListTenantsRequest, context: Ctx
    ) -> apb.ListTenantsResponse:
        return await self._tenants.ListTenants(request, context)

    async def DeleteTenant(
        self, request: apb.DeleteTenantRequest, context: Ctx
    ) -> apb.DeleteTenantResponse:
        return await self._tenants.DeleteTenant(request, context)

    # -- bulk import and export --

    async def ImportConsent(
        self, request_iterator: AsyncIterator[apb.ImportConsentRequest], context: Ctx
    ) -> apb.ImportConsentResponse:
        return await self._bulk.ImportConsent(request_iterator, context)

    def ExportConsent(
        self, request: apb.ExportConsentRequest, context: Ctx
    ) -> AsyncIterator[apb.ExportConsentResponse]:
        return self._bulk.ExportConsent(request, context)

    # -- tenant settings --

    async def GetTenantSettings(
        self, request: apb.GetTenantSettingsRequest, context: Ctx
    ) -> apb.TenantSettings:
        return await self._settings.GetTenantSettings(request, context)

    async def UpdateTenantSettings(
        self, request: apb.UpdateTenantSettingsRequest, context: Ctx
    ) -> apb.TenantSettings:
        return await self._settings.UpdateTenantSettings(request, context)

    # -- API keys and erasure --

    async def CreateApiKey(
        self, request: apb.CreateApiKeyRequest, context: Ctx
    ) -> apb.CreateApiKeyResponse:
        return await self._security.CreateApiKey(request, context)

    async def ListApiKeys(
        self, request: apb.ListApiKeysRequest, context: Ctx
    ) -> apb.ListApiKeysResponse:
        return await self._security.ListApiKeys(request, context)

    async def RevokeApiKey(
        self, request: apb.RevokeApiKeyRequest, context: Ctx
    ) -> apb.RevokeApiKeyResponse:
        return await self._security.RevokeApiKey(request, context)

    async def ForgetRecipient(
        self, request: apb.ForgetRecipientRequest, context: Ctx
    ) -> apb.ForgetRecipientResponse:
        return await self._security.ForgetRecipient(request, context)

    # -- delivery providers --

    async def SetDeliveryProvider(
        self, request: apb.SetDeliveryProviderRequest, context: Ctx
    ) -> apb.SetDeliveryProviderResponse:
        return await self._delivery.SetDeliveryProvider(request, context)

    async def GetDeliveryProviders(
        self, request: apb.GetDeliveryProvidersRequest, context: Ctx
    ) -> apb.GetDeliveryProvidersResponse:
        return await self._delivery.GetDeliveryProviders(request, context)

    # -- change webhooks --

    async def SetChangeWebhook(
        self, request: apb.SetChangeWebhookRequest, context: Ctx
    ) -> apb.SetChangeWebhookResponse:
        return await self._change_webhooks.SetChangeWebhook(request, context)

    async def GetChangeWebhook(
        self, request: apb.GetChangeWebhookRequest, context: Ctx
    ) -> apb.GetChangeWebhookResponse:
        return await self._change_webhooks.GetChangeWebhook(request, context)

    async def ListChangeWebhooks(
        self, request: apb.ListChangeWebhooksRequest, context: Ctx
    ) -> apb.ListChangeWebhooksResponse:
        return await self._change_webhooks.ListChangeWebhooks(request, context)

    async def DeleteChangeWebhook(
        self, request: apb.DeleteChangeWebhookRequest, context: Ctx
    ) -> apb.DeleteChangeWebhookResponse:
        return await self._change_webhooks.DeleteChangeWebhook(request, context)

    async def ListChangeWebhookDeliveries(
        self, request: apb.ListChangeWebhookDeliveriesRequest, context: Ctx
    ) -> apb.ListChangeWebhookDeliveriesResponse:
        return await self._change_webhooks.ListChangeWebhookDeliveries(request, context)

    async def RedriveChangeWebhookDeadLetter(
        self, request: apb.RedriveChangeWebhookDeadLetterRequest, context: Ctx
    ) -> apb.RedriveChangeWebhookDeadLetterResponse:
        return await self._change_webhooks.RedriveChangeWebhookDeadLetter(request, context)

    # -- the WhatsApp webhook of the HTTP edge --

    async def SetWhatsAppWebhook(
        self, request: apb.SetWhatsAppWebhookRequest, context: Ctx
    ) -> apb.SetWhatsAppWebhookResponse:
        return await self._webhooks.SetWhatsAppWebhook(request, context)

    async def GetWhatsAppWebhook(
        self, request: apb.GetWhatsAppWebhookRequest, context: Ctx
    ) -> apb.GetWhatsAppWebhookResponse:
        return await self._webhooks.GetWhatsAppWebhook(request, context)

    async def DeleteWhatsAppWebhook(
        self, request: apb.DeleteWhatsAppWebhookRequest, context: Ctx
    ) -> apb.DeleteWhatsAppWebhookResponse:
        return await self._webhooks.DeleteWhatsAppWebhook(request, context)

    async def ListUnappliedNotifications(
        self, request: apb.ListUnappliedNotificationsRequest, context: Ctx
    ) -> apb.ListUnappliedNotificationsResponse:
        return await self._webhooks.ListUnappliedNotifications(request, context)

    async def ReplayUnappliedNotification(
        self, request: apb.ReplayUnappliedNotificationRequest, context: Ctx
    ) -> apb.ReplayUnappliedNotificationResponse:
        return await self._webhooks.ReplayUnappliedNotification(request, context)

    async def DiscardUnappliedNotification(
        self, request: apb.DiscardUnappliedNotificationRequest, context: Ctx
    ) -> apb.DiscardUnappliedNotificationResponse:
        return await self._webhooks.DiscardUnappliedNotification(request, context)

    # -- the deployment (operator keys only: no tenant_id) --

    async def GetDeploymentHealth(
        self, request: apb.GetDeploymentHealthRequest, context: Ctx
    ) -> apb.GetDeploymentHealthResponse:
        return await self._deployment.GetDeploymentHealth(request, context)
