"""The change feed on Redis (domain.ports.ChangeFeedStore).

record_event.lua and forget.lua append to ``ca:{<partition tag>}:<tenant>:feed`` in the same
step that applies a change, so the feed holds exactly the applied changes. Each
stream lives in its partition's hash tag, so those scripts stay single-slot on Redis
Cluster; feed_read.lua reads one partition's stream and its trim mark atomically.
The retention (CONSENT_FEED_MAXLEN entries per stream) is configured per client,
like replica acknowledgement, so every store object on a client agrees on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster

from consent_server.domain.feed import FeedEntry, FeedTrimmed
from consent_server.domain.model import Action, Channel, Source

from . import keys
from .client import RedisClient
from .records import text
from .repository import guarded
from .retention import feed_keys
from .scripts import load_script

_CHANNELS = {c.value: c for c in Channel}
_ACTIONS = {a.value: a for a in Action}
_SOURCES = {s.value: s for s in Source}


def _int(value: Any) -> int:
    try:
        return int(text(value) or 0)
    except ValueError:
        return 0


def parse_entry(entry_id: Any, flat: Sequence[Any]) -> FeedEntry:
    """A stream entry as written by record_event.lua / forget.lua."""
    f = {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}
    return FeedEntry(
        entry_id=text(entry_id),
        kind=f.get("k", "change"),
        tenant_id=f.get("tn", ""),
        channel=_CHANNELS.get(f.get("ch", "")),
        address=f.get("addr", ""),
        action=_ACTIONS.get(f.get("a", "")),
        topic=f.get("t", ""),
        source=_SOURCES.get(f.get("s", "")),
        occurred_at_ms=_int(f.get("o")),
        recorded_at_ms=_int(f.get("r")),
        revision=_int(f.get("rev")),
        source_event_id=f.get("id", ""),
        status_changed=f.get("chg") == "1",
        principal=f.get("p", ""),
    )


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve a shielded read's error once nobody awaits it (no "never retrieved")."""
    if not task.cancelled():
        task.exception()


class RedisChangeFeed:
    """Reads the per-partition feed streams: one script call per partition, all of them
    in one pipeline on a single Redis (one round trip however many partitions), and
    concurrently on a cluster (each call goes to its slot's node)."""

    def __init__(self, client: RedisClient) -> None:
        self._r: Any = client
        self._cluster = isinstance(client, RedisCluster)
        self._read = client.register_script(load_script("feed_read.lua"))
        self._loaded = False  # feed_read.lua known to this Redis (single node only)

    @property
    def partitions(self) -> int:
        """How many partitions (positions per token)."""
        return keys.partitions()

    async def _each(self, tenant_id: str, args: Sequence[Sequence[str | int]]) -> list[Any]:
        async def run() -> list[Any]:
            if self._cluster:
                calls = [
                    self._read(keys=feed_keys(tenant_id, part), args=list(a))
                    for part, a in enumerate(args)
                ]
                return list(await asyncio.gather(*calls))
            # EVALSHA queued directly: a Script handed to a pipeline makes redis-py ask
            # SCRIPT EXISTS before every execute, one more round trip per poll. The
            # script is loaded once (again after NOSCRIPT: Redis restarted or flushed).
            for _ in range(2):
                if not self._loaded:
                    self._read.sha = text(await self._r.script_load(self._read.script))
                    self._loaded = True
                pipe = self._r.pipeline(transaction=False)
                for part, a in enumerate(args):
                    pipe.evalsha(self._read.sha, 2, *feed_keys(tenant_id, part), *a)
                # Shielded: a watcher cancelled mid-pipeline (the client went away) must
                # not leave its connection half-read for the next user (seen on
                # fakeredis); the read completes and its replies, or its error, are dropped.
                read = asyncio.ensure_future(pipe.execute())
                read.add_done_callback(_drop_outcome)
                try:
                    return list(await asyncio.shield(read))
                except rex.NoScriptError:
                    self._loaded = False
            raise rex.NoScriptError("feed_read.lua is not loaded")

        return await guarded(run)

    async def latest(self, tenant_id: str) -> list[str]:
        """Positions after every entry stored now."""
        replies = await self._each(tenant_id, [["latest"]] * keys.partitions())
        return [text(r) for r in replies]

    async def oldest(self, tenant_id: str) -> list[str]:
        """Positions before the oldest entry still retained."""
        replies = await self._each(tenant_id, [["oldest"]] * keys.partitions())
        return [text(r) for r in replies]

    async def trimmed_parts(self, tenant_id: str, positions: Sequence[str]) -> list[int]:
        """The partitions whose entries after ``positions`` were trimmed away."""
        replies = await self._each(tenant_id, [["read", p, 1] for p in positions])
        return [part for part, r in enumerate(replies) if int(r[0]) == 1]

    async def read(
        self, tenant_id: str, positions: Sequence[str], count: int
    ) -> list[tuple[int, list[FeedEntry]]]:
        """Up to ``count`` entries after each position; FeedTrimmed when the reader fell
        behind the retention in some partition."""
        replies = await self._each(tenant_id, [["read", p, count] for p in positions])
        out: list[tuple[int, list[FeedEntry]]] = []
        for part, reply in enumerate(replies):
            if int(reply[0]) == 1:
                raise FeedTrimmed(part)
            entries = [parse_entry(e[0], e[1]) for e in reply[1]]
            if entries:
                out.append((part, entries))
        return out


__all__ = ["RedisChangeFeed", "parse_entry"]
