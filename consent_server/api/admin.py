"""The one consent.v1.ConsentAdminService servicer.

Each workstream's admin RPCs live in a module of their own (tenant settings,
API keys and erasure, ...); gRPC serves a service from one servicer, so this
class combines them. Methods of the earlier bases win, and whatever no base
implements falls through to the generated servicer, which answers UNIMPLEMENTED.
"""

from __future__ import annotations

from consent_server.domain.security import SecurityAuthority
from consent_server.domain.service import ConsentAuthority

from .admin_security import SecurityAdminServicer
from .admin_service import ConsentAdminServicer as TenantSettingsAdminServicer


class ConsentAdminService(SecurityAdminServicer, TenantSettingsAdminServicer):
    """Tenant settings, API keys and erasure, served as one service."""

    def __init__(self, authority: ConsentAuthority, security: SecurityAuthority) -> None:
        TenantSettingsAdminServicer.__init__(self, authority)
        SecurityAdminServicer.__init__(self, security)
