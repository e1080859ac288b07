"""Opening the store: a real Redis (single node or cluster) or the embedded fakeredis."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .repository import RedisConsentStore


def open_store(
    url: str | None, *, cluster: bool = False, timeout_s: float = 2.0
) -> RedisConsentStore:
    """A store on ``url``; None = the embedded, in-process, NOT durable fakeredis."""
    if url is None:
        import fakeredis  # only the embedded store needs it

        client: Any = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    elif cluster:
        client = RedisCluster.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    else:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            max_connections=256,
        )
    return RedisConsentStore(client)
