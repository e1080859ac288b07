"""The one consent.v1.ConsentAdminService servicer.

Each workstream's admin RPCs live in a module of their own (tenant settings,
API keys and erasure, ...); gRPC serves a service from one servicer, so this
class combines them. Methods of the earlier bases win, and whatever no base
implements falls through to the generated servicer, which answers UNIMPLEMENTED.
"""

from __future__ import annotations

from consent_server.domain.delivery import DeliveryAdmin
from consent_server.domain.edge import EdgeStore
from consent_server.domain.security import SecurityAuthority
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.tenants import TenantRegistry

from .admin_security import SecurityAdminServicer
from .admin_service import ConsentAdminServicer as TenantSettingsAdminServicer
from .admin_tenants import TenantAdminServicer
from .delivery_admin_service import DeliveryAdminMixin
from .edge_admin_service import EdgeAdminServicer


class ConsentAdminService(
    TenantAdminServicer,
    SecurityAdminServicer,
    DeliveryAdminMixin,
    EdgeAdminServicer,
    TenantSettingsAdminServicer,
):
    """Tenant settings, API keys and erasure, delivery providers and the HTTP edge's
    settings, served as one service."""

    def __init__(
        self,
        authority: ConsentAuthority,
        security: SecurityAuthority,
        edge_store: EdgeStore,
        public_url: str | None,
        delivery: DeliveryAdmin,
        tenants: TenantRegistry,
    ) -> None:
        TenantAdminServicer.__init__(self, tenants)
        TenantSettingsAdminServicer.__init__(self, authority)
        SecurityAdminServicer.__init__(self, security)
        EdgeAdminServicer.__init__(self, edge_store, public_url)
        self._delivery_admin = delivery
