"""Redis storage of the HTTP edge: WhatsApp webhook settings, the phone-number index,
dead letters, the link secret and short link codes.

A class of its own beside RedisConsentStore (sharing its client and its error
mapping) so that the edge's keys stay in one small module; it implements
domain.whatsapp_edge.WhatsAppStore, domain.links_service.LinkSecretStore and
domain.links_service.ShortLinkStore.

A phone number id belongs to one tenant: it is claimed in the index with HSETNX
before the tenant's settings name it, and released (only by its owner) when the
settings stop naming it. Every script here touches one key, so all of it runs on
Redis Cluster.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from functools import partial

from redis.typing import EncodableT, FieldT

from consent_server.domain.links_service import ShortLink
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
from .tombstones import TombstoneNames

# KEYS: an index hash. ARGV: field, owner. Deletes the field only if the owner holds it.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS: a recipient's short link index. ARGV: code, expiry (Unix s). The index lives
# as long as its longest-lived code.
_INDEX_CODE = """
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = redis.call('TTL', KEYS[1])
local left = tonumber(ARGV[2]) - tonumber(redis.call('TIME')[1])
if ttl < 0 or ttl < left then
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
end
return 1
"""


def _token_digest(verify_token: str) -> str:
    return hashlib.sha256(verify_token.encode("utf-8", "replace")).hexdigest()


class RedisEdgeStore:
    """The edge's settings on the consent store's Redis (raises StoreUnavailable)."""

    def __init__(self, store: RedisConsentStore) -> None:
        self._store = store
        self._r: RedisClient = store.client
        self._release = self._r.register_script(_RELEASE)
        self._index_code = self._r.register_script(_INDEX_CODE)
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
            fresh = await self._store._call(partial(self._r.hsetnx, index, pnid, tenant_id))
            if fresh:
                claimed.append(pnid)
                continue
            owner = await self._store._call(partial(self._r.hget, index, pnid))
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
            await self._store._call(partial(self._acks.confirm, key))

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
            await self._store._call(partial(self._acks.confirm, key))
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

    # -- short links ---------------------------------------------------------------------

    async def put_short_link(
        self, code: str, link: ShortLink, recipient: Recipient, expires_at_s: int
    ) -> None:
        """Index the code under the recipient first, then store it (SET NX, expiring
        with the signed link): a code is usable only once both exist."""
        index = keys.short_link_index(keys.recipient_base(link.tenant_id, recipient))
        key = keys.short_link(code)
        # The signed link is valid through its expiry second: keep the code as long.
        until = expires_at_s + 1
        await self._store._write(
            index,
            lambda c: self._index_code(keys=[index], args=[code, until], client=c),
        )
        value = json.dumps([link.tenant_id, link.token])
        fresh = await self._store._write(key, lambda c: c.set(key, value, nx=True, exat=until))
        if not fresh:  # 72 random bits never collide in practice; refuse, never overwrite
            raise RuntimeError("short link code collision")

    async def short_link(self, code: str) -> ShortLink | None:
        """The link behind ``code``, or None when unknown or expired."""
        raw = await self._store._call(lambda: self._r.get(keys.short_link(code)))
        if raw is None:
            return None
        try:
            tenant_id, token = json.loads(text(raw))
        except (ValueError, TypeError):
            return None
        if not isinstance(tenant_id, str) or not isinstance(token, str):
            return None
        return ShortLink(tenant_id, token)

    async def short_link_indexed(self, code: str, tenant_id: str, recipient: Recipient) -> bool:
        """True while ``code`` is in the recipient's index."""
        index = keys.short_link_index(keys.recipient_base(tenant_id, recipient))
        found = await self._store._call(lambda: self._r.sismember(index, code))
        return bool(found)

    async def erased(self, tenant_id: str, recipient: Recipient) -> bool:
        """True when the recipient has an erasure tombstone (of any scope)."""
        # No tombstone secret yet means nothing was ever erased (and creates none).
        secret = await self._store._call(lambda: self._store.tombstones.existing_secret(tenant_id))
        if secret is None:
            return False
        key = keys.tombstone(tenant_id, recipient, TombstoneNames.digest(secret, recipient))
        found = await self._store._call(lambda: self._r.exists(key))
        return bool(found)
