"""``consentctl migrate``: round-1 (schema 1) data to the compact layout (schema 2).

One SCAN pass over the round-1 state hashes (``ca:{cpNN}:<tenant>:<channel>:<address>:s``);
each recipient moves in one atomic script (migrate_one.lua: its records, event count
and every history event with its id, outcome and confirmation, then the round-1 keys
deleted), so an interrupted run leaves every recipient either migrated or untouched, and
a second run continues where the first stopped (migrated recipients have no round-1
keys left). Once no round-1 key is left, ``ca:meta`` records schema 2 and the server
starts. Not online: the server refuses to start on schema-1 data (store/schema.py), so
no write can race the migration; stop servers and workers first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from consent_server.domain.model import Channel, Recipient

from . import keys
from .client import RedisClient
from .records import text
from .repository import guarded
from .schema import LEGACY_SCHEMA, layout_record
from .scripts import load_script

_STATE = re.compile(r"^ca:\{cp(\d+)\}:([^:]+):([a-z]+):(.+):s$")
_CHANNELS = {c.value: c for c in Channel}


@dataclass
class MigrationSummary:
    """What a run did: recipients moved, records and events they held, recipients left
    alone (another run moved them meanwhile), keys that look round-1 but are not, and
    the schema recorded at the end (None while round-1 data remains)."""

    recipients: int = 0
    records: int = 0
    events: int = 0
    skipped: int = 0
    unrecognised: list[str] = field(default_factory=list)
    schema: int | None = None


# Record the legacy layout unless ca:meta already names another one.
_RECORD_LEGACY = """
local schema = redis.call('HGET', KEYS[1], 'schema')
local tags = redis.call('HGET', KEYS[1], 'tags')
if (schema and schema ~= '1' and schema ~= '2') or (tags and tags ~= 'legacy') then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


async def migrate(client: RedisClient) -> MigrationSummary:
    """Migrate every round-1 recipient, then record schema 2 (see the module doc)."""
    script = client.register_script(load_script("migrate_one.lua"))
    summary = MigrationSummary()
    meta = await guarded(lambda: client.hgetall(keys.META))
    stored = {text(k): text(v) for k, v in meta.items()}
    if stored.get("schema") == str(keys.SCHEMA):
        raise ValueError("the store already uses the current layout: nothing to migrate")
    if stored.get("schema") not in (None, "1", str(LEGACY_SCHEMA)):
        raise ValueError(f"the store's schema is {stored['schema']!r}: not migrating")
    # Round-1 data lives under the 16 legacy tags and stays there (in place, per slot).
    keys.configure(keys.LEGACY_PARTITIONS, spread=False)

    async def scan() -> list[str]:
        return [
            text(k) async for k in client.scan_iter(match="ca:{cp*}:*:s", count=1000, _type="HASH")
        ]

    found = sorted(set(await guarded(scan)))
    for name in found:
        m = _STATE.match(name)
        channel = _CHANNELS.get(m.group(3)) if m else None
        if m is None or channel is None:
            summary.unrecognised.append(name)
            continue
        tenant, address = m.group(2), m.group(4)
        rcpt = Recipient(channel, address)
        part = keys.partition(tenant, rcpt)
        if int(m.group(1)) != part:
            summary.unrecognised.append(name)  # another partition count: not ours to move
            continue
        bucket, prefix, descriptor = keys.layout(tenant, rcpt, part)
        hist = name[:-2] + ":h"
        reply: Any = await guarded(
            partial(script, keys=[name, hist, bucket, prefix], args=[descriptor])
        )
        if int(reply[0]) == 1:
            summary.recipients += 1
            summary.records += int(reply[1])
            summary.events += int(reply[2])
        else:
            summary.skipped += 1
    if not summary.unrecognised:
        record = layout_record(LEGACY_SCHEMA, keys.LEGACY_PARTITIONS, "legacy")
        # Only where no server recorded another layout meanwhile (an empty store that a
        # new server created while this ran): overwriting it would hide its records.
        if not await guarded(lambda: client.eval(_RECORD_LEGACY, 1, keys.META, *record)):
            raise ValueError(
                "a server recorded another layout in ca:meta while the migration ran: "
                "left as it is (stop every server before migrating)"
            )
        summary.schema = LEGACY_SCHEMA
    return summary
