"""Redis storage of the HTTP edge: WhatsApp webhook settings, the phone-number index,
dead letters and the link secret.

A class of its own beside RedisConsentStore (sharing its client and its error
mapping) so that the edge's keys stay in one small module; it implements
domain.whatsapp_edge.WhatsAppStore and domain.links_service.LinkSecretStore.

A phone number id belongs to one tenant: it is claimed in the index with HSETNX
before the tenant's settings name it, and released (only by its owner) when the
settings stop naming it. Every script here touches one key, so all of it runs on
Redis Cluster.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from redis.typing import EncodableT, FieldT

from consent_server.domain.model import Recipient
from consent_server.domain.whatsapp_edge import (
    DeadLetter,
    DeadLetterPage,
    PhoneNumberTaken,
    WhatsAppWebhookConfig,
)

from . import keys
from .client import RedisClient
from .deadletters import RedisDeadLetters
from .records import fields, text
from .replication import acks_of
from .repository import RedisConsentStore

# KEYS: an index hash. ARGV: field, owner. Deletes the field only if the owner holds it.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def _token_digest(verify_token: str) -> str:
    return hashlib.sha256(verify_token.encode("utf-8", "replace")).hexdigest()


class RedisEdgeStore:
    """The edge's settings on the consent store's Redis (raises StoreUnavailable)."""

    def __init__(self, store: RedisConsentStore) -> None:
        self._store = store
        self._r: RedisClient = store.client
        self._release = self._r.register_script(_RELEASE)
        self._dead = RedisDeadLetters(self._r)
        self._acks = acks_of(store.client)

    async def whatsapp_webhook(self, tenant_id: str) -> WhatsAppWebhookConfig | None:
        """The tenant's webhook settings, or None when none are stored."""
        f = fields(
            await self._store._call(lambda: self._r.hgetall(keys.whatsapp_webhook(tenant_id)))
        )
        if not f.get("verify_token") or not f.get("app_secret"):
            return None
        return WhatsAppWebhookConfig(
            f["verify_token"],
            f["app_secret"],
            tuple(p for p in f.get("phone_number_ids", "").split(",") if p),
            f.get("waba_id", ""),
        )

    async def _unclaim(self, index: str, field: str, tenant_id: str) -> None:
        await self._store._call(lambda: self._release(keys=[index], args=[field, tenant_id]))

    async def set_whatsapp_webhook(self, tenant_id: str, config: WhatsAppWebhookConfig) -> None:
        """Claim the numbers, store the settings, then release what is no longer named.

        PhoneNumberTaken (nothing changed) when a number is another tenant's."""
        index = keys.whatsapp_phone_numbers()
        old = await self.whatsapp_webhook(tenant_id)
        claimed: list[str] = []
        for i, pnid in enumerate(config.phone_number_ids):
            fresh = await self._store._call(lambda p=pnid: self._r.hsetnx(index, p, tenant_id))  # type: ignore[misc]
            if fresh:
                claimed.append(pnid)
                continue
            owner = await self._store._call(lambda p=pnid: self._r.hget(index, p))  # type: ignore[misc]
            if owner is not None and text(owner) != tenant_id:
                for p in claimed:
                    await self._unclaim(index, p, tenant_id)
                raise PhoneNumberTaken(i)
        mapping: dict[FieldT, EncodableT] = {
            "verify_token": config.verify_token,
            "app_secret": config.app_secret,
            "phone_number_ids": ",".join(config.phone_number_ids),
            "waba_id": config.waba_id,
        }
        await self._store._call(
            lambda: self._r.hset(keys.whatsapp_webhook(tenant_id), mapping=mapping)
        )
        tokens = keys.whatsapp_verify_tokens()
        digest = _token_digest(config.verify_token)
        await self._store._call(lambda: self._r.hset(tokens, digest, tenant_id))
        if old is not None:
            for pnid in set(old.phone_number_ids) - set(config.phone_number_ids):
                await self._unclaim(index, pnid, tenant_id)
            if old.verify_token != config.verify_token:
                await self._unclaim(tokens, _token_digest(old.verify_token), tenant_id)
        # Several commands on several slots: acknowledged once each slot is replicated
        # (CONSENT_REDIS_MIN_REPLICAS_ACK; a no-op when off).
        for key in (index, keys.whatsapp_webhook(tenant_id), tokens):
            await self._store._call(lambda k=key: self._acks.confirm(k))  # type: ignore[misc]

    async def delete_whatsapp_webhook(self, tenant_id: str) -> bool:
        """Remove the tenant's webhook settings and release its numbers."""
        old = await self.whatsapp_webhook(tenant_id)
        removed: int = await self._store._call(
            lambda: self._r.delete(keys.whatsapp_webhook(tenant_id))
        )
        if old is not None:
            for pnid in old.phone_number_ids:
                await self._unclaim(keys.whatsapp_phone_numbers(), pnid, tenant_id)
            await self._unclaim(
                keys.whatsapp_verify_tokens(), _token_digest(old.verify_token), tenant_id
            )
        for key in (keys.whatsapp_webhook(tenant_id), keys.whatsapp_phone_numbers()):
            await self._store._call(lambda k=key: self._acks.confirm(k))  # type: ignore[misc]
        return removed > 0

    async def tenant_for_phone_number(self, phone_number_id: str) -> str | None:
        """The tenant that registered ``phone_number_id``, if any."""
        owner = await self._store._call(
            lambda: self._r.hget(keys.whatsapp_phone_numbers(), phone_number_id)
        )
        return None if owner is None else text(owner)

    async def verify_token_known(self, verify_token: str) -> bool:
        """True when some tenant's webhook uses ``verify_token``."""
        owner = await self._store._call(
            lambda: self._r.hget(keys.whatsapp_verify_tokens(), _token_digest(verify_token))
        )
        return owner is not None

    async def sent_message_recipient(self, tenant_id: str, wamid: str) -> Recipient | None:
        """The recipient of the tenant's message the provider named ``wamid``, if any."""
        message_id = await self._store._call(
            lambda: self._r.get(keys.provider_message(tenant_id, wamid))
        )
        if message_id is None:
            return None
        info = await self._store.message_status(tenant_id, text(message_id))
        return None if info is None else info.recipient

    async def add_dead_letters(self, items: Sequence[DeadLetter], limit: int) -> int:
        """See RedisDeadLetters.add_dead_letters."""
        return await self._dead.add_dead_letters(items, limit)

    async def put_dead_letter(self, item: DeadLetter) -> None:
        """See RedisDeadLetters.put_dead_letter."""
        await self._dead.put_dead_letter(item)

    async def dead_letters(self, tenant_id: str, offset: int, limit: int) -> DeadLetterPage:
        """See RedisDeadLetters.dead_letters."""
        return await self._dead.dead_letters(tenant_id, offset, limit)

    async def dead_letter(self, tenant_id: str, item_id: str) -> DeadLetter | None:
        """See RedisDeadLetters.dead_letter."""
        return await self._dead.dead_letter(tenant_id, item_id)

    async def delete_dead_letter(self, tenant_id: str, item_id: str) -> bool:
        """See RedisDeadLetters.delete_dead_letter."""
        return await self._dead.delete_dead_letter(tenant_id, item_id)

    async def forget_dead_letters(self, recipient: Recipient, tenant_id: str) -> int:
        """Erasure: remove the tenant's dead letters that name ``recipient`` (WhatsApp
        addresses appear in notifications as digits without "+"); the number removed."""
        return await self._dead.forget_dead_letters(tenant_id, recipient.address.lstrip("+"))

    async def link_secret(self) -> bytes:
        """The stored link secret; the first caller anywhere creates it (SET NX)."""
        key = keys.link_secret()
        candidate = secrets.token_hex(32)
        # NX: with several server processes starting together, exactly one secret wins
        # and every process reads that one back.
        await self._store._write(key, lambda c: c.set(key, candidate, nx=True))
        value = await self._store._call(lambda: self._r.get(key))
        return text(value).encode()
