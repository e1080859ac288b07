"""Start-up tenants: the embedded store's demo tenant and CONSENT_TENANTS.

Tenants are explicit (ConsentAdminService.CreateTenant). So that the README's quick
start works as written, the embedded store creates the demo tenant ``acme`` at start;
with real Redis an operator creates tenants with the bootstrap admin key, or lists them
in CONSENT_TENANTS to have each created at start when missing (never changed if present).
"""

from __future__ import annotations

import asyncio
import logging

from consent_server.config import Settings
from consent_server.domain.errors import StoreUnavailable
from consent_server.domain.tenants import DEMO_TENANT, TenantRegistry
from consent_server.store.repository import RedisConsentStore
from consent_server.store.tenants import RedisTenantStore

log = logging.getLogger("consent_server.tenants")


def tenant_registry(store: RedisConsentStore) -> TenantRegistry:
    """The tenant registry on the consent store's Redis."""
    return TenantRegistry(RedisTenantStore(store))


def startup_tenants(settings: Settings) -> tuple[str, ...]:
    """The tenants to create at start: CONSENT_TENANTS, plus the demo tenant on the
    embedded store."""
    extra = (DEMO_TENANT,) if settings.redis.embedded else ()
    return tuple(dict.fromkeys((*extra, *settings.server.tenants)))


async def ensure_tenants(registry: TenantRegistry, settings: Settings) -> asyncio.Task[None] | None:
    """Create the start-up tenants that are missing; while Redis is down, keep trying in
    a background task (returned) so the server still starts, NOT_SERVING."""
    names = startup_tenants(settings)
    if not names:
        return None

    told = False

    async def attempt() -> bool:
        nonlocal told
        try:
            created = await registry.ensure(names)
        except StoreUnavailable:
            # Once: the health watcher's line says why the store cannot be reached.
            if not told:
                log.warning("start-up tenants not created yet: store unreachable; retrying")
                told = True
            return False
        if created:
            log.info("tenants created at start", extra={"tenants": ",".join(created)})
        return True

    if await attempt():
        return None

    async def keep_trying() -> None:
        while True:
            await asyncio.sleep(1)
            if await attempt():
                return

    return asyncio.create_task(keep_trying())


__all__ = ["ensure_tenants", "startup_tenants", "tenant_registry"]
