"""Redis storage of the WhatsApp edge's dead letters: notification items that could not
be applied, kept per tenant for an operator to read, replay or discard.

Two keys per tenant share the hash tag ``{wadl:<tenant>}``, so the one script that adds
and trims touches a single cluster slot (see keys.py):

    ca:{wadl:<tenant>}:items   hash: item id -> the item as JSON
    ca:{wadl:<tenant>}:order   zset: item id scored by receive time (ms)

The list is bounded: adding past the limit drops the oldest items (counted by the caller).
An id already kept stays as it is, so a redelivered notification adds nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from typing import Any

from consent_server.domain.whatsapp_edge import DeadLetter, DeadLetterPage

from . import keys
from .client import RedisClient, Reply
from .records import members, text
from .repository import guarded

# KEYS: items, order. ARGV: limit, then (id, score, json) triples. Returns evicted count.
_ADD = """
local limit = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  end
end
local evicted = 0
local excess = redis.call('ZCARD', KEYS[2]) - limit
if excess > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], excess)
  for j = 1, #old, 2 do
    redis.call('HDEL', KEYS[1], old[j])
    evicted = evicted + 1
  end
end
return evicted
"""

# KEYS: items, order. ARGV: id, json. Replaces an item that is still kept.
_PUT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: items, order. ARGV: id.
_DELETE = """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


def _encode(item: DeadLetter) -> str:
    return json.dumps(dataclasses.asdict(item), separators=(",", ":"))


def _decode(raw: Reply) -> DeadLetter | None:
    try:
        fields = json.loads(text(raw))
        return DeadLetter(**fields)
    except (ValueError, TypeError):
        return None


class RedisDeadLetters:
    """Dead letters on the consent store's Redis (raises StoreUnavailable)."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._add = client.register_script(_ADD)
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)

    async def add_dead_letters(self, items: Sequence[DeadLetter], limit: int) -> int:
        """Keep ``items`` (known ids stay as they are); the number of old items dropped."""
        by_tenant: dict[str, list[DeadLetter]] = defaultdict(list)
        for item in items:
            by_tenant[item.tenant_id].append(item)
        evicted = 0
        for tenant, group in by_tenant.items():
            args: list[Any] = [limit]
            for item in group:
                args += [item.id, item.received_at_ms, _encode(item)]
            script_keys = [keys.dead_letters(tenant), keys.dead_letter_order(tenant)]
            evicted += int(await guarded(partial(self._add, keys=script_keys, args=args)))
        return evicted

    async def put_dead_letter(self, item: DeadLetter) -> None:
        """Replace an item that is still kept (one removed meanwhile stays removed)."""
        script_keys = [keys.dead_letters(item.tenant_id), keys.dead_letter_order(item.tenant_id)]
        await guarded(lambda: self._put(keys=script_keys, args=[item.id, _encode(item)]))

    async def dead_letters(self, tenant_id: str, offset: int, limit: int) -> DeadLetterPage:
        """Up to ``limit`` items newest first from ``offset``, and how many are kept."""
        order = keys.dead_letter_order(tenant_id)
        ids = members(await guarded(lambda: self._r.zrevrange(order, offset, offset + limit - 1)))
        total: int = await guarded(lambda: self._r.zcard(order))
        items: list[DeadLetter] = []
        if ids:
            raws = await guarded(lambda: self._r.hmget(keys.dead_letters(tenant_id), ids))
            items = [d for d in (_decode(r) for r in raws if r is not None) if d is not None]
        return DeadLetterPage(items, "", int(total))

    async def dead_letter(self, tenant_id: str, item_id: str) -> DeadLetter | None:
        """One kept item, or None."""
        raw = await guarded(lambda: self._r.hget(keys.dead_letters(tenant_id), item_id))
        return None if raw is None else _decode(raw)

    async def forget_dead_letters(self, tenant_id: str, wa_id: str) -> int:
        """Remove every kept item whose raw notification names ``wa_id`` (the digits of
        a WhatsApp address), for erasure; the number removed. A tenant keeps at most a
        bounded list, so reading it whole is cheap."""
        items = keys.dead_letters(tenant_id)
        raw = await guarded(lambda: self._r.hgetall(items))
        # As a whole JSON string ("9198…" or "+9198…"): a longer number that merely
        # contains the digits is someone else.
        needles = (f'"{wa_id}"', f'"+{wa_id}"')
        removed = 0
        for item_id, value in raw.items():
            item = _decode(value)
            if item is not None and wa_id and any(n in item.raw for n in needles):
                removed += int(await self.delete_dead_letter(tenant_id, text(item_id)))
        return removed

    async def delete_dead_letter(self, tenant_id: str, item_id: str) -> bool:
        """Remove one kept item; True when it was there."""
        script_keys = [keys.dead_letters(tenant_id), keys.dead_letter_order(tenant_id)]
        removed = await guarded(lambda: self._delete(keys=script_keys, args=[item_id]))
        return int(removed) > 0
