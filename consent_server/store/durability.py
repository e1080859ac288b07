"""Does this Redis keep consent? Persistence (AOF or RDB save points) and eviction.

An opt-out that Redis forgets (a restart without persistence, a key evicted under
memory pressure) lets messages reach people who said stop, so the server checks once
at start and warns loudly (``app.warn_if_not_durable``). On a Redis Cluster every
primary is asked.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import ClusterNode, RedisCluster

from .client import RedisClient
from .records import text
from .repository import guarded

_SETTINGS = ("appendonly", "save", "maxmemory-policy")


def _pairs(reply: Any) -> dict[str, str]:
    """A CONFIG GET reply (dict, or a flat list of names and values) as strings."""
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    items = [text(x) for x in reply or []]
    return dict(zip(items[::2], items[1::2], strict=False))


async def _config(node: aioredis.Redis | ClusterNode) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in _SETTINGS:
        out.update(_pairs(await guarded(partial(node.execute_command, "CONFIG GET", name))))
    return out


def problems_of(config: dict[str, str], where: str = "") -> list[str]:
    """What in one node's configuration can lose consent (empty: nothing)."""
    at = f" on {where}" if where else ""
    found = []
    if config.get("appendonly", "no") != "yes" and not config.get("save", "").strip():
        found.append(f"persistence is off{at} (appendonly no and no save points)")
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        found.append(f"maxmemory-policy is {policy}{at} (Redis may evict consent records)")
    return found


async def durability_problems(client: RedisClient) -> list[str] | None:
    """The problems of every node that serves writes; None when CONFIG is refused (a
    managed Redis that renames or forbids it). StoreUnavailable while Redis is down."""
    try:
        if isinstance(client, RedisCluster):
            await guarded(client.initialize)
            found: list[str] = []
            for node in client.get_primaries():
                found += problems_of(await _config(node), node.name)
            return found
        return problems_of(await _config(client))
    except rex.ResponseError:  # unknown command, NOPERM, ...
        return None


EMBEDDED_PROBLEM = (
    "the embedded store keeps consent in the server process's memory only: it is lost "
    "when the process stops (set CONSENT_REDIS_URL)"
)


class StoreDurabilityProbe:
    """The domain's DeploymentProbe on the store's Redis client (or the embedded one)."""

    def __init__(self, client: Any, *, embedded: bool, cluster: bool) -> None:
        self._client = client
        self._embedded = embedded
        self.store_kind = "embedded" if embedded else "redis_cluster" if cluster else "redis"

    async def durability_problems(self) -> list[str] | None:
        """The embedded store is never durable; a Redis is asked (CONFIG GET)."""
        if self._embedded:
            return [EMBEDDED_PROBLEM]
        return await durability_problems(self._client)
