"""What point-in-time checks read (domain.ports.ConsentHistory): whole histories (one
history_page.lua call per partition) and erasure tombstone records (one pipeline per
partition), the partitions concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from consent_server.domain.model import ConsentEvent, Recipient
from consent_server.domain.ports import RecordPair

from . import keys
from .client import RedisClient, RedisPipeline
from .records import parse_event, parse_record, text
from .repository import guarded
from .scripts import load_script
from .tombstones import TombstoneNames


class RedisConsentHistory:
    """Reads recipients' histories and tombstones for CheckConsent ``at``."""

    def __init__(self, client: RedisClient, tombstones: TombstoneNames | None = None) -> None:
        self._r: RedisClient = client
        self._tombstones = tombstones or TombstoneNames(client)
        self._page = client.register_script(load_script("history_page.lua"))

    async def _per_partition(
        self,
        tenant_id: str,
        recipients: Sequence[Recipient],
        command: Callable[[RedisPipeline, Recipient], object],
    ) -> list[Any]:
        groups = keys.by_partition(tenant_id, recipients)

        async def run(positions: list[int]) -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for n in positions:
                command(pipe, recipients[n])
            replies: list[Any] = await pipe.execute()
            return replies

        async def read() -> list[Any]:
            return list(await asyncio.gather(*(run(p) for p in groups.values())))

        replies = await guarded(read)
        out: list[Any] = [None] * len(recipients)
        for positions, reply in zip(groups.values(), replies, strict=True):
            for n, r in zip(positions, reply, strict=True):
                out[n] = r
        return out

    async def histories(
        self, tenant_id: str, recipients: Sequence[Recipient]
    ) -> list[list[ConsentEvent]]:
        """Each recipient's whole history, oldest first (history_page.lua, pipelined)."""

        groups = keys.by_partition(tenant_id, recipients)

        async def run(part: int, positions: list[int]) -> list[Any]:
            kk: list[str] = []
            args: list[str | int] = []
            for n in positions:
                bucket, prefix, descriptor = keys.layout(tenant_id, recipients[n], part)
                kk += (bucket, prefix)
                args += (descriptor, 0, 0)
            reply: list[Any] = await self._page(keys=kk, args=args)
            return reply

        async def read() -> list[Any]:
            return list(await asyncio.gather(*(run(p, n) for p, n in groups.items())))

        per_group = await guarded(read)
        replies: list[Any] = [None] * len(recipients)
        for positions, reply in zip(groups.values(), per_group, strict=True):
            for n, r in zip(positions, reply, strict=True):
                replies[n] = r
        return [
            [parse_event(int(r[i]), text(r[i + 1])) for i in range(len(r) - 2, -1, -2)]
            for r in replies
        ]

    async def tombstone_records(
        self, tenant_id: str, recipients: Sequence[Recipient], topic: str
    ) -> list[RecordPair]:
        """Each recipient's tombstone records (topic, all topics)."""
        secret = await guarded(lambda: self._tombstones.secret(tenant_id))
        fields = [keys.scope_field(topic), keys.scope_field("")]

        def command(pipe: RedisPipeline, rcpt: Recipient) -> None:
            digest = TombstoneNames.digest(secret, rcpt)
            pipe.hmget(keys.tombstone(tenant_id, rcpt, digest), fields)

        replies = await self._per_partition(tenant_id, recipients, command)
        return [(parse_record(r[0]) if topic else None, parse_record(r[1])) for r in replies]
