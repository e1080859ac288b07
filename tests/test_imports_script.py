"""The import's batch script writes exactly what record_event.lua writes.

store/bulk.py applies an import with a batch script that takes a lean path for a
recipient the store holds nothing of and runs record_event.lua (the script of OptOut and
OptIn) for every other event. Here the same events go once through record_event.lua,
one call per event, into one tenant and once through the import's apply, in batches,
into another tenant with the same erasure secret; every key of the two tenants must
hold the same thing (the tenant's name and the times Redis recorded aside). A key that
record_event.lua comes to write and the lean path does not fails this test.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from consent_server.domain.model import Action, Channel, ConsentEventInput, Recipient, Source
from consent_server.store import keys
from consent_server.store.bulk import RedisBulkStore
from consent_server.store.records import record_event_args
from consent_server.store.repository import RedisConsentStore
from consent_server.store.retention import feed_keys, feed_maxlen
from consent_server.store.scripts import load_script
from consent_server.store.tombstones import TombstoneNames

ONE, BULK = "acme", "globex"
SECRET = "ab" * 32
HOUR = 3_600_000
T0 = time.time_ns() // 1_000_000 - 1000 * HOUR
# The same numbers on two channels, and e-mail: a call's events differ by channel too.
PEOPLE = [
    *(Recipient(Channel.SMS, f"+1415555{n:04d}") for n in range(8)),
    *(Recipient(Channel.WHATSAPP, f"+1415555{n:04d}") for n in range(4)),
    Recipient(Channel.EMAIL, "ana@example.com"),
    Recipient(Channel.EMAIL, "bo@example.com"),
]


def base36(n: int) -> str:
    """``n`` in base 36 (layout.lua's b36)."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, d = divmod(n, 36)
        out = digits[d] + out
    return out or "0"


def events(tenant: str, seed: int) -> list[ConsentEventInput]:
    """A random mix: first events of new recipients, later ones, older ones, replays."""
    rnd = random.Random(seed)
    out: list[ConsentEventInput] = []
    for n in range(60):
        if out and rnd.random() < 0.15:  # a replay of an earlier event
            e = rnd.choice(out)
        else:
            who = rnd.choice(PEOPLE)
            e = ConsentEventInput(
                tenant_id="",
                recipient=who,
                topic=rnd.choice(["", "", "marketing", "news"]),
                action=rnd.choice([Action.OPT_OUT, Action.OPT_OUT, Action.OPT_IN]),
                # Neighbours that differ in any one of the values a call shares per
                # profile (store/bulk.py): source, evidence, principal, channel, topic.
                source=rnd.choice([Source.IMPORT, Source.IMPORT, Source.API, Source.ADMIN]),
                # Some evidence long enough to continue in further history fields.
                evidence=rnd.choice(["", "same", f"line {n}"])
                + (" long" * 40 if n % 7 == 0 else ""),
                occurred_at_ms=T0 + rnd.randrange(0, 50) * HOUR,
                event_id=f"imp_{seed}_{n}",
                principal=rnd.choice(["test-key", "test-key", "other-key"]),
            )
        out.append(e)
    return [replace(e, tenant_id=tenant) for e in out]


def neighbours(tenant: str, seed: int) -> list[ConsentEventInput]:
    """Events each differing from the one before in exactly one value a batch call
    shares per profile (store/bulk.py: action, topic, source, evidence, principal,
    channel), for new and for known recipients: a profile taken from the wrong
    neighbour writes something record_event.lua would not."""
    rnd = random.Random(seed)
    sms = [p for p in PEOPLE if p.channel is Channel.SMS]
    base = ConsentEventInput(
        tenant, sms[0], "", Action.OPT_OUT, Source.IMPORT, "ev", T0, "", "test-key"
    )
    changes: list[dict[str, Any]] = [
        {"action": Action.OPT_IN},
        {"action": Action.OPT_OUT},
        {"topic": "news"},
        {"topic": ""},
        {"source": Source.API},
        {"source": Source.IMPORT},
        {"evidence": "other"},
        {"evidence": "ev"},
        {"principal": "other-key"},
        {"principal": "test-key"},
    ]
    out: list[ConsentEventInput] = []
    e = base
    for n in range(48):
        change = dict(rnd.choice(changes))
        who = rnd.choice(sms)
        if rnd.random() < 0.3:  # the same number on another channel
            change["recipient"] = Recipient(Channel.WHATSAPP, who.address)
        else:
            change["recipient"] = who
        e = replace(e, **change, occurred_at_ms=T0 + (n + 1) * HOUR, event_id=f"nb_{seed}_{n}")
        out.append(e)
    return out


def outcome_of(reply: Any) -> str:
    """What an import counts for a record_event.lua reply {kind, "applied|changed|...", _}."""
    kind = int(reply[0])
    if kind == 1:
        return "duplicate"
    if kind == 2:
        return "reused"
    if kind == 3:
        return "ignored_erased"
    applied, changed = reply[1].decode().split("|", 2)[:2]
    if applied != "1":
        return "ignored_older"
    return "changed" if changed == "1" else "applied"


async def tombstones(r: Any, tenant: str) -> None:
    """Two erased recipients (one tombstone with its erasure time, one older kind without)."""
    for who, fields in (
        (PEOPLE[0], {"at": str(T0 + 20 * HOUR), "s:*": f"out|{T0 + 20 * HOUR}|0|erasure|"}),
        (PEOPLE[1], {"s:marketing": f"out|{T0 + 30 * HOUR}|0|erasure|"}),
    ):
        digest = TombstoneNames.digest(SECRET.encode(), who)
        await r.hset(keys.tombstone(tenant, who, digest), mapping=fields)


async def dump(r: Any, tenant: str, since_ms: int) -> dict[str, Any]:
    """Every key of the tenant, named without the tenant or partition, recorded times
    masked (and the change feed's time-based entry ids, and its entries' tenant)."""
    now_ms = time.time_ns() // 1_000_000 + 1000

    def mask(value: Any) -> str:
        s = value.decode() if isinstance(value, bytes) else str(value)
        if s == tenant:
            return "T"
        if "\x1f" in s and not s.startswith("s+"):  # a packed history event (layout.lua)
            parts = s.split("\x1f")
            if len(parts) > 4 and since_ms <= int(parts[4], 36) <= now_ms:
                parts[4] = "<now>"  # the recorded time
            if len(parts) > 7 and parts[7]:
                parts[7] = "<id>"  # the change feed entry's id (time-based)
            s = "\x1f".join(parts)
        s = re.sub(
            r"\b\d{13}-\d+\b", lambda m: "<id>" if since_ms <= int(m[0][:13]) <= now_ms else m[0], s
        )
        return re.sub(r"\d{13}", lambda m: "<now>" if since_ms <= int(m[0]) <= now_ms else m[0], s)

    out: dict[str, Any] = {}
    for key in sorted(await r.keys(f"*:{tenant}:*")):
        # The partition derives from the tenant too: compare without it.
        name = re.sub(r"\{cp[0-9a-f]+\}", "{cp}", key.decode().replace(f":{tenant}:", ":T:"))
        # Record and history buckets (their numbers derive from the tenant too): what
        # must agree is every recipient's fields, whichever bucket holds them.
        name = re.sub(r":([rh]):[0-9a-f]+$", r":\1:*", name)
        kind = (await r.type(key)).decode()
        if kind == "hash" and name.endswith("*"):
            raw = {k.decode(): v.decode() for k, v in (await r.hgetall(key)).items()}
            # A long value's 64-byte continuations (field\x1f<seq>\x1f<n>) joined first:
            # where it is cut depends on the times in it.
            for f in sorted(
                (f for f in raw if f.count("\x1f") == 2), key=lambda f: int(f.rsplit("\x1f", 1)[1])
            ):
                raw[f.rsplit("\x1f", 1)[0]] += raw.pop(f)
            out.setdefault(name, []).extend((mask(k), mask(v)) for k, v in raw.items())
            out[name].sort()
        elif kind == "hash":
            out[name] = sorted((mask(k), mask(v)) for k, v in (await r.hgetall(key)).items())
        elif kind == "stream" and name.endswith(":feed"):
            # Partitions differ between the two tenants, and a batch applies partition
            # by partition: what must agree is each recipient's entries, in order.
            out.setdefault(name, []).extend(
                sorted((mask(k), mask(v)) for k, v in f.items()) for _, f in await r.xrange(key)
            )
            out[name].sort(key=lambda fields: (dict(fields)["ch"], dict(fields)["addr"]))
        elif kind == "stream":
            out[name] = [
                (mask(i), sorted((mask(k), mask(v)) for k, v in f.items()))
                for i, f in await r.xrange(key)
            ]
        elif kind == "zset":
            out[name] = [(mask(m), s) for m, s in await r.zrange(key, 0, -1, withscores=True)]
        else:
            out[name] = (kind, mask(await r.get(key)) if kind == "string" else "?")
    return out


async def record_one(r: Any, e: ConsentEventInput) -> Any:
    """record_event.lua for one event of tenant ONE, with the keys and arguments the
    repository sends (the batch path builds its own from the same functions): the tests
    compare the two scripts, given the same events."""
    bucket, prefix, descriptor = keys.layout(ONE, e.recipient)
    digest = TombstoneNames.digest(SECRET.encode(), e.recipient)
    return await r.register_script(load_script("record_event.lua"))(
        keys=[
            bucket,
            prefix,
            keys.tombstone(ONE, e.recipient, digest),
            keys.message_index(ONE, e.recipient, digest),
            *feed_keys(ONE, keys.partition(ONE, e.recipient)),
        ],
        args=record_event_args(e, feed_maxlen(r), descriptor),
    )


@pytest.mark.parametrize("make", [events, neighbours], ids=["mixed", "neighbours"])
@pytest.mark.parametrize("seed", range(4))
async def test_the_batch_script_writes_what_record_event_writes(
    store: RedisConsentStore, seed: int, make: Callable[[str, int], list[ConsentEventInput]]
) -> None:
    r: Any = store.client
    since = time.time_ns() // 1_000_000 - 1000
    for tenant in (ONE, BULK):
        await r.set(keys.erasure_secret(tenant), SECRET)
        await tombstones(r, tenant)
    single = [await record_one(r, e) for e in make(ONE, seed)]
    bulk = RedisBulkStore(store.client, store.tombstones)
    batched = make(BULK, seed)
    outcomes: list[str] = []
    cut = random.Random(seed).randrange(1, 20)  # batches of different sizes
    for start in range(0, len(batched), cut):
        outcomes += await bulk.apply(batched[start : start + cut])
    assert len(outcomes) == len(single)
    assert "reused" not in outcomes
    # The batch's one-letter outcomes are record_event.lua's replies, read as an import
    # counts them.
    assert outcomes == [outcome_of(reply) for reply in single]
    assert "changed" in outcomes
    if make is events:
        assert "duplicate" in outcomes
    assert await dump(r, BULK, since) == await dump(r, ONE, since)


async def test_the_lean_path_applies_a_new_recipients_first_event(
    store: RedisConsentStore,
) -> None:
    """What the comparison above relies on: most first events take the lean path."""
    bulk = RedisBulkStore(store.client, store.tombstones)
    e = ConsentEventInput(
        BULK, PEOPLE[5], "", Action.OPT_OUT, Source.IMPORT, "x", T0, "imp_lean", "k"
    )
    assert await bulk.apply([e]) == ["changed"]
    assert await bulk.apply([e]) == ["duplicate"]
    bucket, _, _ = keys.layout(BULK, PEOPLE[5])
    main = await store.client.hget(bucket, keys.rfield(PEOPLE[5]))
    # Event count 1; the all-topics record packed (layout.lua): out, T0, rev 1, import.
    assert main == f"1;o{base36(T0)},1,i,imp_lean".encode()


@pytest.mark.redis
async def test_a_batch_over_every_partition_needs_one_connection(redis_proc: Any) -> None:
    """A batch's calls go pipelined, not one pooled connection each: with a pool of one
    connection a batch touching every partition still applies (a call per partition at
    once would exhaust the pool and fail the import), and so does a dry run's read."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_proc.url, max_connections=1)
    try:
        await client.flushdb()
        bulk = RedisBulkStore(client)
        people = [Recipient(Channel.SMS, f"+1415666{n:04d}") for n in range(400)]
        assert len({keys.partition(BULK, p) for p in people}) == keys.PARTITIONS
        batch = [
            ConsentEventInput(BULK, p, "", Action.OPT_OUT, Source.IMPORT, "x", T0, f"i{n}", "k")
            for n, p in enumerate(people)
        ]
        assert await bulk.apply(batch) == ["changed"] * len(batch)
        assert await bulk.apply(batch) == ["duplicate"] * len(batch)
        views = await bulk.views(BULK, [(p, [f"i{n}"]) for n, p in enumerate(people)])
        assert all(v.seen == {f"i{n}": "out:"} for n, v in enumerate(views))
    finally:
        await client.aclose()


async def test_the_lean_path_writes_times_in_base_36_as_record_event_does(
    store: RedisConsentStore,
) -> None:
    """The lean path's own base-36 of a time (the digits above the last four looked
    up) agrees with layout.lua's b36 on either side of each digit boundary."""
    r: Any = store.client
    since = time.time_ns() // 1_000_000 - 1000
    times = [0, 1, 35, 36, 36**4 - 1, 36**4, 36**4 + 1, 36**5 - 1, 36**8 - 1, 36**8, T0]
    people = [Recipient(Channel.SMS, f"+1415777{n:04d}") for n in range(len(times))]
    batch = {
        tenant: [
            ConsentEventInput(
                tenant, p, topic, Action.OPT_OUT, Source.IMPORT, "x", t, f"b{n}{topic}", "k"
            )
            for n, (p, t) in enumerate(zip(people, times, strict=True))
            for topic in ("", "news")
        ]
        for tenant in (ONE, BULK)
    }
    for tenant in (ONE, BULK):
        await r.set(keys.erasure_secret(tenant), SECRET)
    for e in batch[ONE]:
        await record_one(r, e)
    assert await RedisBulkStore(r, store.tombstones).apply(batch[BULK]) == ["changed"] * len(
        batch[BULK]
    )
    assert await dump(r, BULK, since) == await dump(r, ONE, since)


