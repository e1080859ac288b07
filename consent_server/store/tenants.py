"""Redis storage of the tenant registry (domain.tenants.TenantStore).

A tenant exists when its settings hash carries the registry field ``t:at`` (see
store/keys.py): the consent use cases read that hash anyway, so the existence check on
the hot path is free. ``ca:tenants`` lists the ids for ListTenants. Creation claims the
id with HSETNX on the settings hash first; the index follows (and is repaired by a
repeated create), so a crash between the two never makes a tenant half-exist.
"""

from __future__ import annotations

from consent_server.domain.tenants import TenantInfo

from . import keys
from .change_webhooks import RedisChangeWebhooks
from .client import RedisClient
from .edge import RedisEdgeStore
from .records import members, text
from .repository import RedisConsentStore, guarded

_SCAN_COUNT = 1000


class RedisTenantStore:
    """The tenant registry on Redis (or the embedded fakeredis)."""

    def __init__(self, consent: RedisConsentStore) -> None:
        self._consent = consent
        self._r: RedisClient = consent.client

    async def create_tenant(self, info: TenantInfo) -> bool:
        """Register a tenant; False when the id exists (its index entry is repaired)."""
        key = keys.tenant_settings(info.tenant_id)

        async def write() -> bool:
            claimed = await self._r.hsetnx(key, keys.TENANT_CREATED_FIELD, str(info.created_at_ms))
            if claimed:
                await self._r.hset(key, keys.TENANT_NAME_FIELD, info.display_name)
            await self._r.zadd(keys.tenant_index(), {info.tenant_id: 0})
            return bool(claimed)

        try:
            return await guarded(write)
        finally:
            self._consent.forget_cached_settings(info.tenant_id)

    async def get_tenant(self, tenant_id: str) -> TenantInfo | None:
        """A tenant's metadata, read now."""
        created, name = await guarded(
            lambda: self._r.hmget(
                keys.tenant_settings(tenant_id),
                [keys.TENANT_CREATED_FIELD, keys.TENANT_NAME_FIELD],
            )
        )
        if created is None:
            return None
        return TenantInfo(tenant_id, text(name) if name is not None else "", int(created))

    async def list_tenants(self, after: str, limit: int) -> list[TenantInfo]:
        """Up to ``limit`` tenants with ids after ``after``, by id."""

        async def read() -> list[TenantInfo]:
            start = f"({after}" if after else "-"
            ids = [
                text(i)
                for i in await self._r.zrangebylex(
                    keys.tenant_index(), start, "+", start=0, num=limit
                )
            ]
            pipe = self._r.pipeline(transaction=False)
            for tenant_id in ids:
                pipe.hmget(
                    keys.tenant_settings(tenant_id),
                    [keys.TENANT_CREATED_FIELD, keys.TENANT_NAME_FIELD],
                )
            rows = await pipe.execute() if ids else []
            return [
                TenantInfo(t, text(name) if name is not None else "", int(created))
                for t, (created, name) in zip(ids, rows, strict=True)
                if created is not None
            ]

        return await guarded(read)

    async def holds_data(self, tenant_id: str) -> bool:
        """True when any partition key of the tenant exists (records, history,
        tombstones, erasure logs, messages, idempotency keys), or a WhatsApp dead letter
        (it may be an opt-out not applied yet)."""

        async def scan() -> bool:
            if await self._r.exists(keys.dead_letters(tenant_id)):
                return True
            async for _ in self._r.scan_iter(
                match=keys.tenant_data_pattern(tenant_id), count=_SCAN_COUNT
            ):
                return True
            return False

        return await guarded(scan)

    async def delete_tenant(self, tenant_id: str, at_ms: int) -> int:
        """Remove the registry entry first (new calls are refused from here on), then the
        tenant's configuration keys and index entry, and revoke its API keys."""

        async def delete() -> int:
            await self._r.delete(keys.tenant_settings(tenant_id))
            self._consent.forget_cached_settings(tenant_id)
            # The webhook goes through its own store, so its phone numbers and verify
            # token are released for another tenant.
            await RedisEdgeStore(self._consent).delete_whatsapp_webhook(tenant_id)
            # Change webhooks: their dispatcher index entries and per-endpoint state too.
            hooks = RedisChangeWebhooks(self._r)
            for hook in await hooks.endpoints(tenant_id):
                await hooks.delete(tenant_id, hook.name)
            config = [
                text(k)
                async for k in self._r.scan_iter(
                    match=keys.tenant_config_pattern(tenant_id), count=_SCAN_COUNT
                )
            ]
            for key in config:
                await self._r.delete(key)
            await self._r.zrem(keys.tenant_index(), tenant_id)
            key_ids = members(await self._r.zrange(keys.api_key_index(tenant_id), 0, -1))
            revoked = 0
            for key_id in key_ids:
                revoked += int(await self._r.hsetnx(keys.api_key(key_id), "rev_at", str(at_ms)))
            return revoked

        return await guarded(delete)


__all__ = ["RedisTenantStore"]
