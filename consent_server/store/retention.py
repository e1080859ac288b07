"""The change feed's retention, configured per Redis client.

Every script that appends to a tenant's feed (record_event.lua, forget.lua, the import
batch) trims it to this many entries per partition; configured per client, like
replica acknowledgement, so every store object built on a client agrees on it.
"""

from __future__ import annotations

import weakref

from . import keys
from .client import RedisClient

DEFAULT_MAXLEN = 100_000
_MAXLEN: weakref.WeakKeyDictionary[RedisClient, int] = weakref.WeakKeyDictionary()


def configure_feed(client: RedisClient, maxlen: int) -> None:
    """Keep at most ``maxlen`` entries per tenant and partition in feeds written on
    ``client``."""
    _MAXLEN[client] = maxlen


def feed_maxlen(client: RedisClient) -> int:
    """The feed retention configured for ``client`` (DEFAULT_MAXLEN by default)."""
    return _MAXLEN.get(client, DEFAULT_MAXLEN)


def feed_keys(tenant_id: str, part: int) -> list[str]:
    """The keys a script that appends to the feed names: the stream and its trim mark."""
    return [keys.feed(tenant_id, part), keys.feed_mark(tenant_id, part)]
