"""WAIT-based acknowledgement: a write is acknowledged only once replicas hold it.

Redis replicates asynchronously: a primary answers a write before any replica has it,
so a primary that crashes right after answering loses an acknowledged opt-out when its
replica is promoted. With ``min_replicas`` > 0 every acknowledged write goes through
``ReplicaAck.write``: the write runs on one connection to the primary that owns its
key's slot, then, on that same connection, a small fence write and ``WAIT min_replicas
timeout_ms``. If fewer replicas confirmed in time the caller gets
ReplicationNotAcknowledged (UNAVAILABLE): applied on the primary, not yet replicated,
safe to retry with the same event_id / idempotency_key.

Why the fence: WAIT waits for the last write *of its connection*. A retried event is a
replay that writes nothing, so without the fence WAIT would not cover the first,
unreplicated write of that event. The fence (a short-lived key in the same slot) moves
the connection's offset to the primary's current one, which covers every earlier write
to that primary by anyone.

Why one pinned connection and no redirects: if the slot moved between the write and the
WAIT (a failover), a WAIT on the new primary would vouch for a write it never saw. A
pinned connection that breaks, or a MOVED reply, fails the call instead (safe to retry),
and the slot map is refreshed for the next one.

Reads never go through here. What this does and does not guarantee is in the README
("Durability: replicas and WAIT"): it is not strong consistency.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from consent_server.domain.errors import ReplicationNotAcknowledged, StoreUnavailable

from .client import RedisClient

T = TypeVar("T")

FENCE_TTL_MS = 60_000
# A pinned connection per call: enough for the server's concurrency, bounded per node.
_NODE_POOL_SIZE = 128


class ReplicaAck:
    """Runs writes so that they are acknowledged only once ``min_replicas`` replicas
    confirmed them within ``timeout_ms`` (``min_replicas`` = 0: run them plainly)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        min_replicas: int = 0,
        timeout_ms: int = 1000,
        timeout_s: float = 2.0,
    ) -> None:
        self._client = client
        self.min_replicas = min_replicas
        self.timeout_ms = timeout_ms
        self._timeout_s = timeout_s
        self._node_pools: dict[str, aioredis.BlockingConnectionPool] = {}
        self._refreshing = False

    @property
    def enabled(self) -> bool:
        """True when writes wait for replicas."""
        return self.min_replicas > 0

    async def write(self, key: str, fn: Callable[[RedisClient], Awaitable[T]]) -> T:
        """Run ``fn(client)`` (its commands must all touch ``key``'s slot) and, when
        enabled, wait for the replicas on the same connection.

        Raises ReplicationNotAcknowledged, StoreUnavailable, or redis errors (which the
        store's guard turns into StoreUnavailable)."""
        if not self.enabled:
            return await fn(self._client)
        try:
            async with self._pinned(key) as conn:
                result = await fn(conn)
                fence = _fence_key(key)
                if fence is not None:
                    await conn.set(fence, "1", px=FENCE_TTL_MS)
                acked = int(await conn.wait(self.min_replicas, self.timeout_ms))
        except (rex.MovedError, rex.AskError) as exc:  # the slot moved: not ours to vouch for
            await self._refresh()
            raise StoreUnavailable(f"consent store unreachable: {type(exc).__name__}") from exc
        except (rex.ConnectionError, rex.TimeoutError, OSError):
            await self._refresh()
            raise
        if acked < self.min_replicas:
            raise ReplicationNotAcknowledged(
                f"the change was applied on the primary but only {acked} of "
                f"{self.min_replicas} replicas confirmed it within {self.timeout_ms} ms"
            )
        return result

    async def confirm(self, key: str) -> None:
        """When enabled, wait until everything the primary of ``key``'s slot holds now is
        replicated: for a write made of several commands on several slots, call it for
        each slot after the write."""
        await self.write(key, _nothing)

    @contextlib.asynccontextmanager
    async def _pinned(self, key: str) -> AsyncIterator[aioredis.Redis]:
        """A client bound to one connection to the primary that owns ``key``'s slot."""
        if isinstance(self._client, RedisCluster):
            await self._client.initialize()
            node = self._client.get_node_from_key(key)
            if node is None:  # no primary serves the slot (not covered)
                raise StoreUnavailable("consent store unreachable: slot not served")
            pool = self._node_pools.get(node.name)
            if pool is None:
                kwargs = dict(node.connection_kwargs)
                # No silent retries on the pinned connection: a retry could land on a
                # different primary after a failover. The caller retries instead.
                kwargs["retry"] = Retry(NoBackoff(), 0)
                pool = aioredis.BlockingConnectionPool(
                    connection_class=node.connection_class,
                    max_connections=_NODE_POOL_SIZE,
                    timeout=self._timeout_s,
                    **kwargs,
                )
                self._node_pools[node.name] = pool
            conn = aioredis.Redis(connection_pool=pool, single_connection_client=True)
        else:
            conn = self._client.client()  # one connection from the client's own pool
        try:
            yield conn
        finally:
            await conn.aclose()

    async def _refresh(self) -> None:
        """Refresh the cluster slot map once (concurrent failures share it)."""
        if not isinstance(self._client, RedisCluster) or self._refreshing:
            return
        self._refreshing = True
        try:
            with contextlib.suppress(Exception):
                await self._client.nodes_manager.initialize()
        finally:
            self._refreshing = False

    async def aclose(self) -> None:
        """Close the per-node connection pools."""
        pools, self._node_pools = list(self._node_pools.values()), {}
        for pool in pools:
            with contextlib.suppress(Exception):
                await pool.disconnect()


async def _nothing(_client: RedisClient) -> None:
    return None


def _fence_key(key: str) -> str | None:
    """A key in the same cluster slot as ``key`` (None if none can be named)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return f"ca:ack:{key[start : end + 1]}"
    fence = f"ca:ack:{{{key}}}"
    return fence if key_slot(fence.encode()) == key_slot(key.encode()) else None


_REGISTRY: weakref.WeakKeyDictionary[RedisClient, ReplicaAck] = weakref.WeakKeyDictionary()


def configure(
    client: RedisClient, *, min_replicas: int, timeout_ms: int, timeout_s: float
) -> ReplicaAck:
    """Make every store object built on ``client`` acknowledge writes this way."""
    acks = ReplicaAck(client, min_replicas=min_replicas, timeout_ms=timeout_ms, timeout_s=timeout_s)
    _REGISTRY[client] = acks
    return acks


def acks_of(client: RedisClient) -> ReplicaAck:
    """The ReplicaAck configured for ``client`` (one that does not wait, by default)."""
    acks = _REGISTRY.get(client)
    if acks is None:
        acks = _REGISTRY[client] = ReplicaAck(client)
    return acks
