"""Change webhooks on Redis (domain.change_webhooks.ChangeWebhookStore).

The endpoint configurations live in one hash per tenant (next to its providers); the
dispatcher's state of each endpoint (cursor, delivery log, dead letters, lease) shares
one hash tag per endpoint. Writes to different slots are separate commands, ordered so
that a crash between them leaves nothing a reader would act on: a new endpoint's
cursor is written before the endpoint itself, and a deletion removes the endpoint
before its state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consent_server.domain.change_webhooks import (
    DEAD_KEEP,
    LOG_KEEP,
    ChangeWebhook,
    DeliveryRecord,
)

from . import keys
from .client import RedisClient
from .records import fields, text
from .replication import acks_of
from .repository import guarded
from .scripts import load_script

_STATE = ("cursor", "log", "dead", "lease", "redrive")


class RedisChangeWebhooks:
    """The ChangeWebhookStore port on one Redis client (a node or a cluster)."""

    def __init__(self, client: RedisClient) -> None:
        self._r: Any = client
        self._acks = acks_of(client)
        self._lease = client.register_script(load_script("change_webhook_lease.lua"))

    async def get(self, tenant_id: str, name: str) -> ChangeWebhook | None:
        """One endpoint, or None."""
        raw = await guarded(lambda: self._r.hget(keys.change_webhooks(tenant_id), name))
        return None if raw is None else ChangeWebhook.decode(tenant_id, name, text(raw))

    async def endpoints(self, tenant_id: str) -> list[ChangeWebhook]:
        """The tenant's endpoints by name."""
        raw = fields(await guarded(lambda: self._r.hgetall(keys.change_webhooks(tenant_id))))
        return [ChangeWebhook.decode(tenant_id, n, raw[n]) for n in sorted(raw)]

    async def put(self, hook: ChangeWebhook, cursor: Sequence[str] | None) -> None:
        """Store an endpoint; a new one's cursor first."""
        t, n = hook.tenant_id, hook.name
        if cursor is not None:
            ck = keys.change_webhook(t, n, "cursor")

            async def reset(c: Any) -> None:
                state = [keys.change_webhook(t, n, s) for s in _STATE]
                await c.delete(*state)
                await c.hset(ck, mapping={str(p): pos for p, pos in enumerate(cursor)})

            await guarded(lambda: self._acks.write(ck, reset))
        key = keys.change_webhooks(t)
        await guarded(lambda: self._acks.write(key, lambda c: c.hset(key, n, hook.encode())))
        await guarded(lambda: self._r.sadd(keys.change_webhook_index(), f"{t}/{n}"))

    async def delete(self, tenant_id: str, name: str) -> bool:
        """Remove an endpoint, then its state; False when absent."""
        key = keys.change_webhooks(tenant_id)
        removed = await guarded(lambda: self._acks.write(key, lambda c: c.hdel(key, name)))
        await guarded(lambda: self._r.srem(keys.change_webhook_index(), f"{tenant_id}/{name}"))
        state = [keys.change_webhook(tenant_id, name, s) for s in _STATE]
        await guarded(lambda: self._r.delete(*state))
        return bool(removed)

    async def all_endpoints(self) -> list[tuple[str, str]]:
        """Every registered (tenant, name)."""
        members = await guarded(lambda: self._r.smembers(keys.change_webhook_index()))
        out: list[tuple[str, str]] = []
        for m in sorted(text(x) for x in members):
            tenant, sep, name = m.partition("/")
            if sep:
                out.append((tenant, name))
        return out

    async def cursor(self, tenant_id: str, name: str) -> list[str]:
        """The endpoint's positions ("0-0" where none is stored)."""
        raw = fields(
            await guarded(lambda: self._r.hgetall(keys.change_webhook(tenant_id, name, "cursor")))
        )
        return [raw.get(str(p), "0-0") for p in range(keys.partitions())]

    async def advance(self, tenant_id: str, name: str, part: int, entry_id: str) -> None:
        """Store one partition's position."""
        ck = keys.change_webhook(tenant_id, name, "cursor")
        await guarded(lambda: self._r.hset(ck, str(part), entry_id))

    async def record(self, tenant_id: str, name: str, item: DeliveryRecord) -> None:
        """Append to the bounded log (and the dead letters)."""
        log_key = keys.change_webhook(tenant_id, name, "log")
        dead_key = keys.change_webhook(tenant_id, name, "dead")
        value = item.encode()

        async def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.lpush(log_key, value)
            pipe.ltrim(log_key, 0, LOG_KEEP - 1)
            if item.status == "dead_letter":
                pipe.lpush(dead_key, value)
                pipe.ltrim(dead_key, 0, DEAD_KEEP - 1)
            await pipe.execute()

        await guarded(run)

    async def deliveries(
        self, tenant_id: str, name: str, limit: int
    ) -> tuple[list[DeliveryRecord], list[DeliveryRecord]]:
        """The newest log items and dead letters, newest first."""
        log_key = keys.change_webhook(tenant_id, name, "log")
        dead_key = keys.change_webhook(tenant_id, name, "dead")
        logged = await guarded(lambda: self._r.lrange(log_key, 0, limit - 1))
        dead = await guarded(lambda: self._r.lrange(dead_key, 0, limit - 1))
        return (
            [DeliveryRecord.decode(text(x)) for x in logged],
            [DeliveryRecord.decode(text(x)) for x in dead],
        )

    async def redrive(self, tenant_id: str, name: str, event_id: str) -> bool:
        """Move the newest dead letter of ``event_id`` to the redrive queue."""
        dead_key = keys.change_webhook(tenant_id, name, "dead")
        queue = keys.change_webhook(tenant_id, name, "redrive")

        async def run() -> bool:
            if await self._r.lpos(queue, event_id) is not None:
                return True  # already pending
            for raw in await self._r.lrange(dead_key, 0, -1):
                if DeliveryRecord.decode(text(raw)).event_id == event_id:
                    pipe = self._r.pipeline(transaction=True)  # one slot: MULTI is fine
                    pipe.lrem(dead_key, 1, raw)
                    pipe.rpush(queue, event_id)
                    await pipe.execute()
                    return True
            return False

        return bool(await guarded(run))

    async def redrives(self, tenant_id: str, name: str) -> list[str]:
        """The pending redrives, oldest first (at most 100 a pass)."""
        queue = keys.change_webhook(tenant_id, name, "redrive")
        return [text(x) for x in await guarded(lambda: self._r.lrange(queue, 0, 99))]

    async def redriven(self, tenant_id: str, name: str, event_id: str) -> None:
        """Take ``event_id`` off the redrive queue."""
        queue = keys.change_webhook(tenant_id, name, "redrive")
        await guarded(lambda: self._r.lrem(queue, 0, event_id))

    async def lease(self, tenant_id: str, name: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew the endpoint's dispatch lease."""
        key = keys.change_webhook(tenant_id, name, "lease")
        got = await guarded(lambda: self._lease(keys=[key], args=[owner, ttl_ms]))
        return int(got) == 1


__all__ = ["RedisChangeWebhooks"]
