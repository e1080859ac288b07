"""The store's schema version (``ca:meta`` field ``schema``), checked at start-up.

Schema 1 is round 1's layout: a state hash and a history stream per recipient. Schema 2
is the compact layout of store/keys.py (record and history buckets) under the 16 legacy
partition tags; schema 3 the same with the partition count and slot-spread tags chosen
when the store was created and recorded beside it (``partitions``, ``tags``,
``buckets``). A store with data but no ``schema`` field is a schema-1 store (round 1
wrote no ``ca:meta``; its data had 16 partitions). The server serves schemas 2 and 3: on
schema 1 it refuses to start and says to run ``consentctl migrate``; on a schema it does
not know (a newer release wrote it) it refuses to start too, rather than read or write a
layout it does not understand. Releases that knew only schema 2 refuse schema 3 the same
way, so a rollback cannot read a new store under the legacy tags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consent_server.domain.errors import StoreUnavailable

from . import keys
from .client import RedisClient
from .records import fields, text
from .repository import guarded

ROUND1_SCHEMA = 1
LEGACY_SCHEMA = 2  # the compact layout under the 16 legacy tags (no recorded count)
#: Partitions of a new store on Redis: enough for 128 cluster masters, few enough that a
#: change feed watcher (which reads every partition) stays cheap.
DEFAULT_PARTITIONS = 128


class SchemaMismatch(Exception):
    """The store holds a schema this server does not serve (the message says what to do)."""


async def stored_schema(client: RedisClient) -> int | None:
    """The schema ``ca:meta`` records; 1 for a store with round-1 data and no record of
    it; None for a store with neither (a new deployment)."""
    meta = fields(await guarded(lambda: client.hgetall(keys.META)))
    if "schema" in meta:
        try:
            return int(meta["schema"])
        except ValueError:
            return -1
    if await has_round1_data(client):
        return ROUND1_SCHEMA
    return None


async def has_round1_data(client: RedisClient) -> bool:
    """True when the store holds a round-1 state hash (``ca:{cpNN}:...:s``). Asked only
    while ca:meta records no schema: a new store (few keys) or a round-1 one (state
    hashes everywhere, so the scan stops early)."""

    async def probe() -> bool:
        async for _ in client.scan_iter(match="ca:{cp*}:*:s", count=1000, _type="HASH"):
            return True
        return False

    return await guarded(probe)


# Record a new store's layout in one step: two servers starting on an empty store at
# once cannot record different partition counts (the second one reads the first's).
_CREATE = """
if redis.call('HEXISTS', KEYS[1], 'schema') == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def layout_record(schema: int, partitions: int, tags: str) -> list[str]:
    """The ``ca:meta`` fields of a layout, flat (field, value, ...) for a script's ARGV."""
    return [
        "schema", str(schema),
        "partitions", str(partitions),
        "tags", tags,
        "buckets", str(keys.buckets_for(partitions)),
    ]  # fmt: skip


