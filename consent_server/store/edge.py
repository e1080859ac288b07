"""Redis storage of the HTTP edge: WhatsApp webhook settings and the link secret.

A class of its own beside RedisConsentStore (sharing its client and its error
mapping) so that the edge's keys stay in one small module; it implements
domain.edge.EdgeStore.
"""

from __future__ import annotations

import secrets
from typing import Any

from consent_server.domain.edge import WhatsAppWebhookConfig

from . import keys
from .records import text
from .replication import acks_of
from .repository import RedisConsentStore


class RedisEdgeStore:
    """The edge's settings on the consent store's Redis (raises StoreUnavailable)."""

    def __init__(self, store: RedisConsentStore) -> None:
        self._store = store
        self._r: Any = store.client
        self._acks = acks_of(store.client)

    async def whatsapp_webhook(self, tenant_id: str) -> WhatsAppWebhookConfig | None:
        """The tenant's webhook settings, or None when none are stored."""
        raw: dict[bytes, bytes] = await self._store._call(
            lambda: self._r.hgetall(keys.whatsapp_webhook(tenant_id))
        )
        fields = {text(k): text(v) for k, v in raw.items()}
        if not fields.get("verify_token") or not fields.get("app_secret"):
            return None
        return WhatsAppWebhookConfig(fields["verify_token"], fields["app_secret"])

    async def set_whatsapp_webhook(self, tenant_id: str, config: WhatsAppWebhookConfig) -> None:
        """Store (replace) the tenant's webhook settings in one command."""
        mapping = {"verify_token": config.verify_token, "app_secret": config.app_secret}
        key = keys.whatsapp_webhook(tenant_id)
        await self._store._write(key, lambda c: c.hset(key, mapping=mapping))

    async def delete_whatsapp_webhook(self, tenant_id: str) -> bool:
        """Remove the tenant's webhook settings; True when there were some."""
        key = keys.whatsapp_webhook(tenant_id)
        removed: int = await self._store._write(key, lambda c: c.delete(key))
        return removed > 0

    async def link_secret(self) -> bytes:
        """The stored link secret; the first caller anywhere creates it (SET NX)."""
        key = keys.link_secret()
        candidate = secrets.token_hex(32)
        # NX: with several server processes starting together, exactly one secret wins
        # and every process reads that one back.
        await self._store._write(key, lambda c: c.set(key, candidate, nx=True))
        value = await self._store._call(lambda: self._r.get(key))
        return text(value).encode()
