"""HmgetCoalescer: reads that overlap go out as one pipeline, each caller gets its own row.

A gate (an Event the client's single HMGETs wait on) stands for a slow round trip, so
that overlap is deterministic on fakeredis too, where a read may never suspend.
"""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex

from consent_server.domain.errors import StoreUnavailable
from consent_server.domain.model import Channel, Recipient
from consent_server.store.coalesce import HmgetCoalescer
from consent_server.store.repository import RedisConsentStore

from .support import RedisProcess, free_port


class CountingClient:
    """Wraps a client and counts what reaches it: single HMGETs and pipelines."""

    def __init__(self, client: Any, gate: asyncio.Event | None = None) -> None:
        self.client = client
        self.gate = gate  # when set, single HMGETs wait for it (a slow round trip)
        self.single = 0
        self.pipelines: list[int] = []

    async def hmget(self, key: str, fields: list[str]) -> Any:
        self.single += 1
        if self.gate is not None:
            await self.gate.wait()
        return await self.client.hmget(key, fields)

    def pipeline(self, transaction: bool) -> Any:
        outer = self
        pipe = self.client.pipeline(transaction=transaction)

        class Counting:
            def hmget(self, key: str, fields: list[str]) -> None:
                pipe.hmget(key, fields)

            async def execute(self) -> Any:
                outer.pipelines.append(len(pipe.command_stack))
                return await pipe.execute()

        return Counting()


@pytest.fixture(params=["fakeredis", "redis-server"])
async def client(request: pytest.FixtureRequest) -> Any:
    if request.param == "fakeredis":
        c: Any = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    else:
        proc: RedisProcess = request.getfixturevalue("redis_proc")
        c = aioredis.Redis.from_url(proc.url)
        await c.flushdb()
    yield c
    await c.aclose()


async def test_concurrent_reads_share_one_pipeline_and_keep_their_rows(client: Any) -> None:
    for i in range(20):
        await client.hset(f"h{i}", mapping={"a": f"a{i}", "b": f"b{i}"})
    gate = asyncio.Event()
    counting = CountingClient(client, gate)
    co = HmgetCoalescer(counting, max_in_flight=2)
    reads = [asyncio.ensure_future(co.hmget(f"h{i}", ["b", "x", "a"])) for i in range(25)]
    await asyncio.sleep(0)  # all 25 issued: two went straight out, 23 wait for room
    gate.set()
    rows = await asyncio.gather(*reads)
    assert rows[:20] == [[f"b{i}".encode(), None, f"a{i}".encode()] for i in range(20)]
    assert rows[20:] == [[None, None, None]] * 5  # missing hashes read as nils
    assert counting.single == 2 and counting.pipelines == [23]


async def test_a_lone_read_is_a_plain_hmget(client: Any) -> None:
    await client.hset("h", "a", "1")
    counting = CountingClient(client)
    co = HmgetCoalescer(counting)
    assert await co.hmget("h", ["a"]) == [b"1"]
    assert await co.hmget("h", ["a"]) == [b"1"]
    assert counting.single == 2 and counting.pipelines == []  # no overlap, no pipeline


async def test_reads_arriving_during_a_batch_form_the_next_one(client: Any) -> None:
    """Group commit: with one batch in flight, newcomers wait and then go out together."""
    await client.hset("h", "a", "1")
    gate = asyncio.Event()
    counting = CountingClient(client, gate)
    co = HmgetCoalescer(counting, max_in_flight=1)
    first = asyncio.ensure_future(co.hmget("h", ["a"]))
    later = []
    for _ in range(5):  # each in a loop turn of its own, while the first is in flight
        await asyncio.sleep(0)
        later.append(asyncio.ensure_future(co.hmget("h", ["a"])))
    gate.set()
    assert await asyncio.gather(first, *later) == [[b"1"]] * 6
    assert counting.single == 1 and counting.pipelines == [5]


async def test_a_cancelled_caller_does_not_disturb_the_others(client: Any) -> None:
    await client.hset("h", "a", "1")
    gate = asyncio.Event()
    co = HmgetCoalescer(CountingClient(client, gate), max_in_flight=1)
    first = asyncio.ensure_future(co.hmget("h", ["a"]))
    await asyncio.sleep(0)
    doomed = asyncio.ensure_future(co.hmget("h", ["a"]))  # both queue behind the first
    kept = asyncio.ensure_future(co.hmget("h", ["a"]))
    await asyncio.sleep(0)
    doomed.cancel()
    gate.set()
    assert await asyncio.gather(first, kept) == [[b"1"], [b"1"]]
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_every_caller_gets_the_failure_as_its_own_exception() -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    co = HmgetCoalescer(dead, lambda exc: StoreUnavailable(type(exc).__name__))
    results = await asyncio.gather(
        *(co.hmget(f"h{i}", ["a"]) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert len({id(r) for r in results}) == 5
    await dead.aclose()


async def test_store_fails_closed_through_the_coalescer() -> None:
    """Concurrent CheckConsent reads on a dead Redis all raise StoreUnavailable."""
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    store = RedisConsentStore(dead, settings_cache_s=0)
    alice = Recipient(Channel.SMS, "+14155550100")
    results = await asyncio.gather(
        *(store.read_records("acme", [alice], "marketing") for _ in range(4)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert all(isinstance(r.__cause__, rex.ConnectionError) for r in results)
    await store.aclose()
