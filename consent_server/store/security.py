"""Redis storage for API keys, per-key rate limits and erasure (domain.security.SecurityStore).

A separate class from RedisConsentStore so security storage stays in its own module;
it shares the same Redis client and the same error mapping (fail closed).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from redis.typing import EncodableT, FieldT

from consent_server.domain.auth import ApiKeyRecord, Role
from consent_server.domain.model import Channel, Recipient
from consent_server.domain.security import AuthLookup, ErasureCounts

from . import keys
from .client import RedisClient, Reply
from .deadletters import RedisDeadLetters
from .records import fields, members, stream_entries, text
from .replication import acks_of
from .repository import guarded
from .retention import feed_keys, feed_maxlen
from .scripts import load_script
from .tombstones import TombstoneNames

T = TypeVar("T")

MAX_LISTED_KEYS = 1000
_SCAN_COUNT = 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _record(key_id: str, raw: Mapping[Reply, Reply] | None) -> ApiKeyRecord | None:
    f = fields(raw)
    if "tenant" not in f:
        return None
    return ApiKeyRecord(
        key_id=key_id,
        tenant_id=f["tenant"],
        role=Role(f["role"]),
        secret_hash=f["hash"],
        description=f.get("desc", ""),
        created_at_ms=int(f.get("at") or 0),
        created_by=f.get("by", ""),
        revoked_at_ms=int(f.get("rev_at") or 0),
        rate_limit_per_s=int(f.get("rl") or 0),
    )


class RedisSecurityStore:
    """API keys, token buckets and erasure on Redis (or the embedded fakeredis)."""

    def __init__(self, client: RedisClient, tombstones: TombstoneNames | None = None) -> None:
        self._r: RedisClient = client
        self._auth = client.register_script(load_script("authenticate.lua"))
        self._forget = client.register_script(load_script("forget.lua"))
        self._tombstones = tombstones or TombstoneNames(client)
        self._acks = acks_of(client)

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await guarded(fn)

    # -- API keys --------------------------------------------------------------------

    async def authenticate(
        self, key_id: str, secret_hash: str, default_rate: int, burst: int, cost: int = 1
    ) -> AuthLookup:
        """Look a key up and take ``cost`` rate-limit tokens if the hash matches a live
        key; the operator's rate and burst cap the key's own."""
        reply = await self._call(
            lambda: self._auth(
                keys=[keys.api_key(key_id), keys.rate_bucket(key_id)],
                args=[secret_hash, default_rate, burst, cost],
            )
        )
        if int(reply[0]) == 0:
            return AuthLookup(None, allowed=False, retry_after_ms=0)
        record = ApiKeyRecord(
            key_id=key_id,
            tenant_id=text(reply[1]),
            role=Role(text(reply[2])),
            secret_hash=text(reply[3]),
            revoked_at_ms=int(reply[4]),
        )
        return AuthLookup(record, allowed=int(reply[5]) == 1, retry_after_ms=int(reply[6]))

    async def put_key(self, record: ApiKeyRecord) -> bool:
        """Store a new key; False (nothing written) when its id already exists."""
        mapping: dict[FieldT, EncodableT] = {
            "tenant": record.tenant_id,
            "role": record.role.value,
            "hash": record.secret_hash,
            "desc": record.description,
            "at": str(record.created_at_ms),
            "by": record.created_by,
            "rl": str(record.rate_limit_per_s),
        }

        async def write() -> bool:
            # HSETNX on the first field claims the id; the rest follows.
            if not await self._r.hsetnx(keys.api_key(record.key_id), "tenant", record.tenant_id):
                return False
            await self._r.hset(keys.api_key(record.key_id), mapping=mapping)
            await self._r.zadd(
                keys.api_key_index(record.tenant_id), {record.key_id: record.created_at_ms}
            )
            # Two slots, several commands: acknowledged once both primaries' replicas have it.
            await self._acks.confirm(keys.api_key(record.key_id))
            await self._acks.confirm(keys.api_key_index(record.tenant_id))
            return True

        return await self._call(write)

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """A key's record, or None."""
        return _record(key_id, await self._call(lambda: self._r.hgetall(keys.api_key(key_id))))

    async def list_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        """A tenant's keys, oldest first (at most MAX_LISTED_KEYS)."""

        async def read() -> list[ApiKeyRecord]:
            ids = members(
                await self._r.zrange(keys.api_key_index(tenant_id), 0, MAX_LISTED_KEYS - 1)
            )
            pipe = self._r.pipeline(transaction=False)
            for key_id in ids:
                pipe.hgetall(keys.api_key(key_id))
            rows = await pipe.execute() if ids else []
            found = [_record(key_id, raw) for key_id, raw in zip(ids, rows, strict=True)]
            return [r for r in found if r is not None and r.tenant_id == tenant_id]

        return await self._call(read)

    async def revoke_key(self, key_id: str, at_ms: int) -> bool:
        """Mark a key revoked; False when it already was (the first time stays)."""
        key = keys.api_key(key_id)
        set_now: int = await self._call(
            lambda: self._acks.write(key, lambda c: c.hsetnx(key, "rev_at", str(at_ms)))
        )
        return bool(set_now)

    # -- erasure ---------------------------------------------------------------------

    async def forget(
        self, tenant_id: str, recipient: Recipient, erasure_id: str, principal: str
    ) -> ErasureCounts:
        """Erase a recipient and keep its suppression tombstone (forget.lua)."""
        part = keys.partition(tenant_id, recipient)
        base = keys.recipient_base(tenant_id, recipient)

        async def erase() -> Any:
            secret = await self._tombstones.secret(tenant_id)
            digest = TombstoneNames.digest(secret, recipient)
            # Every key under the recipient's prefix: idempotency keys, and whatever
            # per-recipient data other features keep there.
            prefix = base + ":"
            found = [
                text(k)
                async for k in self._r.scan_iter(
                    match=keys.glob_escape(prefix) + "*", count=_SCAN_COUNT
                )
            ]
            idem = sorted(k for k in found if k.startswith(prefix + "i:"))
            other = sorted(k for k in found if not k.startswith(prefix + "i:"))
            bucket, hist_prefix, descriptor = keys.layout(tenant_id, recipient, part)
            messages = await self._messages_of(tenant_id, part, recipient)
            entries = await self._outbox_entries(tenant_id, part, recipient)
            # The scans above find what was there before this change; the script reads
            # the recipient's message index itself, so a message accepted meanwhile is
            # found too (the scans remain for messages from before the index existed).
            script_keys = [
                bucket,
                hist_prefix,
                keys.tombstone(tenant_id, recipient, digest),
                keys.outbox(part),
                keys.erasure_log(tenant_id, part),
                keys.retry_queue(part),
                keys.retry_data(part),
                keys.message_index(tenant_id, recipient, digest),
                *feed_keys(tenant_id, part),
                *idem,
                *other,
                *messages,
            ]
            args = [
                len(idem),
                len(other),
                len(messages),
                erasure_id,
                principal,
                recipient.channel.value,
                digest,
                keys.message_prefix(tenant_id, part),
                feed_maxlen(self._r),
                tenant_id,
                descriptor,
                base,
                *entries,
            ]
            return await self._acks.write(
                script_keys[0], lambda c: self._forget(keys=script_keys, args=args, client=c)
            )

        reply = await self._call(erase)
        records, events, idem_n, cancelled, erased, other_n = (int(x) for x in reply[:6])
        # A provider's message id can encode the address (a WhatsApp wamid holds the
        # wa_id): its way back to our message goes too. Those keys carry no partition
        # tag, so they cannot be in the script; they map to nothing once it ran.
        for pid in reply[6] or []:
            key = keys.provider_message(tenant_id, text(pid))
            await self._call(partial(self._r.delete, key))
        # WhatsApp notifications kept as dead letters hold the raw item, which names the
        # person: they go too (counted with the other per-recipient records).
        if recipient.channel is Channel.WHATSAPP:
            other_n += await RedisDeadLetters(self._r).forget_dead_letters(
                tenant_id, recipient.address.lstrip("+")
            )
        scopes = sorted(text(f).removeprefix("s:").replace("*", "") for f in reply[7:])
        return ErasureCounts(
            records_removed=records,
            events_removed=events,
            idempotency_entries_removed=idem_n,
            messages_cancelled=cancelled,
            messages_erased=erased,
            other_records_removed=other_n,
            suppressed_topics=scopes,
        )

    async def _messages_of(self, tenant_id: str, part: int, recipient: Recipient) -> list[str]:
        """The status hashes of the recipient's messages (found by scanning the partition)."""
        found: list[str] = []
        batch: list[str] = []

        async def flush() -> None:
            pipe = self._r.pipeline(transaction=False)
            for key in batch:
                pipe.hmget(key, ["ch", "addr"])
            for key, (ch, addr) in zip(batch, await pipe.execute(), strict=True):
                if text(ch) == recipient.channel.value and text(addr) == recipient.address:
                    found.append(key)
            batch.clear()

        async for key in self._r.scan_iter(
            match=keys.message_pattern(tenant_id, part), count=_SCAN_COUNT
        ):
            batch.append(text(key))
            if len(batch) >= _SCAN_COUNT:
                await flush()
        if batch:
            await flush()
        return found

    async def _outbox_entries(self, tenant_id: str, part: int, recipient: Recipient) -> list[str]:
        """Ids of the recipient's entries in its partition's outbox stream."""
        out: list[str] = []
        start = "-"
        while True:
            entries = stream_entries(
                await self._r.xrange(keys.outbox(part), start, "+", count=_SCAN_COUNT)
            )
            for entry_id, f in entries:
                if (
                    f.get("tenant") == tenant_id
                    and f.get("ch") == recipient.channel.value
                    and f.get("addr") == recipient.address
                ):
                    out.append(entry_id)
            if len(entries) < _SCAN_COUNT:
                return out
            start = "(" + entries[-1][0]
