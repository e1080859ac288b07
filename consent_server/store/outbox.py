"""The delivery side of the store: outbox consumer group, claims, outcomes, retries and
delivery receipts (docs/outbox.md is the stream contract); the domain sees it through
the DeliveryOutbox and ReceiptStore ports. Provider settings live in providers.py.

Kept beside RedisConsentStore rather than inside it so the consent repository stays
about consent; both share one Redis client and the same key schema (keys.py). Every
step that must not interleave with a consent change is one Lua script.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import redis.exceptions as rex
from redis.typing import KeyT, StreamIdT

from consent_server.domain.delivery import ReceiptOutcome, ReceiptStatus
from consent_server.domain.model import Policy
from consent_server.domain.outbox import OutboxEntry, lenient_int

from . import keys
from .client import RedisClient
from .records import stream_entries, stream_reads, text
from .replication import acks_of
from .repository import MESSAGE_RETENTION_S, UNAVAILABLE_ERRORS, guarded
from .scripts import load_script
from .tombstones import TombstoneNames

T = TypeVar("T")

GROUP = "delivery"


__all__ = ["GROUP", "Claim", "DeliveryRepository", "OutboxEntry"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The claim script's verdict on an entry.

    ``kind``: ``go`` (hand it to the provider; ``attempts`` counts this try),
    ``cancelled`` (consent no longer allows it; ``reason`` says why), ``expired``,
    ``final`` (already in a final ``state``), ``gone`` (no status record).
    """

    kind: str
    attempts: int = 0
    reason: str = ""
    state: str = ""


