"""Tenants are explicit: created, listed and deleted by operators (ConsentAdminService).

Until a tenant is created every call naming it fails with TenantNotFound, so a typo in
a tenant id can never read as "allowed". The existence check on the hot path rides on
the tenant-settings read every consent use case already makes (cached about a second
per process, see the store); this module holds the registry's own use cases.

Deleting a tenant never loses an opt-out silently: it is refused (TenantNotEmpty) while
the tenant holds any consent data. Order of checks for a call naming a tenant: the
key's role and tenant first (PERMISSION_DENIED, which says nothing about whether the
tenant exists), then the tenant's existence (NOT_FOUND), then the request's fields.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from . import page_tokens
from . import validation as val
from .errors import IdConflict, TenantNotEmpty, TenantNotFound
from .validation import Violations

MAX_DISPLAY_NAME = 128
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
#: The tenant the embedded store creates at start, so the README's quick start works.
DEMO_TENANT = "acme"


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """A tenant's metadata."""

    tenant_id: str
    display_name: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class TenantPage:
    """A page of tenants (by id) and the token of the next one ("" = last page)."""

    tenants: list[TenantInfo]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class DeletedTenant:
    """What DeleteTenant removed."""

    tenant: TenantInfo
    api_keys_revoked: int


class TenantStore(Protocol):
    """Storage of the tenant registry. Raises StoreUnavailable when unreachable."""

    async def create_tenant(self, info: TenantInfo) -> bool:
        """Register a tenant; False (nothing changed) when the id exists."""
        ...

    async def get_tenant(self, tenant_id: str) -> TenantInfo | None:
        """A tenant's metadata read now (no cache), or None."""
        ...

    async def list_tenants(self, after: str, limit: int) -> list[TenantInfo]:
        """Up to ``limit`` tenants with ids greater than ``after``, by id."""
        ...

    async def holds_data(self, tenant_id: str) -> bool:
        """True while any consent data of the tenant exists (records, history,
        tombstones, erasure log, messages)."""
        ...

    async def delete_tenant(self, tenant_id: str, at_ms: int) -> int:
        """Remove the tenant's registry entry and configuration and revoke its keys;
        returns how many keys were revoked."""
        ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _encode_token(after: str) -> str:
    return page_tokens.encode("t1", after)


def _decode_token(token: str) -> str:
    after = page_tokens.decode("t1", token)
    if not val.TENANT_RE.fullmatch(after):
        raise ValueError("not a page token")
    return after


class TenantRegistry:
    """CreateTenant, GetTenant, ListTenants, DeleteTenant and the start-up bootstrap."""

    def __init__(self, store: TenantStore, *, clock_ms: Callable[[], int] = _now_ms) -> None:
        self._store = store
        self._clock_ms = clock_ms

    async def create(self, tenant_id: str, display_name: str) -> TenantInfo:
        """CreateTenant: IdConflict (ALREADY_EXISTS) when the id is taken."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        name = val.free_text(v, display_name.strip(), "display_name", max_chars=MAX_DISPLAY_NAME)
        v.raise_if_any()
        info = TenantInfo(tenant, name, self._clock_ms())
        if not await self._store.create_tenant(info):
            raise IdConflict(
                "tenant_id", "TENANT_ALREADY_EXISTS", f"tenant '{tenant}' already exists"
            )
        return info

    async def get(self, tenant_id: str) -> TenantInfo:
        """GetTenant: TenantNotFound when it was never created."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        v.raise_if_any()
        info = await self._store.get_tenant(tenant)
        if info is None:
            raise TenantNotFound(tenant)
        return info

    async def list_page(self, page_size: int, page_token: str) -> TenantPage:
        """ListTenants: by id, paged by an opaque token."""
        v = Violations()
        size, after = page_tokens.check_page(
            v,
            page_size,
            page_token,
            _decode_token,
            rpc="ListTenants",
            max_size=MAX_PAGE_SIZE,
            default_size=DEFAULT_PAGE_SIZE,
        )
        v.raise_if_any()
        found = await self._store.list_tenants(after or "", size + 1)
        page = found[:size]
        token = _encode_token(page[-1].tenant_id) if len(found) > size and page else ""
        return TenantPage(page, token)

    async def delete(self, tenant_id: str) -> DeletedTenant:
        """DeleteTenant: refused (TenantNotEmpty) while the tenant holds consent data."""
        info = await self.get(tenant_id)
        if await self._store.holds_data(info.tenant_id):
            raise TenantNotEmpty(
                f"tenant '{info.tenant_id}' still holds consent data (records, history, "
                "erasure tombstones or messages); deleting it would lose opt-outs, so "
                "nothing was changed"
            )
        revoked = await self._store.delete_tenant(info.tenant_id, self._clock_ms())
        return DeletedTenant(info, revoked)

    async def ensure(self, tenant_ids: Iterable[str], display_name: str = "") -> list[str]:
        """Create each tenant that does not exist yet (start-up bootstrap); returns the
        ids created. An invalid id raises InvalidArgument."""
        created = []
        for tenant_id in tenant_ids:
            v = Violations()
            tenant = val.tenant_id(v, tenant_id)
            v.raise_if_any()
            if await self._store.create_tenant(TenantInfo(tenant, display_name, self._clock_ms())):
                created.append(tenant)
        return created


__all__ = [
    "DEMO_TENANT",
    "DeletedTenant",
    "TenantInfo",
    "TenantNotFound",
    "TenantPage",
    "TenantRegistry",
    "TenantStore",
]
