"""ConsentAdminService tenant RPCs: CreateTenant, GetTenant, ListTenants, DeleteTenant.

Handlers that :class:`consent_server.api.admin.ConsentAdminService` delegates to. Only
operator keys
(tenant ``*``) may call them: domain.auth.OPERATOR_METHODS, enforced by the interceptor.
"""

from __future__ import annotations

import logging

from consent_client.v1 import admin_pb2 as apb
from consent_server.domain.tenants import TenantInfo, TenantRegistry

from . import convert as cv
from .auth import current_principal
from .consent_service import Ctx, rpc

log = logging.getLogger("consent_server.admin")


def tenant_pb(info: TenantInfo) -> apb.Tenant:
    """A tenant on the wire."""
    return apb.Tenant(
        tenant_id=info.tenant_id,
        display_name=info.display_name,
        created_at=cv.timestamp(info.created_at_ms),
    )


class TenantHandlers:
    """CreateTenant, GetTenant, ListTenants and DeleteTenant on the tenant registry."""

    def __init__(self, tenants: TenantRegistry) -> None:
        self._tenants = tenants

    @rpc
    async def CreateTenant(self, request: apb.CreateTenantRequest, context: Ctx) -> apb.Tenant:
        info = await self._tenants.create(request.tenant_id, request.display_name)
        log.info("tenant created", extra={"tenant": info.tenant_id, "by": current_principal()})
        return tenant_pb(info)

    @rpc
    async def GetTenant(self, request: apb.GetTenantRequest, context: Ctx) -> apb.Tenant:
        return tenant_pb(await self._tenants.get(request.tenant_id))

    @rpc
    async def ListTenants(
        self, request: apb.ListTenantsRequest, context: Ctx
    ) -> apb.ListTenantsResponse:
        page = await self._tenants.list_page(request.page_size, request.page_token)
        return apb.ListTenantsResponse(
            tenants=[tenant_pb(t) for t in page.tenants], next_page_token=page.next_page_token
        )

    @rpc
    async def DeleteTenant(
        self, request: apb.DeleteTenantRequest, context: Ctx
    ) -> apb.DeleteTenantResponse:
        deleted = await self._tenants.delete(request.tenant_id)
        log.info(
            "tenant deleted",
            extra={
                "tenant": deleted.tenant.tenant_id,
                "keys_revoked": deleted.api_keys_revoked,
                "by": current_principal(),
            },
        )
        return apb.DeleteTenantResponse(
            tenant=tenant_pb(deleted.tenant), api_keys_revoked=deleted.api_keys_revoked
        )


__all__ = ["TenantHandlers", "tenant_pb"]
