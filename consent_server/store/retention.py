"""The change feed's retention, configured per Redis client.

Every script that appends to a tenant's feed (record_event.lua, forget.lua, the import
batch) trims it to this many entries per partition; configured per client, like
replica acknowledgement, so every store object built on a client agrees on it.
"""

from __future__ import annotations

import weakref

from . import keys
from .client import RedisClient

# By default a tenant's feed keeps about this many entries over all its partitions:
# 100,000 per partition on a 16-partition store, 12,500 on a 128-partition one, so the
# memory a feed may take does not grow with the partition count.
TENANT_FEED_ENTRIES = 1_600_000
_MAXLEN: weakref.WeakKeyDictionary[RedisClient, int] = weakref.WeakKeyDictionary()


def default_maxlen() -> int:
    """The default retention per tenant and partition for the layout in use."""
    return max(1_000, TENANT_FEED_ENTRIES // keys.partitions())


def configure_feed(client: RedisClient, maxlen: int | None) -> None:
    """Keep at most ``maxlen`` entries per tenant and partition in feeds written on
    ``client`` (None: default_maxlen())."""
    if maxlen is None:
        _MAXLEN.pop(client, None)
    else:
        _MAXLEN[client] = maxlen


def feed_maxlen(client: RedisClient) -> int:
    """The feed retention configured for ``client`` (default_maxlen() by default)."""
    return _MAXLEN.get(client) or default_maxlen()


def feed_keys(tenant_id: str, part: int) -> list[str]:
    """The keys a script that appends to the feed names: the stream and its trim mark."""
    return [keys.feed(tenant_id, part), keys.feed_mark(tenant_id, part)]
