"""BatchCheckConsent's read: every recipient's record fields and tombstone, plain HMGETs
pipelined on one connection, packed and parsed without redis-py's per-command Python.

Why no script: ``read_states.lua`` cost Redis ~2.7 us per recipient (a script call, a
Lua table per reply), plain HMGETs 0.5-0.8 us, and a read needs no atomicity here:
for each recipient its fields of the record bucket (keys.py: the main field with the
all-topics record, and the topic's field) are read *before* its tombstone (commands of
one connection run in order). The only write that changes both keys is the erasure
(``forget.lua``, atomic); it deletes the records and writes every scope that ends opted
out into the tombstone dated at the erasure, so a read that sees the state from before
an erasure and the tombstone from after it decides as the read after it would (the
tombstone's opt-outs are newer than any live record), or, where the tombstone keeps
nothing for the scopes asked about, as the read before it. Every other write touches
one of the two keys, so the pair read equals the store at one moment in between.
tests/test_batch_lean.py checks this path against the script read on random records.

Keys are named once per (tenant, channel, address): the HMAC of a tombstone name is
the costliest part, so the packed key bytes are cached (bounded, BATCH_KEY_CACHE).
On Redis Cluster (keys of many nodes), or any client that is not redis-py's own
connection with the hiredis parser (the embedded fakeredis), the caller falls back to
the script read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser

from consent_server.domain.model import Channel, Recipient

from . import keys
from .tombstones import TombstoneNames

#: Entries per (tenant, channel) of the per-store cache of packed key names (~300 B
#: each: ~40 MB when full): a 100,000-recipient working set with headroom.
BATCH_KEY_CACHE = 131_072
_CACHED_RUNS = 8  # (tenant, channel) caches kept at once


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class BatchKeys:
    """Packed HMGET arguments of recipients' record buckets and tombstones, cached."""

    def __init__(self, limit: int = BATCH_KEY_CACHE) -> None:
        self._limit = limit
        # (tenant, channel) -> address -> (record bucket key + main field as RESP bulk
        # strings, the main field's bytes, the tombstone key as a bulk string)
        self._packed: dict[tuple[str, Channel], dict[str, tuple[bytes, bytes, bytes]]] = {}
        # secret -> TombstoneNames.digester(secret): the HMAC keyed once per secret.
        self._names: dict[bytes, Callable[[Recipient], str]] = {}

    def _namer(self, secret: bytes) -> Callable[[Recipient], str]:
        name = self._names.get(secret)
        if name is None:
            if len(self._names) >= _CACHED_RUNS:
                self._names.clear()
            name = self._names[secret] = TombstoneNames.digester(secret)
        return name

    def commands(
        self,
        tenant_id: str,
        secret: bytes,
        recipients: Sequence[tuple[Channel, str]],
        topic: str,
    ) -> bytes:
        """Two HMGETs per recipient, in request order, as one RESP payload: its record
        bucket's main field (and topic field), then its tombstone's "s:*" (and
        "s:<topic>"). ``secret``: the tenant's tombstone secret (it never changes once
        created)."""
        out: list[bytes] = []
        append = out.append
        if topic:
            head = b"*4\r\n$5\r\nHMGET\r\n"
            topic_suffix = b"\x1f" + topic.encode()
            tomb_tail = _bulk(b"s:*") + _bulk(b"s:" + topic.encode())
        else:
            head = b"*3\r\n$5\r\nHMGET\r\n"
            topic_suffix = b""
            tomb_tail = _bulk(b"s:*")
        last: Channel | None = None
        cache: dict[str, tuple[bytes, bytes, bytes]] = {}
        for channel, address in recipients:
            if channel is not last:  # Enum hashing is Python code: once per run of a channel
                last = channel
                if len(self._packed) >= _CACHED_RUNS and (tenant_id, channel) not in self._packed:
                    self._packed.clear()  # bounded over tenants too
                cache = self._packed.setdefault((tenant_id, channel), {})
            entry = cache.get(address)
            if entry is None:
                rcpt = Recipient(channel, address)
                part, b = keys.placement(tenant_id, rcpt)
                bucket = keys.record_bucket(part, tenant_id, b)
                field = keys.rfield(rcpt).encode()
                tomb = keys.tombstone(tenant_id, rcpt, self._namer(secret)(rcpt), part=part)
                entry = (_bulk(bucket.encode()) + _bulk(field), field, _bulk(tomb.encode()))
                if len(cache) >= self._limit:
                    cache.clear()
                cache[address] = entry
            append(head)
            append(entry[0])
            if topic_suffix:
                append(_bulk(entry[1] + topic_suffix))
            append(head)
            append(entry[2])
            append(tomb_tail)
        return b"".join(out)


def lean_capable(client: Any) -> bool:
    """True when ``client`` is a single-node redis-py client whose connections parse with
    hiredis (not a cluster, not fakeredis): the lean read can use its connections."""
    # MultiplexedRedis (store/multiplex.py) is one: this read uses its pool.
    if not isinstance(client, aioredis.Redis) or client.connection is not None:
        return False
    cls = client.connection_pool.connection_class
    return issubclass(cls, aioredis.Connection) and cls.__module__.startswith(
        ("redis.", "consent_server.")
    )


async def pipelined(client: aioredis.Redis, payload: bytes, n: int) -> list[Any]:
    """The ``n`` commands of ``payload`` (RESP), sent in one write on one pooled
    connection; the replies in order. Raises redis errors (the caller guards)."""
    pool: Any = client.connection_pool  # redis-py's pool and parser are untyped
    conn = await pool.get_connection()
    try:
        parser: Any = conn._parser
        if not isinstance(parser, _AsyncHiredisParser):
            raise TypeError("the lean batch read needs the hiredis parser")
        await conn.send_packed_command(payload, check_health=False)
        reader: hiredis.Reader | None = parser._reader
        read_more: Any = parser.read_from_socket
        if reader is None:
            raise ConnectionError("the connection has no reader")
        replies: list[Any] = []
        append = replies.append
        gets = reader.gets
        async with asyncio.timeout(conn.socket_timeout):
            while len(replies) < n:
                reply = gets()
                if reply is NOT_ENOUGH_DATA:
                    await read_more()
                    continue
                if isinstance(reply, BaseException):
                    raise reply
                append(reply)
    except BaseException:
        await conn.disconnect()  # replies may be left unread: never reuse it
        raise
    finally:
        await pool.release(conn)
    return replies
