"""The store's schema version (``ca:meta`` field ``schema``), checked at start-up.

Schema 1 is round 1's layout: a state hash and a history stream per recipient. Schema 2
is the compact layout of store/keys.py (record and history buckets). A store with data
but no ``schema`` field is a schema-1 store (round 1 wrote no ``ca:meta``; its data had
16 partitions). The server serves schema 2 only: on schema 1 it refuses to start and
says to run ``consentctl migrate``; on a schema it does not know (a newer release wrote
it) it refuses to start too, rather than read or write a layout it does not understand.
"""

from __future__ import annotations

from consent_server.domain.errors import StoreUnavailable

from . import keys
from .client import RedisClient
from .records import fields
from .repository import guarded

ROUND1_SCHEMA = 1


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


async def check_schema(client: RedisClient) -> int:
    """Record schema 2 in a new store, accept a schema-2 store, refuse anything else
    (SchemaMismatch); StoreUnavailable while Redis does not answer."""
    schema = await stored_schema(client)
    if schema is None:
        await guarded(lambda: client.hsetnx(keys.META, "schema", str(keys.SCHEMA)))
        await guarded(lambda: client.hsetnx(keys.META, "buckets", str(keys.BUCKETS_PER_PARTITION)))
        schema = await stored_schema(client)
    if schema == keys.SCHEMA:
        buckets = fields(await guarded(lambda: client.hgetall(keys.META))).get("buckets")
        if buckets is not None and buckets != str(keys.BUCKETS_PER_PARTITION):
            raise SchemaMismatch(
                f"the store was created with {buckets} buckets per partition and this "
                f"server uses {keys.BUCKETS_PER_PARTITION}: it would not find the records"
            )
        return schema
    if schema == ROUND1_SCHEMA:
        raise SchemaMismatch(
            "the store holds round-1 (schema 1) data: stop every server and delivery "
            "worker, run 'consentctl migrate --redis-url URL' (idempotent, resumable), "
            "then start this release"
        )
    raise SchemaMismatch(
        f"the store's schema is {schema!r} and this release serves schema {keys.SCHEMA}: "
        "run the release that wrote it (or a newer one)"
    )


__all__ = ["SchemaMismatch", "StoreUnavailable", "check_schema", "stored_schema"]
