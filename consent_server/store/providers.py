"""Provider settings on Redis: which provider delivers each channel of a tenant.

The domain's ProviderConfigStore port (SetDeliveryProvider, GetDeliveryProviders, and
the worker's and receipts' look-ups); apart from the outbox, which is about messages.
"""

from __future__ import annotations

from consent_server.domain.delivery import ProviderConfig, ProviderKind

from . import keys
from .client import RedisClient
from .records import fields, text
from .replication import acks_of
from .repository import guarded


class RedisProviderSettings:
    """Provider configurations, one hash per tenant (channel value or "*" -> JSON)."""

    def __init__(self, client: RedisClient) -> None:
        self._r: RedisClient = client
        self._acks = acks_of(client)

    async def providers(self, tenant_id: str) -> dict[str, ProviderConfig]:
        """The tenant's provider configurations by channel value (or "*")."""
        raw = fields(await guarded(lambda: self._r.hgetall(keys.tenant_providers(tenant_id))))
        return {channel: ProviderConfig.decode(value) for channel, value in raw.items()}

    async def any_sending_provider(self) -> bool:
        """True when some tenant has a provider other than ``log`` configured (a scan of
        every tenant's provider hash: meant for start-up, not for a request path)."""
        pattern = keys.glob_escape("ca:tenant:") + "*" + keys.glob_escape(":providers")

        async def scan() -> bool:
            async for key in self._r.scan_iter(match=pattern, count=1000):
                for raw in await self._r.hvals(key):
                    if ProviderConfig.decode(text(raw)).kind is not ProviderKind.LOG:
                        return True
            return False

        return await guarded(scan)

    async def put_provider(self, tenant_id: str, channel: str, config: ProviderConfig) -> None:
        """Store one channel's provider configuration."""
        key = keys.tenant_providers(tenant_id)
        await guarded(
            lambda: self._acks.write(key, lambda c: c.hset(key, channel, config.encode()))
        )
