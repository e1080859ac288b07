"""store/multiplex.py against a real redis-server: many callers on one pipelined
connection each get their own reply; a server killed mid-flight fails the calls in
flight (UNAVAILABLE to the API) and nothing else; a restarted server is reconnected;
error replies reach only their caller; AUTH and db from the URL are honoured."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_server.domain.errors import StoreUnavailable
from consent_server.store.connect import open_store
from consent_server.store.multiplex import MULTIPLEXED, MultiplexedRedis, multiplexed, run_script
from tests.support import RedisProcess
from tests.test_store import ALICE

pytestmark = pytest.mark.redis


def _client(url: str, timeout_s: float = 2.0) -> MultiplexedRedis:
    pool = aioredis.ConnectionPool.from_url(url, socket_timeout=timeout_s)
    return multiplexed(pool, timeout_s=timeout_s)


@pytest.fixture
async def client(redis_proc: RedisProcess) -> AsyncIterator[MultiplexedRedis]:
    c = _client(redis_proc.url)
    await c.flushdb()
    yield c
    await c.aclose()


async def test_concurrent_callers_get_their_own_replies(client: MultiplexedRedis) -> None:
    await client.mset({f"k{i}": f"v{i}" for i in range(500)})
    order = list(range(500))
    random.Random(7).shuffle(order)

    async def one(i: int) -> None:
        # Yield a random number of times first, so the calls interleave unevenly.
        for _ in range(i % 4):
            await asyncio.sleep(0)
        assert await client.get(f"k{i}") == f"v{i}".encode()
        assert await client.hmget(f"missing{i}", ["a", "b"]) == [None, None]

    await asyncio.gather(*(one(i) for i in order))
    assert client.mux is not None and client.mux.connects == 1  # all on one connection


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["get", "incr", "bad", "cancel"]), st.integers(0, 9))))
def test_replies_never_cross_callers_property(
    redis_proc: RedisProcess, ops: list[tuple[str, int]]
) -> None:
    """Any mix of reads, writes, error replies and cancelled callers, all at once: each
    caller gets exactly the reply of its own command, in the model's order."""

    async def run() -> None:
        c = _client(redis_proc.url)
        try:
            await c.delete(*[f"p{i}" for i in range(10)])
            await c.set("p:str", "x")  # connected: the tasks below send in creation order
            model: dict[int, int] = {}
            calls = []
            for op, k in ops:
                if op == "incr":
                    model[k] = model.get(k, 0) + 1
                    calls.append((op, k, model[k], c.incr(f"p{k}")))
                elif op == "get":
                    value = model.get(k)
                    calls.append((op, k, value, c.get(f"p{k}")))
                elif op == "bad":
                    calls.append((op, k, None, c.incr("p:str")))
                else:
                    calls.append((op, k, None, c.get(f"p{k}")))
            tasks = [asyncio.ensure_future(call) for *_, call in calls]
            await asyncio.sleep(0)  # every command queued, none answered yet
            for (op, *_), task in zip(calls, tasks, strict=True):
                if op == "cancel":
                    task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, rex.ConnectionError):
                    raise r
            for (op, _k, expected, _), got in zip(calls, results, strict=True):
                if op == "incr":
                    assert got == expected, (
                        str(got),
                        repr(got.__cause__ if isinstance(got, BaseException) else None),
                        op,
                    )
                elif op == "get":
                    assert got == (None if expected is None else str(expected).encode())
                elif op == "bad":
                    assert isinstance(got, rex.ResponseError) and "integer" in str(got)
                else:
                    assert isinstance(got, asyncio.CancelledError)
            assert await c.ping() is True  # still in step afterwards
        finally:
            await c.aclose()

    asyncio.run(run())


async def test_error_reply_reaches_only_its_caller(client: MultiplexedRedis) -> None:
    await client.set("s", "text")
    await client.hset("h", "f", "1")
    results = await asyncio.gather(
        client.hget("h", "f"),
        client.hget("s", "f"),  # WRONGTYPE
        client.evalsha("0" * 40, 0),  # NOSCRIPT
        client.get("s"),
        return_exceptions=True,
    )
    assert results[0] == b"1"
    assert isinstance(results[1], rex.ResponseError) and "WRONGTYPE" in str(results[1])
    assert isinstance(results[2], rex.NoScriptError)
    assert results[3] == b"text"


async def test_script_falls_back_on_noscript(client: MultiplexedRedis) -> None:
    script = client.register_script("return KEYS[1] .. ARGV[1]")
    assert await script(keys=["a"], args=["b"]) == b"ab"
    await client.script_flush()  # the pool's connection; the script cache is the server's
    assert await script(keys=["c"], args=["d"]) == b"cd"  # NOSCRIPT -> SCRIPT LOAD -> again


async def test_run_script_loads_on_noscript(client: MultiplexedRedis) -> None:
    script = client.register_script("return {KEYS[1], ARGV[1]}")
    assert await run_script(client, script, ["k"], ["v"]) == [b"k", b"v"]
    await client.script_flush()
    assert await run_script(client, script, ["k2"], [3]) == [b"k2", b"3"]


async def test_blocking_and_stateful_commands_stay_on_the_pool(client: MultiplexedRedis) -> None:
    for name in ("XREADGROUP", "XREAD", "BLPOP", "WAIT", "MULTI", "SELECT", "AUTH", "SUBSCRIBE"):
        assert name not in MULTIPLEXED
    # A blocking read on the pool does not hold up the shared connection.
    blocked = asyncio.ensure_future(client.blpop(["nothing"], timeout=1))
    await asyncio.sleep(0.05)
    assert await asyncio.wait_for(client.ping(), 0.5) is True
    assert await blocked is None


