"""The store's connections pack commands with hiredis: the same bytes as redis-py."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from consent_server.store.connect import _PACK_IN_C, open_store

from .support import RedisProcess

_ARG = st.text() | st.binary() | st.integers(-(2**63), 2**63 - 1)


def _both(*args: Any) -> tuple[bytes, bytes]:
    ours = _PACK_IN_C[aioredis.Connection]()
    theirs = aioredis.Connection()
    return b"".join(ours.pack_command(*args)), b"".join(theirs.pack_command(*args))


@given(st.sampled_from(["EVALSHA", "SCRIPT LOAD", b"HSET", b"CONFIG GET"]), st.lists(_ARG))
def test_packing_in_c_sends_redis_pys_bytes(name: str | bytes, args: list[Any]) -> None:
    try:
        expected = _both(name, *args)[1]
    except UnicodeEncodeError:  # a lone surrogate: both refuse it
        return
    assert _both(name, *args)[0] == expected


def test_other_argument_types_are_left_to_redis_py() -> None:
    ours, theirs = _both("ZADD", "k", 1.5, "m", memoryview(b"x"))
    assert ours == theirs


async def test_the_store_talks_to_redis_with_it(redis_proc: RedisProcess) -> None:
    s = open_store(redis_proc.url, timeout_s=5)
    try:
        client: Any = s.client
        assert client.connection_pool.connection_class is _PACK_IN_C[aioredis.Connection]
        assert await client.set("packing:k", "ü") is True
        assert await client.get("packing:k") == "ü".encode()
        script = client.register_script("return {KEYS[1], ARGV[1], ARGV[2]}")
        reply = await script(keys=["packing:k"], args=["a\0b", 7])
        assert reply == [b"packing:k", b"a\0b", b"7"]
    finally:
        await s.aclose()
