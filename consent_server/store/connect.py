"""Opening the store: a real Redis (single node or cluster) or the embedded fakeredis."""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

from .client import RedisClient
from .multiplex import multiplexed
from .replication import configure
from .repository import RedisConsentStore
from .retention import configure_feed


def open_store(
    url: str | None,
    *,
    cluster: bool = False,
    timeout_s: float = 2.0,
    min_replicas_ack: int = 0,
    ack_timeout_ms: int = 1000,
    feed_maxlen: int | None = None,
    multiplex: bool = False,
) -> RedisConsentStore:
    """A store on ``url``; None = the embedded, in-process, NOT durable fakeredis.

    ``min_replicas_ack`` > 0: every write is acknowledged only once that many replicas
    confirmed it within ``ack_timeout_ms`` (store/replication.py). ``feed_maxlen``: the
    change feed's retention per tenant and partition (store/retention.py).
    ``multiplex`` (single node only): non-blocking commands share one pipelined
    connection (store/multiplex.py); the pool serves the rest."""
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
        pool.connection_class = _PACK_IN_C.get(pool.connection_class, pool.connection_class)
        if multiplex:
            client = multiplexed(pool, timeout_s=timeout_s)
        else:
            client = aioredis.Redis.from_pool(pool)  # the client owns and closes the pool
    if url is not None:
        # Before any store object is built on the client: they all look it up.
        configure(
            client, min_replicas=min_replicas_ack, timeout_ms=ack_timeout_ms, timeout_s=timeout_s
        )
    configure_feed(client, feed_maxlen)
    return RedisConsentStore(client)


_PLAIN_ARGS = frozenset({str, bytes, int})


class _PackInC(AbstractConnection):
    """Commands packed into the Redis protocol by hiredis (C), not redis-py's Python loop.

    redis.asyncio packs every argument in Python; for an import's script call of 1,250
    arguments that cost ~10x hiredis' packing and was the server's largest single cost.
    hiredis packs str (UTF-8), bytes and int exactly as redis-py does (a test compares
    the bytes); any other argument type, or another encoding, goes to redis-py.

    A mixin put before a concrete connection class (``super()`` is that class); its
    base is theirs, so the type checker knows what ``super()`` has."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command's bytes, as redis-py's pack_command would send them."""
        encoder: Any = getattr(self, "encoder", None)
        if (
            encoder is not None
            and encoder.encoding in ("utf-8", "utf8")
            and encoder.encoding_errors == "strict"
            and all(type(a) in _PLAIN_ARGS for a in args)
        ):
            first = args[0]
            # Like redis-py: a command name with a space ("SCRIPT LOAD") is several words.
            if isinstance(first, str):
                args = (*first.encode().split(), *args[1:])
            elif b" " in first:
                args = (*first.split(), *args[1:])
            return [hiredis.pack_command(args)]
        packed: list[bytes] = super().pack_command(*args)
        return packed


class _TcpConnection(_PackInC, aioredis.Connection):
    """redis:// connections packing with hiredis."""


class _TlsConnection(_PackInC, aioredis.SSLConnection):
    """rediss:// connections packing with hiredis."""


class _UnixConnection(_PackInC, aioredis.UnixDomainSocketConnection):
    """unix:// connections packing with hiredis."""


# The URL's scheme picked the connection class; keep that choice, packing in C.
_PACK_IN_C: dict[type[Any], type[Any]] = {
    aioredis.Connection: _TcpConnection,
    aioredis.SSLConnection: _TlsConnection,
    aioredis.UnixDomainSocketConnection: _UnixConnection,
}


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