class DeliveryRepository:
    """Outbox consumption and delivery bookkeeping on Redis (or the embedded fakeredis)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        cluster: bool = False,
        retention_s: int = MESSAGE_RETENTION_S,
    ) -> None:
        self._r: RedisClient = client
        self._cluster = cluster
        self._retention_s = retention_s
        # fakeredis (the embedded store; seen with 2.41.0) keeps a blocking XREADGROUP
        # armed after its caller was cancelled and the connection dropped: the abandoned
        # read later takes the next entry for a consumer that has stopped (and was
        # retired), so that entry waits for a reclaim. Real Redis discards a
        # disconnected client's block. On fakeredis reads never block; the worker polls.
        self._may_block = not type(client).__module__.startswith("fakeredis")
        # The claim's re-check consults erasure tombstones, as the send decision does.
        self._tombstones = TombstoneNames(client)
        self._acks = acks_of(client)
        self._claim = client.register_script(load_script("claim.lua"))
        self._finish = client.register_script(load_script("finish.lua"))
        self._requeue = client.register_script(load_script("requeue.lua"))
        self._receipt = client.register_script(load_script("receipt.lua"))

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await guarded(fn)

    async def _each_partition(
        self, queue: Callable[[Any, int], object], parts: Sequence[int] | None = None
    ) -> list[Any]:
        """One command per partition (``queue(pipe, part)`` adds it), sent as one
        pipeline: one round trip in all on one Redis, one per master on a cluster
        (redis-py groups a cluster pipeline by node), instead of one per partition.
        The replies come back in partition order; an error reply is returned in its
        place (not raised), for the caller to judge."""
        chosen = range(keys.partitions()) if parts is None else parts

        async def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for part in chosen:
                queue(pipe, part)
            replies = list(await pipe.execute(raise_on_error=False))
            # A node that timed out or dropped the connection is an outage, whichever
            # partition it served: raised here, guarded() makes it StoreUnavailable.
            for reply in replies:
                if isinstance(reply, UNAVAILABLE_ERRORS):
                    raise reply
            return replies

        return await self._call(run)

    # -- consumer group ---------------------------------------------------------------

    async def ensure_groups(self) -> None:
        """Create the consumer group on every partition's outbox (from the start)."""
        replies = await self._each_partition(
            lambda pipe, p: pipe.xgroup_create(keys.outbox(p), GROUP, id="0", mkstream=True)
        )
        for reply in replies:  # BUSYGROUP: the group exists already, as wanted
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply

    def _entries(self, part: int, rows: Sequence[Any]) -> list[OutboxEntry]:
        return [
            OutboxEntry(part, entry_id, f, keys.message_partition(f.get("id", "")))
            for entry_id, f in stream_entries(rows)
        ]

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[OutboxEntry]:
        """New entries for ``consumer`` from every partition (they become its pending ones).

        ``block_ms`` waits that long for entries (None = answer at once; never 0, which
        Redis reads as "forever"). The embedded store always answers at once."""
        if not self._may_block:
            block_ms = None
        try:
            return await self._read(consumer, count, block_ms)
        except rex.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_groups()  # the streams were deleted (FLUSHDB): start again
            return []

    async def _read(self, consumer: str, count: int, block_ms: int | None) -> list[OutboxEntry]:
        if not self._cluster:
            # One XREADGROUP over every partition's stream (one node holds them all).
            streams: dict[KeyT, StreamIdT] = {keys.outbox(p): ">" for p in range(keys.partitions())}
            reply = await self._call(
                lambda: self._r.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
            )
            out: list[OutboxEntry] = []
            for name, rows in stream_reads(reply):
                part = keys.partition_of_key(name)
                if part is not None:
                    out.extend(self._entries(part, rows))
            return out
        # On a cluster the partitions live on different nodes and a multi-key command
        # must stay in one slot: one non-blocking read per partition, pipelined, so the
        # whole pass costs one round trip per master.
        replies = await self._each_partition(
            lambda pipe, p: pipe.xreadgroup(GROUP, consumer, {keys.outbox(p): ">"}, count=count)
        )
        out = []
        errors = []
        for part, reply in enumerate(replies):
            if isinstance(reply, Exception):
                errors.append(reply)
                continue
            for _name, rows in stream_reads(reply):
                out.extend(self._entries(part, rows))
        # The entries read are this consumer's now: hand them over even when another
        # partition answered an error (raising would leave them to wait for a reclaim).
        if errors and not out:
            raise errors[0]
        return out

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[OutboxEntry]:
        """Take over entries another consumer left pending for ``min_idle_ms`` (it crashed)."""
        replies = await self._each_partition(
            lambda pipe, p: pipe.xautoclaim(
                keys.outbox(p), GROUP, consumer, min_idle_ms, start_id="0-0", count=count
            )
        )
        out: list[OutboxEntry] = []
        missing_group = False
        for part, reply in enumerate(replies):
            if isinstance(reply, rex.ResponseError) and "NOGROUP" in str(reply):
                missing_group = True
                continue
            if isinstance(reply, Exception):
                raise reply
            rows = [row for row in reply[1] if row and row[1]]
            out.extend(self._entries(part, rows))
        if missing_group:
            await self.ensure_groups()
        return out

    async def touch(self, consumer: str, entries: Sequence[OutboxEntry]) -> None:
        """Reset the idle time of entries ``consumer`` is still working on (a heartbeat), so
        a slow provider call is not mistaken for a crashed worker and reclaimed."""
        by_part: dict[int, list[StreamIdT]] = {}
        for entry in entries:
            by_part.setdefault(entry.partition, []).append(entry.entry_id)
        for part, ids in by_part.items():
            await self._call(
                partial(self._r.xclaim, keys.outbox(part), GROUP, consumer, 0, ids, justid=True)
            )

    async def retire(self, consumer: str) -> None:
        """Remove ``consumer`` from the group where it holds nothing pending (a clean stop),
        so consumer names of stopped processes do not pile up. Where it still holds
        entries it stays, and another worker reclaims them."""
        held = await self._each_partition(
            lambda pipe, p: pipe.xpending_range(
                keys.outbox(p), GROUP, min="-", max="+", count=1, consumername=consumer
            )
        )
        # No group there (streams flushed) is an error reply: nothing to retire.
        idle = [p for p, reply in enumerate(held) if not isinstance(reply, Exception) and not reply]
        if idle:
            await self._each_partition(
                lambda pipe, p: pipe.xgroup_delconsumer(keys.outbox(p), GROUP, consumer), idle
            )

    async def drop(self, entry: OutboxEntry) -> None:
        """Acknowledge and delete an entry that cannot be acted on (malformed)."""
        key = keys.outbox(entry.partition)

        async def run() -> None:
            await self._r.xack(key, GROUP, entry.entry_id)
            await self._r.xdel(key, entry.entry_id)

        await self._call(run)

    # -- claim and outcome --------------------------------------------------------------

    async def claim(self, entry: OutboxEntry, policy: Policy) -> Claim:
        """Re-check consent and claim the entry for one provider attempt (claim.lua)."""
        rcpt = entry.recipient
        assert rcpt is not None
        bucket, _, descriptor = keys.layout(entry.tenant_id, rcpt)
        tombstone = await self._call(lambda: self._tombstones.key(entry.tenant_id, rcpt))
        script_keys = [
            bucket,
            keys.message(entry.tenant_id, entry.partition, entry.message_id),
            keys.outbox(entry.partition),
            tombstone,
        ]
        args: list[str | int] = [
            GROUP,
            entry.entry_id,
            entry.purpose,
            keys.scope_field(entry.topic),
            "allow" if policy is Policy.ALLOW_UNLESS_OPTED_OUT else "require_opt_in",
            entry.not_after_ms,
            self._retention_s,
            rcpt.channel.value,
            rcpt.address,
            entry.topic,
            entry.accepted_at_ms,
            descriptor,
        ]
        reply = await self._call(lambda: self._claim(keys=script_keys, args=args))
        kind = text(reply[0])
        if kind == "go":
            return Claim("go", attempts=int(reply[1]))
        if kind == "cancelled":
            return Claim("cancelled", reason=text(reply[1]))
        if kind == "final":
            return Claim("final", state=text(reply[1]))
        return Claim(kind)

    async def finish(
        self,
        entry: OutboxEntry,
        outcome: str,
        *,
        error: str = "",
        provider_message_id: str = "",
        provider: str = "",
        retry_due_ms: int = 0,
    ) -> str:
        """Record a provider outcome (finish.lua): ``done``, ``retry`` or ``stale``."""
        part = entry.partition
        script_keys = [
            keys.message(entry.tenant_id, part, entry.message_id),
            keys.outbox(part),
            keys.retry_queue(part),
            keys.retry_data(part),
        ]
        args: list[str | int] = [
            GROUP,
            entry.entry_id,
            outcome,
            error[:1000],
            provider_message_id,
            provider,
            self._retention_s,
            entry.message_id,
            retry_due_ms,
            json.dumps(entry.fields, ensure_ascii=False, separators=(",", ":"))
            if outcome == "retry"
            else "",
        ]
        reply = await self._call(lambda: self._finish(keys=script_keys, args=args))
        result = text(reply[0])
        if result == "done" and provider_message_id:
            # Receipts name the provider's id: keep the way back to ours for as long as
            # the status is kept. Not in the script: this key has no partition tag.
            await self._call(
                lambda: self._r.set(
                    keys.provider_message(entry.tenant_id, provider_message_id),
                    entry.message_id,
                    ex=self._retention_s,
                )
            )
        return result

    async def requeue_due(self, now_ms: int, limit: int = 100) -> int:
        """Move retries that are due back onto their outbox; returns how many moved."""
        # Which partitions have due retries: one pipelined pass (most have none).
        due = await self._each_partition(
            lambda pipe, p: pipe.zrangebyscore(
                keys.retry_queue(p), "-inf", now_ms, start=0, num=limit
            )
        )
        moved = 0
        for part, ids in enumerate(due):
            if isinstance(ids, Exception):
                raise ids
            if ids:
                moved += await self._requeue_part(part, ids)
        return moved

    async def _requeue_part(self, part: int, ids: Sequence[Any]) -> int:
        rq, data = keys.retry_queue(part), keys.retry_data(part)
        payloads = await self._call(lambda: self._r.hmget(data, ids))
        moved = 0
        for ident, payload in zip(ids, payloads, strict=True):
            fields: dict[str, str] = json.loads(text(payload)) if payload else {}
            if not fields:  # lost its entry: nothing to resend; drop the retry
                await self._call(partial(self._r.zrem, rq, ident))
                continue
            flat = [x for kv in fields.items() for x in kv]
            script_keys = [
                rq,
                data,
                keys.outbox(part),
                keys.message(fields.get("tenant", ""), part, text(ident)),
            ]
            moved += int(
                await self._call(
                    partial(self._requeue, keys=script_keys, args=[text(ident), *flat])
                )
            )
        return moved

    # -- observation ---------------------------------------------------------------------

    async def backlog(self) -> tuple[int, int | None]:
        """(messages waiting in outboxes and retry queues, acceptance ms of the oldest)."""

        def queue(pipe: Any, p: int) -> None:
            pipe.xlen(keys.outbox(p))
            pipe.zcard(keys.retry_queue(p))
            pipe.xrange(keys.outbox(p), "-", "+", count=1)

        replies = await self._each_partition(queue)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        total, oldest = 0, None
        for n, r, first in zip(replies[0::3], replies[1::3], replies[2::3], strict=True):
            total += int(n) + int(r)
            if first:
                at = lenient_int(text(first[0][1].get(b"at") or first[0][1].get("at")))
                if at and (oldest is None or at < oldest):
                    oldest = at
        return total, oldest

    # -- delivery receipts -----------------------------------------------------------------

    async def apply_receipt(
        self,
        tenant_id: str,
        receipt: ReceiptStatus,
        *,
        message_id: str = "",
        provider_message_id: str = "",
        error: str = "",
    ) -> tuple[ReceiptOutcome, str]:
        """Apply a provider receipt found by our id or the provider's; unknown ids are
        ignored. Returns the outcome and our message id ("" when unknown)."""
        if not message_id and provider_message_id:
            found = await self._call(
                lambda: self._r.get(keys.provider_message(tenant_id, provider_message_id))
            )
            message_id = text(found)
        part = keys.message_partition(message_id) if message_id else None
        if part is None:
            return ReceiptOutcome.UNKNOWN, ""
        reply = await self._call(
            lambda: self._receipt(
                keys=[keys.message(tenant_id, part, message_id)],
                args=[receipt.value, error[:1000]],
            )
        )
        outcome = ReceiptOutcome(text(reply))
        return outcome, message_id if outcome is not ReceiptOutcome.UNKNOWN else ""