@pytest.mark.parametrize("partitions", [keys.LEGACY_PARTITIONS, 128])
def test_the_import_names_keys_as_the_repository_does(partitions: int) -> None:
    """The import's apply names keys from one CRC and prefixes built once per partition,
    and tombstones with an uncached digester: the same names as keys.partition,
    keys.bucket, keys.record_bucket, keys.tombstone and TombstoneNames.digest."""
    before = (keys.PARTITIONS, keys.SPREAD)
    keys.configure(partitions, spread=partitions != keys.LEGACY_PARTITIONS)
    try:
        name = TombstoneNames.digester(SECRET.encode())
        for n in range(300):
            who = Recipient(list(Channel)[n % len(Channel)], f"+1415888{n:04d}")
            part, b = keys.placement(ONE, who)
            assert (part, b) == (keys.partition(ONE, who), keys.bucket(ONE, who))
            assert f"{keys.record_bucket_prefix(part, ONE)}{b:x}" == keys.layout(ONE, who)[0]
            digest = TombstoneNames.digest(SECRET.encode(), who)
            assert name(who) == digest
            assert (
                f"{keys.tombstone_prefix(part, ONE)}{who.channel.value}:{name(who)}"
                == keys.tombstone(ONE, who, digest)
            )
    finally:
        keys.configure(*before[:1], spread=before[1])