async def check_schema(client: RedisClient, partitions: int | None = None) -> int:
    """Record the layout in a new store (schema 3), accept a schema-3 or a legacy
    schema-2 store, refuse anything else (SchemaMismatch); StoreUnavailable while Redis
    does not answer. Then use the store's layout in this process (keys.configure).

    ``partitions``: the count to create a new store with (DEFAULT_PARTITIONS when None);
    on an existing store, a count other than the recorded one is refused, so it is
    never silently changed. Schema 2 is the legacy 16-partition layout; a new store is
    schema 3 so that a release that knows only schema 2 refuses it rather than read it
    under the legacy tags (where it would find none of its records)."""
    schema = await stored_schema(client)
    if schema is None and await has_spread_keys(client):
        raise SchemaMismatch(
            "ca:meta is missing but the store holds partition keys of a recorded layout: "
            "restore ca:meta (schema, partitions, tags, buckets) from a backup of this "
            "store; starting would create a new layout and hide every record"
        )
    if schema is None and await has_legacy_keys(client):
        # Partition keys but no record of their layout (written by a tool that never
        # read ca:meta, or ca:meta deleted): they can only be the legacy layout's, and a
        # new layout would hide them. Record that one.
        record = layout_record(LEGACY_SCHEMA, keys.LEGACY_PARTITIONS, "legacy")
        await guarded(lambda: client.eval(_CREATE, 1, keys.META, *record))
        schema = await stored_schema(client)
    if schema is None:
        count = DEFAULT_PARTITIONS if partitions is None else partitions
        if not 1 <= count <= keys.MAX_PARTITIONS:
            raise SchemaMismatch(f"partitions must be 1..{keys.MAX_PARTITIONS}, not {count}")
        record = layout_record(keys.SCHEMA, count, "spread")
        await guarded(lambda: client.eval(_CREATE, 1, keys.META, *record))
        schema = await stored_schema(client)
    if schema in (LEGACY_SCHEMA, keys.SCHEMA):
        meta = fields(await guarded(lambda: client.hgetall(keys.META)))
        count, spread = layout_of(meta)
        if spread != (schema == keys.SCHEMA):
            raise SchemaMismatch(
                f"ca:meta records schema {schema} with {meta.get('tags')!r} tags: "
                "schema 2 is the legacy layout, schema 3 a recorded spread one"
            )
        if partitions is not None and partitions != count:
            raise SchemaMismatch(
                f"the store was created with {count} partitions and CONSENT_PARTITIONS is "
                f"{partitions}: the count is fixed when a store is created (unset "
                "CONSENT_PARTITIONS to use the recorded one)"
            )
        buckets = meta.get("buckets")
        if buckets is not None and buckets != str(keys.buckets_for(count)):
            raise SchemaMismatch(
                f"the store was created with {buckets} buckets per partition and this "
                f"server uses {keys.buckets_for(count)}: it would not find the records"
            )
        keys.configure(count, spread=spread)
        return schema
    if schema == ROUND1_SCHEMA:
        raise SchemaMismatch(
            "the store holds round-1 (schema 1) data: stop every server and delivery "
            "worker, run 'consentctl migrate --redis-url URL' (idempotent, resumable), "
            "then start this release"
        )
    raise SchemaMismatch(
        f"the store's schema is {schema!r} and this release serves schemas "
        f"{LEGACY_SCHEMA} and {keys.SCHEMA}: run the release that wrote it (or a newer one)"
    )


async def has_spread_keys(client: RedisClient) -> bool:
    """True when the store holds a key under a spread partition tag (``ca:{cp<6 hex>}:``),
    which only a store with a recorded layout has. Asked only while ca:meta records
    nothing."""

    async def probe() -> bool:
        async for _ in client.scan_iter(match="ca:{cp??????}:*", count=1000):
            return True
        return False

    return await guarded(probe)


async def has_legacy_keys(client: RedisClient) -> bool:
    """True when the store holds a key under a legacy partition tag (``ca:{cpNN}:``).
    Asked only while ca:meta records nothing: a new store has few keys."""

    async def probe() -> bool:
        async for _ in client.scan_iter(match="ca:{cp[0-9][0-9]}:*", count=1000):
            return True
        return False

    return await guarded(probe)


def adopt_recorded_layout(meta: Mapping[Any, Any]) -> None:
    """Use the layout a ``ca:meta`` hash (as a client returned it) records, in this
    process: for tools and tests that read a store a server created."""
    count, spread = layout_of({text(k): text(v) for k, v in meta.items()})
    keys.configure(count, spread=spread)


def layout_of(meta: dict[str, str]) -> tuple[int, bool]:
    """(partitions, spread tags) as ca:meta records them; legacy 16 when it names none."""
    if "partitions" not in meta:
        return keys.LEGACY_PARTITIONS, False
    try:
        count = int(meta["partitions"])
    except ValueError:
        count = 0
    tags = meta.get("tags", "spread")
    if not 1 <= count <= keys.MAX_PARTITIONS or tags not in ("spread", "legacy"):
        raise SchemaMismatch(
            f"ca:meta records a layout this release does not know "
            f"(partitions={meta['partitions']!r}, tags={tags!r})"
        )
    if tags == "legacy" and count != keys.LEGACY_PARTITIONS:
        raise SchemaMismatch(f"ca:meta records legacy tags with {count} partitions")
    return count, tags == "spread"


__all__ = [
    "DEFAULT_PARTITIONS",
    "LEGACY_SCHEMA",
    "SchemaMismatch",
    "StoreUnavailable",
    "adopt_recorded_layout",
    "check_schema",
    "layout_of",
    "layout_record",
    "stored_schema",
]
