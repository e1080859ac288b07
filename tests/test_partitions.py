"""The partition layout: chosen when a store is created, recorded in ca:meta, never
silently changed, and nothing read or written before a process knows it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions as rex
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from consent_server.domain.delivery import ReceiptStatus
from consent_server.domain.errors import InvalidArgument, StoreUnavailable
from consent_server.domain.feed import decode_token, encode_token, feed_event_id, split_event_id
from consent_server.domain.model import Channel, Recipient
from consent_server.store import keys
from consent_server.store.feed import RedisChangeFeed
from consent_server.store.health import probe
from consent_server.store.migrate import migrate
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.repository import RedisConsentStore
from consent_server.store.retention import feed_maxlen
from consent_server.store.schema import (
    DEFAULT_PARTITIONS,
    SchemaMismatch,
    adopt_recorded_layout,
    check_schema,
)

from .support import RedisProcess, numbered_event

SLOTS = 16_384


# -- tags ---------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=keys.MAX_PARTITIONS))
def test_spread_tags_put_each_partition_in_its_own_share_of_the_slots(partitions: int) -> None:
    tags = keys.spread_tags(partitions)
    assert len(tags) == partitions
    for part, tag in enumerate(tags):
        slot = key_slot(tag.encode())
        assert part * SLOTS // partitions <= slot < (part + 1) * SLOTS // partitions
        assert tag.startswith("{cp") and tag.endswith("}")
    # A tag names its partition back, and never looks like a legacy one.
    keys.configure(partitions, spread=True)
    for part in range(partitions):
        assert keys.partition_of_key(keys.outbox(part)) == part
    assert not set(tags) & set(keys.legacy_tags())


@pytest.mark.parametrize("masters", [3, 5, 7, 16])
def test_each_master_holds_its_share_of_the_default_partitions(masters: int) -> None:
    # redis-cli --cluster create gives each master a contiguous range of slots; only the
    # two partitions whose shares straddle its ends may fall either way.
    bounds = [m * SLOTS // masters for m in range(masters + 1)]
    slots = [key_slot(t.encode()) for t in keys.spread_tags(DEFAULT_PARTITIONS)]
    held = [sum(lo <= s < hi for s in slots) for lo, hi in itertools.pairwise(bounds)]
    assert sum(held) == DEFAULT_PARTITIONS
    assert all(abs(h - DEFAULT_PARTITIONS / masters) < 2 for h in held), held


def test_the_layout_rejects_counts_it_cannot_name() -> None:
    for bad in (0, -1, keys.MAX_PARTITIONS + 1):
        with pytest.raises(ValueError, match="partitions must be"):
            keys.configure(bad, spread=True)
    with pytest.raises(ValueError, match="legacy layout has 16"):
        keys.configure(32, spread=False)  # the legacy layout has exactly 16


def test_message_ids_name_every_partition_of_the_largest_layout() -> None:
    keys.configure(keys.MAX_PARTITIONS, spread=True)
    for part in (0, 17, 128, keys.MAX_PARTITIONS - 1):
        mid = keys.new_message_id(part)
        assert keys.MESSAGE_ID_RE.match(mid) and keys.message_partition(mid) == part
    keys.configure(16, spread=True)
    assert keys.message_partition(keys.new_message_id(200)) is None  # not of this store


# -- feed ids and tokens across layouts ---------------------------------------------------


@given(
    st.integers(min_value=1, max_value=keys.MAX_PARTITIONS).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n - 1))
    ),
    st.integers(min_value=0, max_value=2**53),
    st.integers(min_value=0, max_value=99),
)
def test_feed_event_ids_round_trip_for_every_partition_count(
    sized: tuple[int, int], ms: int, seq: int
) -> None:
    partitions, part = sized
    event_id = feed_event_id(part, f"{ms}-{seq}", partitions)
    assert split_event_id(event_id, partitions) == (part, f"{ms}-{seq}")


def test_feed_event_ids_of_a_16_partition_store_keep_their_two_digits() -> None:
    assert feed_event_id(7, "1796320123990-0", 16) == "07-1796320123990-0"
    assert feed_event_id(7, "1796320123990-0", 128) == "007-1796320123990-0"
    assert split_event_id("07-1796320123990-0", 128) is None  # not this store's spelling


@given(
    st.integers(min_value=1, max_value=keys.MAX_PARTITIONS).flatmap(
        lambda n: st.lists(
            st.one_of(
                st.just("0-0"),
                st.tuples(st.integers(0, 2**48), st.integers(0, 50)).map(
                    lambda t: f"{t[0]}-{t[1]}"
                ),
            ),
            min_size=n,
            max_size=n,
        )
    )
)
def test_resume_tokens_round_trip_and_stay_short(positions: list[str]) -> None:
    token = encode_token("acme", positions)
    assert decode_token(token, "acme", len(positions)) == positions
    with pytest.raises(InvalidArgument):
        decode_token(token, "acme", len(positions) + 1)  # another layout's token


def test_a_token_of_256_busy_partitions_fits() -> None:
    positions = [f"{1796320123990 + 7919 * n}-{n % 3}" for n in range(keys.MAX_PARTITIONS)]
    token = encode_token("acme", positions)
    assert len(token) < 8192 and decode_token(token, "acme", 256) == positions


def test_version_1_tokens_are_still_read() -> None:
    raw = json.dumps({"v": 1, "t": "acme", "p": ["5-0"] + ["0-0"] * 15}).encode()
    token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert decode_token(token, "acme", 16) == ["5-0"] + ["0-0"] * 15


def test_a_token_that_inflates_without_end_is_refused() -> None:
    bomb = zlib.compress(b"{" + b" " * 10_000_000 + b"}", 9)
    token = base64.urlsafe_b64encode(bomb).decode().rstrip("=")
    assert len(token) < 16_384
    with pytest.raises(InvalidArgument):
        decode_token(token[:8192], "acme", 16)


# -- recorded layout -------------------------------------------------------------------------


async def test_a_new_store_records_its_partitions_and_uses_them(store: RedisConsentStore) -> None:
    r: Any = store.client
    keys.configure(keys.LEGACY_PARTITIONS, spread=False)
    await check_schema(r)
    meta = await r.hgetall(keys.META)
    assert meta[b"partitions"] == str(DEFAULT_PARTITIONS).encode() and meta[b"tags"] == b"spread"
    assert meta[b"buckets"] == str(keys.buckets_for(DEFAULT_PARTITIONS)).encode()
    assert (keys.PARTITIONS, keys.SPREAD) == (DEFAULT_PARTITIONS, True)
    # Written through the store, read back under the recorded tags.
    await store.record_event(numbered_event("acme", 1, 1))
    part = keys.partition("acme", numbered_event("acme", 1, 1).recipient)
    assert await r.exists(keys.feed("acme", part))


async def test_a_different_count_on_an_existing_store_is_refused(store: RedisConsentStore) -> None:
    r: Any = store.client
    await check_schema(r, 64)
    assert keys.PARTITIONS == 64
    with pytest.raises(SchemaMismatch, match="created with 64 partitions"):
        await check_schema(r, 128)
    assert await check_schema(r) == keys.SCHEMA and keys.PARTITIONS == 64  # unset: recorded one
    assert (await r.hgetall(keys.META))[b"partitions"] == b"64"  # unchanged


async def test_a_store_without_a_recorded_count_is_the_legacy_layout(
    store: RedisConsentStore,
) -> None:
    r: Any = store.client
    await r.hset(keys.META, mapping={"schema": "2", "buckets": "8192"})  # what 16 wrote
    await check_schema(r)
    assert (keys.PARTITIONS, keys.SPREAD) == (16, False)
    assert keys.tag(3) == "{cp03}"


async def test_legacy_keys_without_meta_keep_the_legacy_layout(store: RedisConsentStore) -> None:
    r: Any = store.client
    await r.hset("ca:{cp05}:acme:r:1f", "s+14155550100", "1")
    await check_schema(r)
    meta = await r.hgetall(keys.META)
    assert meta[b"partitions"] == b"16" and meta[b"tags"] == b"legacy"
    assert (keys.PARTITIONS, keys.SPREAD) == (16, False)


@pytest.mark.parametrize(
    "meta",
    [
        {"partitions": "0"},
        {"partitions": "257"},
        {"partitions": "x"},
        {"partitions": "16", "tags": "zigzag"},
        {"partitions": "32", "tags": "legacy"},
    ],
)
async def test_a_layout_this_release_does_not_know_is_refused(
    store: RedisConsentStore, meta: dict[str, str]
) -> None:
    r: Any = store.client
    await r.hset(keys.META, mapping={"schema": "2", **meta})
    with pytest.raises(SchemaMismatch):
        await check_schema(r)


async def test_servers_starting_together_record_one_count(store: RedisConsentStore) -> None:
    """Two processes creating the store at once: one count is recorded, the other is
    refused rather than writing under its own."""
    r: Any = store.client
    outcomes = await asyncio.gather(
        check_schema(r, 32), check_schema(r, 64), return_exceptions=True
    )
    recorded = int((await r.hgetall(keys.META))[b"partitions"])
    assert recorded in (32, 64)
    refused = [o for o in outcomes if isinstance(o, SchemaMismatch)]
    assert len(refused) == 1 and f"created with {recorded} partitions" in str(refused[0])


async def test_nothing_is_read_or_written_before_the_layout_is_known(
    store: RedisConsentStore,
) -> None:
    r: Any = store.client
    keys.await_layout()
    with pytest.raises(StoreUnavailable):
        await store.record_event(numbered_event("acme", 1, 1))
    with pytest.raises(StoreUnavailable):
        await store.read_records("acme", [Recipient(Channel.SMS, "+14155550100")], "")
    with pytest.raises(StoreUnavailable):
        await probe(r)  # health: NOT_SERVING
    assert not [k async for k in r.scan_iter(match="ca:{cp*")]
    await check_schema(r)
    await probe(r)
    await store.record_event(numbered_event("acme", 1, 1))


async def test_tools_adopt_the_layout_a_server_recorded(store: RedisConsentStore) -> None:
    r: Any = store.client
    await check_schema(r, 48)
    keys.configure(keys.LEGACY_PARTITIONS, spread=False)
    adopt_recorded_layout(await r.hgetall(keys.META))
    assert (keys.PARTITIONS, keys.SPREAD) == (48, True)


# -- the server process ------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_server_refuses_another_count_on_an_existing_store_with_exit_2(
    tmp_path: Path,
) -> None:
    redis_proc = RedisProcess(tmp_path / "redis").start()
    try:
        r = redis_proc.client()
        r.hset(keys.META, mapping={"schema": "3", "partitions": "128", "tags": "spread"})
        r.hset(keys.META, "buckets", str(keys.buckets_for(128)))
        env = {
            **os.environ,
            "CONSENT_REDIS_URL": redis_proc.url,
            "CONSENT_PARTITIONS": "64",
            "CONSENT_LISTEN": "127.0.0.1:0",
            "CONSENT_HTTP_LISTEN": "127.0.0.1:0",
        }
        done = subprocess.run(
            [sys.executable, "-m", "consent_server"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert "created with 128 partitions" in done.stderr
        assert r.hget(keys.META, "partitions") == b"128"
    finally:
        redis_proc.stop()


# -- what a review found: each a way to hide an opt-out, now refused ---------------------------


async def test_a_new_store_is_schema_3_so_a_release_knowing_only_2_refuses_it(
    store: RedisConsentStore,
) -> None:
    """Even with 16 partitions (the legacy count and bucket count), a new store is not
    schema 2: a rollback to a release that reads schema 2 under the legacy tags would
    find none of its records, so it must refuse to start instead."""
    r: Any = store.client
    await check_schema(r, 16)
    meta = await r.hgetall(keys.META)
    assert meta[b"schema"] == b"3" and meta[b"tags"] == b"spread"
    assert meta[b"buckets"] == str(keys.buckets_for(16)).encode()  # what schema 2 had too


async def test_schema_and_tags_must_agree(store: RedisConsentStore) -> None:
    r: Any = store.client
    await r.hset(keys.META, mapping={"schema": "2", "partitions": "128", "tags": "spread"})
    with pytest.raises(SchemaMismatch, match="schema 2 is the legacy layout"):
        await check_schema(r)
    await r.hset(keys.META, mapping={"schema": "3", "partitions": "16", "tags": "legacy"})
    with pytest.raises(SchemaMismatch, match="schema 2 is the legacy layout"):
        await check_schema(r)


async def test_a_deleted_meta_over_spread_data_is_refused_not_recreated(
    store: RedisConsentStore,
) -> None:
    r: Any = store.client
    await check_schema(r, 64)
    await store.record_event(numbered_event("acme", 1, 1))
    await r.delete(keys.META)
    keys.configure(keys.LEGACY_PARTITIONS, spread=False)
    with pytest.raises(SchemaMismatch, match="restore ca:meta"):
        await check_schema(r)
    assert not await r.exists(keys.META)  # nothing recorded over the data


async def test_migrate_never_overwrites_a_layout_recorded_meanwhile(
    store: RedisConsentStore,
) -> None:
    """A server that created the (empty) store while a migration ran keeps its layout."""
    r: Any = store.client
    await check_schema(r)  # the server: 128, spread
    with pytest.raises(ValueError, match="current layout"):
        await migrate(r)
    assert (await r.hgetall(keys.META))[b"partitions"] == str(DEFAULT_PARTITIONS).encode()


async def test_while_the_layout_is_pending_every_count_reader_refuses(
    store: RedisConsentStore,
) -> None:
    """Not only keys: readers of the partition count (receipts by message id, the change
    feed, webhook cursors, retention) must not act on the legacy default meanwhile."""
    r: Any = store.client
    await check_schema(r)
    mid = keys.new_message_id(100)  # a partition a legacy store does not have
    keys.await_layout()
    with pytest.raises(StoreUnavailable):
        keys.message_partition(mid)
    with pytest.raises(StoreUnavailable):
        await DeliveryRepository(r).apply_receipt("acme", ReceiptStatus.FAILED, message_id=mid)
    with pytest.raises(StoreUnavailable):
        _ = RedisChangeFeed(r).partitions
    with pytest.raises(StoreUnavailable):
        feed_maxlen(r)
    await check_schema(r)
    assert keys.message_partition(mid) == 100


@pytest.mark.parametrize(
    "raw",
    [
        {"v": 2, "t": "acme", "n": 16, "p": {"9" * 5000: "1-0"}},  # a huge partition key
        {"v": 2, "t": "acme", "n": True, "p": {}},  # a bool is not a count
        {"v": 2, "t": "acme", "n": 16, "p": {"3": ["1-0"]}},
        {"v": 2, "t": "acme", "n": 16, "p": []},
    ],
)
def test_odd_v2_tokens_are_invalid_argument(raw: dict[str, Any]) -> None:
    token = base64.urlsafe_b64encode(zlib.compress(json.dumps(raw).encode())).decode()
    with pytest.raises(InvalidArgument):
        decode_token(token.rstrip("="), "acme", 16 if raw["n"] is not True else 1)


def test_deeply_nested_and_trailing_junk_tokens_are_invalid_argument() -> None:
    nested = zlib.compress(b"[" * 5000 + b"]" * 5000, 9)
    junk = zlib.compress(json.dumps({"v": 2, "t": "acme", "n": 16, "p": {}}).encode()) + b"x"
    for packed in (nested, junk, b"[" * 3000):
        token = base64.urlsafe_b64encode(packed).decode().rstrip("=")
        with pytest.raises(InvalidArgument):
            decode_token(token, "acme", 16)


async def test_a_node_timing_out_in_a_partition_pipeline_is_an_outage(
    store: RedisConsentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster pipeline puts a node's timeout in its replies: it must surface as
    StoreUnavailable (which the worker retries), not as a raw redis error."""

    class TimingOut:
        def __getattr__(self, _name: str) -> Any:
            return lambda *_a, **_k: None

        async def execute(self, raise_on_error: bool = True) -> list[Any]:
            assert raise_on_error is False
            return [rex.TimeoutError("Timeout reading from 127.0.0.1:7001")] * keys.partitions()

    outbox = DeliveryRepository(store.client, cluster=True)
    monkeypatch.setattr(outbox, "_r", type("C", (), {"pipeline": lambda *_a, **_k: TimingOut()})())
    with pytest.raises(StoreUnavailable):
        await outbox.ensure_groups()
    with pytest.raises(StoreUnavailable):
        await outbox.read("c1", 10, None)


async def test_a_partition_answering_an_error_does_not_hold_back_the_others(
    store: RedisConsentStore,
) -> None:
    """The per-partition reads of a cluster: entries read from healthy partitions are
    handed over although another partition answered an error (they are this consumer's
    pending entries now; raising would leave them waiting for a reclaim)."""
    r: Any = store.client
    outbox = DeliveryRepository(r, cluster=True)
    await outbox.ensure_groups()
    await r.delete(keys.outbox(0))  # partition 0 answers an error (NOGROUP: no stream)
    await r.xadd(keys.outbox(1), {"id": keys.new_message_id(1), "tenant": "acme"})
    got = await outbox.read("c1", 10, None)
    assert [(e.partition, e.fields["tenant"]) for e in got] == [(1, "acme")]
