"""Opening the store: a real Redis (single node or cluster) or the embedded fakeredis."""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .client import RedisClient
from .replication import configure
from .repository import RedisConsentStore
from .retention import DEFAULT_MAXLEN, configure_feed


def open_store(
    url: str | None,
    *,
    cluster: bool = False,
    timeout_s: float = 2.0,
    min_replicas_ack: int = 0,
    ack_timeout_ms: int = 1000,
    feed_maxlen: int = DEFAULT_MAXLEN,
) -> RedisConsentStore:
    """A store on ``url``; None = the embedded, in-process, NOT durable fakeredis.

    ``min_replicas_ack`` > 0: every write is acknowledged only once that many replicas
    confirmed it within ``ack_timeout_ms`` (store/replication.py). ``feed_maxlen``: the
    change feed's retention per tenant and partition (store/retention.py)."""
    if url is None:
        import fakeredis  # only the embedded store needs it

        client: RedisClient = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    elif cluster:
        client = RedisCluster.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            **_without_maintenance_notifications(RedisCluster),
        )
    else:
        # A blocking pool: past 256 concurrent Redis calls a call waits (up to the
        # timeout) for a free connection instead of failing at once with a spurious
        # UNAVAILABLE; one that still finds none fails closed with UNAVAILABLE.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=256,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            **_without_maintenance_notifications(aioredis.Redis),
        )
        client = aioredis.Redis.from_pool(pool)  # the client owns and closes the pool
    if url is not None:
        # Before any store object is built on the client: they all look it up.
        configure(
            client, min_replicas=min_replicas_ack, timeout_ms=ack_timeout_ms, timeout_s=timeout_s
        )
    configure_feed(client, feed_maxlen)
    return RedisConsentStore(client)


def _without_maintenance_notifications(cls: type) -> dict[str, Any]:
    """Client options that turn RESP3 maintenance notifications off, where supported.

    redis-py 8.1 turns them on by default ("auto"), and with them on its pool stops
    checking whether an idle pooled connection was closed by the server
    (redis/redis-py#4252, fixed upstream by #4260): after a Redis restart the first call
    on every idle connection failed with UNAVAILABLE while health already said SERVING.
    We use no maintenance notifications (a managed-Redis feature), so nothing is lost.
    """
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # redis-py without the feature has the check unconditionally
        return {}
    if "maint_notifications_config" not in inspect.signature(cls).parameters:
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def redis_address(url: str) -> str:
    """Where a Redis URL points, for log lines: ``host:port`` or ``unix:/path``; never
    the user name or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{host}:{port}"
