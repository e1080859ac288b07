"""The change feed (WatchConsentEvents): every applied change once, resumable, bounded,
tenant-isolated; erasures without an address. On fakeredis and a real redis-server
(the ``store`` fixture), and once through the real server process over gRPC."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from consent_client import AsyncConsentClient, ConsentClient
from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc
from consent_server.domain.errors import InvalidArgument
from consent_server.domain.feed import (
    ChangeEvent,
    ChangeFeed,
    FeedTokenExpired,
    decode_token,
    encode_token,
)
from consent_server.domain.model import Action, Channel, ConsentEventInput, Source
from consent_server.store import keys
from consent_server.store.bulk import RedisBulkStore
from consent_server.store.feed import RedisChangeFeed
from consent_server.store.repository import RedisConsentStore
from consent_server.store.retention import configure_feed
from consent_server.store.security import RedisSecurityStore

from .support import ServerProcess, numbered_event, numbered_recipient

CONSENTCTL = str(Path(sys.executable).parent / "consentctl")
TENANT = "acme"
OTHER = "globex"
_ids = st.tuples(st.integers(0, 2**48), st.integers(0, 2**20)).map(lambda t: f"{t[0]}-{t[1]}")


rcpt = numbered_recipient


def event(
    n: int, seq: int, *, tenant: str = TENANT, action: Action = Action.OPT_OUT, topic: str = ""
) -> ConsentEventInput:
    return numbered_event(tenant, n, seq, action=action, topic=topic)


def feed(store: RedisConsentStore, *, poll_s: float = 0.01) -> ChangeFeed:
    return ChangeFeed(RedisChangeFeed(store.client), poll_s=poll_s)


async def collect(
    f: ChangeFeed, tenant: str, positions: list[str], n: int, within: float = 10
) -> list[ChangeEvent]:
    """The next ``n`` events (fails when they do not come within ``within`` seconds)."""
    out: list[ChangeEvent] = []

    async def run() -> None:
        async for ev in f.watch(tenant, positions):
            out.append(ev)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), within)
    return out


# -- tokens (pure) ------------------------------------------------------------------------


@given(
    st.lists(_ids, min_size=16, max_size=16),
    st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True),
)
def test_token_round_trip(positions: list[str], tenant: str) -> None:
    token = encode_token(tenant, positions)
    assert decode_token(token, tenant, 16) == positions


@pytest.mark.parametrize(
    "token",
    [
        "not base64 !!",
        base64.urlsafe_b64encode(b"{}").decode(),
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 1, "t": TENANT, "p": ["0-0"]}).encode()).decode(),
        base64.urlsafe_b64encode(
            json.dumps({"v": 1, "t": TENANT, "p": ["x-1"] * 16}).encode()
        ).decode(),
        base64.urlsafe_b64encode(
            json.dumps({"v": 2, "t": TENANT, "p": ["0-0"] * 16}).encode()
        ).decode(),
        "A" * 5000,
    ],
)
def test_malformed_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        decode_token(token, TENANT, 16)
    assert exc.value.violations[0].field == "resume_token"


def test_other_tenants_token_is_invalid_argument() -> None:
    token = encode_token(OTHER, ["0-0"] * 16)
    with pytest.raises(InvalidArgument, match="another tenant"):
        decode_token(token, TENANT, 16)


# -- on the store --------------------------------------------------------------------------


async def test_every_applied_change_in_order_with_its_fields(store: RedisConsentStore) -> None:
    f = feed(store)
    start = await f.start(TENANT, "", False)
    await store.record_event(event(1, 1))
    await store.record_event(event(1, 2, action=Action.OPT_IN, topic="marketing"))
    await store.record_event(event(1, 2, action=Action.OPT_IN, topic="marketing"))  # replay
    await store.record_event(event(1, 0))  # older than the record: not applied, not fed
    await store.record_event(event(1, 3))  # applies, changes nothing (already out)
    got = await collect(f, TENANT, start, 3)
    assert [e.entry.source_event_id for e in got] == ["ev-1-1", "ev-1-2", "ev-1-3"]
    assert [e.entry.status_changed for e in got] == [True, True, False]
    first = got[0]
    assert first.recipient == rcpt(1)
    assert first.entry.action is Action.OPT_OUT and first.entry.source is Source.API
    assert first.entry.occurred_at_ms == 1_700_000_000_001
    assert got[1].entry.topic == "marketing" and got[1].entry.action is Action.OPT_IN
    assert len({e.event_id for e in got}) == 3
    # Resuming from the last token: nothing more (the replay and the older event are not
    # changes), then exactly the next one.
    last = decode_token(got[-1].resume_token, TENANT, keys.PARTITIONS)
    await store.record_event(event(1, 4, action=Action.OPT_IN))
    nxt = await collect(f, TENANT, last, 1)
    assert [e.entry.source_event_id for e in nxt] == ["ev-1-4"]


async def test_consumer_cancelled_and_resumed_under_load_sees_each_event_once(
    store: RedisConsentStore,
) -> None:
    f = feed(store)
    positions = await f.start(TENANT, "", False)
    written: list[str] = []
    total = 400
    rng = random.Random(7)

    async def write() -> None:
        for seq in range(total):
            n = rng.randrange(40)
            # Alternating actions with increasing times: every event applies.
            action = Action.OPT_OUT if seq % 2 else Action.OPT_IN
            await store.record_event(event(n, seq + 1, action=action))
            written.append(f"ev-{n}-{seq + 1}")
            if seq % 25 == 0:
                await asyncio.sleep(0.005)

    seen: list[ChangeEvent] = []
    writer = asyncio.create_task(write())
    token = f.token(TENANT, positions)
    deadline = time.monotonic() + 60
    while len(seen) < total and time.monotonic() < deadline:
        # A consumer that reads a few events and is cancelled mid-stream (a kill), then
        # reconnects with the last token it received.
        got: list[ChangeEvent] = []

        async def consume(start: list[str], out: list[ChangeEvent] = got) -> None:
            async for ev in f.watch(TENANT, start):
                out.append(ev)

        task = asyncio.create_task(consume(await f.start(TENANT, token, False)))
        await asyncio.sleep(rng.uniform(0.005, 0.05))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen += got
        if got:
            token = got[-1].resume_token
    await writer
    ids = [e.event_id for e in seen]
    assert len(ids) == len(set(ids)) == total  # exactly once by id, nothing missing
    assert sorted(e.entry.source_event_id for e in seen) == sorted(written)
    # In order per recipient: their revisions only go up.
    last: dict[str, int] = {}
    for e in seen:
        assert e.entry.revision > last.get(e.entry.address, 0)
        last[e.entry.address] = e.entry.revision


async def test_token_older_than_retention_is_out_of_range(store: RedisConsentStore) -> None:
    configure_feed(store.client, 5)
    f = feed(store)
    start = await f.start(TENANT, "", False)
    token = f.token(TENANT, start)
    for seq in range(1, 8):  # one recipient, one partition: 7 > 5 entries
        await store.record_event(event(3, seq, action=Action.OPT_OUT if seq % 2 else Action.OPT_IN))
    with pytest.raises(FeedTokenExpired, match="ExportConsent"):
        await f.start(TENANT, token, False)
    # A reader that was already watching from there is told too, not skipped ahead.
    with pytest.raises(FeedTokenExpired):
        await collect(f, TENANT, start, 1)
    # The oldest retained position still works, and yields the 5 kept events.
    oldest = await f.start(TENANT, "", True)
    got = await collect(f, TENANT, oldest, 5)
    assert [e.entry.source_event_id for e in got] == [f"ev-3-{s}" for s in range(3, 8)]
    part = keys.partition(TENANT, rcpt(3))
    assert await store.client.xlen(keys.feed(TENANT, part)) == 5
    # A token taken within the retention is fine.
    await f.start(TENANT, got[0].resume_token, False)


async def test_other_tenants_events_are_never_seen(store: RedisConsentStore) -> None:
    f = feed(store)
    start = await f.start(TENANT, "", False)
    for seq in range(1, 20):
        await store.record_event(event(seq, seq, tenant=OTHER))
    await store.record_event(event(1, 100))
    got = await collect(f, TENANT, start, 1)
    assert [e.entry.tenant_id for e in got] == [TENANT]
    assert got[0].entry.source_event_id == "ev-1-100"
    # Nothing else arrives for this tenant.
    with pytest.raises(TimeoutError):
        await collect(
            f, TENANT, decode_token(got[0].resume_token, TENANT, keys.PARTITIONS), 1, within=0.3
        )
    with pytest.raises(InvalidArgument):
        await f.start(OTHER, got[0].resume_token, False)


async def test_erasure_is_an_event_without_address_and_removes_earlier_ones(
    store: RedisConsentStore,
) -> None:
    f = feed(store)
    start = await f.start(TENANT, "", False)
    await store.record_event(event(5, 1))
    await store.record_event(event(5, 2, action=Action.OPT_IN, topic="news"))
    await store.record_event(event(6, 3))
    await RedisSecurityStore(store.client, store.tombstones).forget(
        TENANT, rcpt(5), "erasure-5", "test"
    )
    got = await collect(f, TENANT, start, 2)
    # The feed orders events per recipient; two recipients' events may come either way.
    by_id = {e.entry.source_event_id: e for e in got}
    assert set(by_id) == {"ev-6-3", "erasure-5"}
    erasure = by_id["erasure-5"].entry
    assert (
        erasure.kind == "erasure" and erasure.address == "" and by_id["erasure-5"].recipient is None
    )
    assert erasure.source_event_id == "erasure-5" and erasure.channel is Channel.SMS
    # The address is nowhere in the feed any more.
    part = keys.partition(TENANT, rcpt(5))
    raw = await store.client.xrange(keys.feed(TENANT, part))
    assert rcpt(5).address.encode() not in repr(raw).encode()


async def test_imports_are_fed(store: RedisConsentStore) -> None:
    f = feed(store)
    start = await f.start(TENANT, "", False)
    bulk = RedisBulkStore(store.client, store.tombstones)
    await bulk.apply([event(n, n) for n in range(30)])
    got = await collect(f, TENANT, start, 30)
    assert sorted(e.entry.source_event_id for e in got) == sorted(f"ev-{n}-{n}" for n in range(30))


# -- through the server process --------------------------------------------------------------


def test_watch_over_grpc_resume_malformed_and_expired(tmp_path: object) -> None:
    srv = ServerProcess({"CONSENT_DELIVERY": "off", "CONSENT_FEED_MAXLEN": "3"}).start()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            stub = consent_pb2_grpc.ConsentServiceStub(ch)
            who = pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550100")

            def opt(n: int) -> None:
                req = {"tenant_id": TENANT, "recipient": who, "event_id": f"e2e-{n}"}
                if n % 2:
                    stub.OptOut(pb.OptOutRequest(**req))
                else:
                    stub.OptIn(pb.OptInRequest(**req))

            stream = stub.WatchConsentEvents(pb.WatchConsentEventsRequest(tenant_id=TENANT))
            first = next(stream)
            assert not first.HasField("event") and first.resume_token
            opt(1)
            got = next(stream)
            assert got.event.kind == pb.CHANGE_KIND_CONSENT
            assert got.event.recipient.address == "+14155550100"
            assert got.event.action == pb.CONSENT_ACTION_OPT_OUT
            assert got.event.source_event_id == "e2e-1"
            stream.cancel()
            opt(2)
            resumed = stub.WatchConsentEvents(
                pb.WatchConsentEventsRequest(tenant_id=TENANT, resume_token=got.resume_token)
            )
            next(resumed)
            again = next(resumed)
            assert again.event.source_event_id == "e2e-2"
            assert again.event.event_id != got.event.event_id
            resumed.cancel()

            with pytest.raises(grpc.RpcError) as bad:
                next(
                    stub.WatchConsentEvents(
                        pb.WatchConsentEventsRequest(tenant_id=TENANT, resume_token="garbage!")
                    )
                )
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT

            for n in range(3, 8):  # past the retention of 3
                opt(n)
            with pytest.raises(grpc.RpcError) as old:
                next(
                    stub.WatchConsentEvents(
                        pb.WatchConsentEventsRequest(
                            tenant_id=TENANT, resume_token=first.resume_token
                        )
                    )
                )
            assert old.value.code() is grpc.StatusCode.OUT_OF_RANGE
            assert "ExportConsent" in (old.value.details() or "")

        # consentctl watch: from the oldest retained (the last 3), as JSON lines, and it
        # prints the token to resume from.
        proc = run_cli(srv, "watch", TENANT, "--from-oldest", "--json", "--limit", "3")
        assert proc.returncode == 0, proc.stderr
        docs = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [d["event"]["source_event_id"] for d in docs] == ["e2e-5", "e2e-6", "e2e-7"]
        assert f"resume token: {docs[-1]['resume_token']}" in proc.stderr.replace("\n", "")
        bad_cli = run_cli(srv, "watch", TENANT, "--from-token", "nope")
        assert bad_cli.returncode == 1 and "INVALID_ARGUMENT" in bad_cli.stderr

        # The Python clients, sync and async, resume from a token.
        with ConsentClient(srv.target) as client:
            it = client.watch_consent_events(TENANT, resume_token=docs[1]["resume_token"])
            assert next(it).resume_token == docs[1]["resume_token"]
            assert next(it).event.source_event_id == "e2e-7"
            it.close()

        async def async_watch() -> str:
            async with AsyncConsentClient(srv.target) as client:
                async for m in client.watch_consent_events(
                    TENANT, resume_token=docs[1]["resume_token"]
                ):
                    if m.HasField("event"):
                        return m.event.source_event_id
            return ""

        assert asyncio.run(async_watch()) == "e2e-7"
    finally:
        srv.stop()


def run_cli(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env["CONSENT_TARGET"] = srv.target
    return subprocess.run(
        [CONSENTCTL, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_a_poll_is_one_round_trip_and_survives_a_script_flush(redis_proc: Any) -> None:
    """Watching polls every partition: one pipelined EVALSHA per partition, no SCRIPT
    EXISTS before each poll; after Redis lost its scripts (restart, SCRIPT FLUSH) the
    next poll loads it again instead of failing."""
    client = aioredis.Redis.from_url(redis_proc.url)
    try:
        await client.flushdb()
        reader = RedisChangeFeed(client)
        positions = await reader.latest(TENANT)

        async def script_calls() -> int:
            stats = await client.info("commandstats")
            return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_script"))

        before = await script_calls()
        for _ in range(5):
            assert await reader.read(TENANT, positions, 10) == []
        assert await script_calls() == before  # no SCRIPT EXISTS (nor LOAD) per poll
        await client.script_flush()
        assert await reader.read(TENANT, positions, 10) == []
    finally:
        await client.aclose()
