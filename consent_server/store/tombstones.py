"""Suppression tombstones: keyed hashes that keep an erased, opted-out recipient suppressed.

A tombstone is named by HMAC-SHA256(tenant secret, "<channel>:<normalised address>"),
so it holds no address and cannot be reversed by hashing a phone-number range without
the secret. Besides the scope records an erased, opted-out recipient keeps
(``s:<topic>``) it holds ``at``, the erasure's time (ms): every write script ignores an
event dated at or before it, and the delivery claim cancels any message accepted at or
before it. ``ign`` counts the events so ignored (evidence of replays, without the address
or the event ids, which for WhatsApp encode the phone number).

The per-tenant secret is created once (SET NX) on first use and never changes, so every
server process derives the same names; each process caches it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable

from consent_server.domain.model import ConsentRecord, Recipient

from . import keys
from .client import RedisClient
from .replication import acks_of

_CACHE_LIMIT = 100_000
# Recipients whose tombstone names are kept (~250 B each: ~16 MB at most).
_DIGEST_CACHE = 65_536


class TombstoneNames:
    """Derives tombstone key names; fetches (or creates) each tenant's secret once."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._secrets: dict[str, bytes] = {}
        self._acks = acks_of(client)

    async def secret(self, tenant_id: str) -> bytes:
        """The tenant's tombstone secret, created on first use (raises redis errors)."""
        found = await self.existing_secret(tenant_id)
        if found is not None:
            return found
        key = keys.erasure_secret(tenant_id)
        # Acknowledged like any write: a secret lost in a failover would be replaced
        # by a new one, and every tombstone named with the old one would be unfindable.
        candidate = secrets.token_hex(32)
        await self._acks.write(key, lambda c: c.set(key, candidate, nx=True))
        created = await self.existing_secret(tenant_id)
        if created is None:  # flushed between the SET and the GET: an outage to callers
            raise ConnectionError("the tombstone secret vanished right after it was set")
        return created

    async def existing_secret(self, tenant_id: str) -> bytes | None:
        """The tenant's tombstone secret when it exists, creating none: for reads that
        must write nothing (an import's dry run). No secret means no tombstone yet."""
        cached = self._secrets.get(tenant_id)
        if cached is not None:
            return cached
        value = await self._r.get(keys.erasure_secret(tenant_id))
        if value is None:
            return None
        secret = value if isinstance(value, bytes) else str(value).encode()
        if len(self._secrets) > _CACHE_LIMIT:
            self._secrets.clear()
        self._secrets[tenant_id] = secret
        return secret

    def cached_secret(self, tenant_id: str) -> bytes | None:
        """The tenant's secret when this process already holds it (no I/O)."""
        return self._secrets.get(tenant_id)

    @staticmethod
    @functools.lru_cache(maxsize=_DIGEST_CACHE)
    def digest(secret: bytes, recipient: Recipient) -> str:
        """The keyed hash naming a recipient's tombstone (cached: a recipient checked
        again costs a dictionary lookup, not an HMAC; the cache is bounded, least
        recently used first out, and keyed by the secret too)."""
        message = f"{recipient.channel.value}:{recipient.address}".encode()
        return hmac.digest(secret, message, "sha256").hex()  # one-shot C HMAC: same bytes

    @staticmethod
    def digester(secret: bytes) -> Callable[[Recipient], str]:
        """``digest(secret, recipient)`` for many recipients seen once (an import's):
        the keyed state is set up once and copied per name, and nothing is cached
        (a cache of names never asked again costs more than it saves)."""
        base = hmac.new(secret, digestmod=hashlib.sha256)

        def name(recipient: Recipient) -> str:
            h = base.copy()
            h.update(f"{recipient.channel.value}:{recipient.address}".encode())
            return h.hexdigest()

        return name

    async def key(self, tenant_id: str, recipient: Recipient) -> str:
        """The recipient's tombstone key."""
        secret = await self.secret(tenant_id)
        return keys.tombstone(tenant_id, recipient, self.digest(secret, recipient))

    def cached_keys(self, tenant_id: str, recipient: Recipient) -> tuple[str, str] | None:
        """:meth:`keys` without I/O when the tenant's secret is already held, else None."""
        secret = self._secrets.get(tenant_id)
        if secret is None:
            return None
        digest = self.digest(secret, recipient)
        return (
            keys.tombstone(tenant_id, recipient, digest),
            keys.message_index(tenant_id, recipient, digest),
        )

    async def keys(self, tenant_id: str, recipient: Recipient) -> tuple[str, str]:
        """The recipient's tombstone key and message index key (both named by the digest)."""
        digest = self.digest(await self.secret(tenant_id), recipient)
        return (
            keys.tombstone(tenant_id, recipient, digest),
            keys.message_index(tenant_id, recipient, digest),
        )


def newer(live: ConsentRecord | None, tomb: ConsentRecord | None) -> ConsentRecord | None:
    """The deciding one of a live record and a tombstone record of the same scope."""
    if tomb is None:
        return live
    if live is None:
        return tomb
    if (tomb.occurred_at_ms, tomb.revision) > (live.occurred_at_ms, live.revision):
        return tomb
    return live