async def test_killed_server_fails_calls_in_flight_then_reconnects(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path / "r").start()
    c = _client(proc.url)
    try:
        await c.set("k", "1")
        proc.pause()  # a stopped Redis: our calls stay in flight
        in_flight = [asyncio.ensure_future(c.get("k")) for _ in range(20)]
        await asyncio.sleep(0.2)
        proc.kill()
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        assert all(isinstance(r, rex.ConnectionError) for r in results), results

        # Down: calls fail at once (backoff), never hang.
        with pytest.raises(rex.ConnectionError):
            await asyncio.wait_for(c.get("k"), 3)
        # Restarted on the same port: the next calls reconnect after the backoff.
        proc.start()
        for _ in range(100):
            try:
                assert await c.set("k", "2") is True
                break
            except rex.ConnectionError:
                await asyncio.sleep(0.05)
        assert await c.get("k") == b"2"
        assert c.mux is not None and c.mux.connects == 2
    finally:
        await c.aclose()
        proc.stop()


async def test_hung_server_times_out_the_calls_in_flight(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path / "r").start()
    c = _client(proc.url, timeout_s=0.3)
    try:
        assert await c.ping() is True
        proc.pause()
        results = await asyncio.gather(*(c.get("k") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, rex.TimeoutError) for r in results), results
        proc.resume()
        for _ in range(100):
            try:
                assert await c.ping() is True
                break
            except rex.ConnectionError:
                await asyncio.sleep(0.05)
    finally:
        proc.resume_if_paused()
        await c.aclose()
        proc.stop()


async def test_outage_is_unavailable_through_the_store(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path / "r").start()
    store = open_store(proc.url, multiplex=True, timeout_s=0.5)
    try:
        assert isinstance(store.client, MultiplexedRedis)
        await store.ping()
        proc.kill()
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.aclose()


async def test_password_and_db_from_the_url(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path / "r", password="s3cret").start()
    c = _client(f"redis://:s3cret@127.0.0.1:{proc.port}/3")
    try:
        await c.set("in-db-3", "yes")
        assert await c.get("in-db-3") == b"yes"
        other = aioredis.Redis(port=proc.port, password="s3cret", db=0)
        assert await other.get("in-db-3") is None
        await other.aclose()
        wrong = _client(f"redis://:nope@127.0.0.1:{proc.port}/0")
        with pytest.raises(rex.AuthenticationError):
            await wrong.get("x")
        await wrong.aclose()
    finally:
        await c.aclose()
        proc.stop()


async def test_decoded_responses(redis_proc: RedisProcess) -> None:
    pool = aioredis.ConnectionPool.from_url(redis_proc.url, decode_responses=True)
    c = multiplexed(pool, timeout_s=2)
    try:
        await c.hset("dec", mapping={"é": "ü"})
        assert await c.hgetall("dec") == {"é": "ü"}
    finally:
        await c.aclose()


async def test_store_on_the_shared_connection(redis_proc: RedisProcess) -> None:
    """The repository's reads and scripts (read_states.lua via run_script, the writes via
    redis-py's Script) agree on the multiplexed client, concurrently."""
    from consent_server.domain.model import Action, Recipient, Status

    from .support import create_tenants
    from .test_store import event

    store = open_store(redis_proc.url, multiplex=True)
    try:
        await store.client.flushdb()
        await create_tenants(store, ["acme"])
        people = [Recipient(ALICE.channel, f"+9198765432{i:02d}") for i in range(40)]
        await asyncio.gather(
            *(
                store.record_event(event(Action.OPT_OUT, recipient=p, topic="marketing"))
                for p in people[::2]
            )
        )
        singles = await asyncio.gather(
            *(store.read_records("acme", [p], "marketing") for p in people)
        )
        for i, [(topic_rec, _)] in enumerate(singles):
            assert (topic_rec is not None and topic_rec.status is Status.OPTED_OUT) == (i % 2 == 0)
        batch = await store.read_records("acme", people, "marketing")
        assert [pair for [pair] in singles] == batch
    finally:
        await store.aclose()


async def test_execute_many_sends_in_order_and_keeps_error_replies_in_place(
    client: MultiplexedRedis,
) -> None:
    assert client.mux is not None
    await client.set("s", "text")
    replies = await client.mux.execute_many(
        [
            ("INCR", "n"),
            ("HGET", "s", "f"),  # WRONGTYPE
            ("EVALSHA", "0" * 40, 0),  # NOSCRIPT
            ("INCR", "n"),
            *[("INCR", "n")] * 300,
        ]
    )
    assert replies[0] == 1 and replies[3] == 2 and replies[-1] == 302
    assert isinstance(replies[1], rex.ResponseError) and "WRONGTYPE" in str(replies[1])
    assert isinstance(replies[2], rex.NoScriptError)
    assert await client.mux.execute_many([]) == []
    assert await client.get("s") == b"text"  # the connection is still in step
    assert client.mux.connects == 1


async def test_execute_many_fails_every_command_when_the_server_dies(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path).start()
    c = _client(proc.url)
    try:
        assert c.mux is not None
        await c.ping()
        proc.pause()  # a stopped Redis: the commands stay in flight
        task = asyncio.ensure_future(c.mux.execute_many([("INCR", "n")] * 50))
        await asyncio.sleep(0.2)
        proc.kill()
        with pytest.raises(rex.ConnectionError):
            await task
    finally:
        await c.aclose()
        proc.stop()
