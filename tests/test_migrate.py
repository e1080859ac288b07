"""consentctl migrate on a store filled by round-1 code (its record_event.lua, kept in
tests/fixtures/round1/): after the migration every state, history and idempotency
answer of the current store equals what the current code gives for the same events."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from consent_server.domain.model import Action, Channel, ConsentEventInput, Recipient, Source
from consent_server.store import keys
from consent_server.store.migrate import migrate
from consent_server.store.repository import RedisConsentStore
from consent_server.store.retention import feed_keys, feed_maxlen
from consent_server.store.schema import check_schema, stored_schema

OLD, NEW = "acme", "globex"
HOUR = 3_600_000
T0 = time.time_ns() // 1_000_000 - 1000 * HOUR
PEOPLE = [Recipient(Channel.SMS, f"+1415555{n:04d}") for n in range(8)] + [
    Recipient(Channel.EMAIL, f"person{n}@example.com") for n in range(4)
]
ROUND1 = Path(__file__).parent / "fixtures" / "round1" / "record_event.lua"


def events(seed: int) -> list[ConsentEventInput]:
    rnd = random.Random(seed)
    out: list[ConsentEventInput] = []
    for n in range(80):
        if out and rnd.random() < 0.15:
            out.append(rnd.choice(out))  # a replay
            continue
        out.append(
            ConsentEventInput(
                tenant_id="",
                recipient=rnd.choice(PEOPLE),
                topic=rnd.choice(["", "", "marketing", "news"]),
                action=rnd.choice([Action.OPT_OUT, Action.OPT_IN]),
                source=rnd.choice([Source.API, Source.IMPORT, Source.KEYWORD]),
                evidence=rnd.choice(["", f"line {n}", "x" * rnd.randrange(0, 150)]),
                occurred_at_ms=T0 + rnd.randrange(0, 40) * HOUR,
                event_id=f"ev_{seed}_{n}" + "-" * rnd.randrange(0, 30),
                principal="key-1",
            )
        )
    return out


@pytest.fixture(autouse=True)
def round1_layout(store: RedisConsentStore) -> None:
    """Round-1 stores had the 16 legacy partitions, and a migrated store keeps them."""
    keys.configure(keys.LEGACY_PARTITIONS, spread=False)


async def round1_write(r: Any, e: ConsentEventInput) -> None:
    """record_event.lua of round 1, with its keys: state hash and history stream."""
    script = r.register_script(ROUND1.read_text())
    base = keys.recipient_base(e.tenant_id, e.recipient)
    await script(
        keys=[
            keys.state(base),
            keys.history(base),
            f"ca:{keys.tag(keys.partition(e.tenant_id, e.recipient))}:{e.tenant_id}:x:none",
            f"ca:{keys.tag(keys.partition(e.tenant_id, e.recipient))}:{e.tenant_id}:q:none",
            *feed_keys(e.tenant_id, keys.partition(e.tenant_id, e.recipient)),
        ],
        args=[
            e.event_id,
            e.action.value,
            keys.scope_field(e.topic),
            e.topic,
            e.source.value,
            e.evidence,
            str(e.occurred_at_ms),
            e.principal,
            e.tenant_id,
            e.recipient.channel.value,
            e.recipient.address,
            str(feed_maxlen(r)),
        ],
    )


async def answers(store: RedisConsentStore, tenant: str, evs: list[ConsentEventInput]) -> Any:
    out: list[Any] = []
    for topic in ("", "marketing", "news"):
        out.append(await store.read_records(tenant, PEOPLE, topic))
    for who in PEOPLE:
        page = await store.list_events(tenant, who, 500, None)
        out.append([replace(e, recorded_at_ms=0) for e in page.events])
        small = await store.list_events(tenant, who, 2, None)
        out.append((len(small.events), small.next_before_revision))
    # Idempotency: every event again is a replay with its first outcome.
    for e in evs:
        o = await store.record_event(replace(e, tenant_id=tenant))
        out.append(replace(o, recorded_at_ms=0))
    return out


async def test_migrate_round1_data_answers_like_the_current_code(
    store: RedisConsentStore,
) -> None:
    r: Any = store.client
    evs = events(7)
    for e in evs:
        await round1_write(r, replace(e, tenant_id=OLD))
        await store.record_event(replace(e, tenant_id=NEW))
    assert await stored_schema(r) == 1
    summary = await migrate(r)
    assert summary.schema == 2 and not summary.unrecognised
    assert summary.recipients == len({e.recipient for e in evs})
    total = 0
    for who in PEOPLE:
        total += len((await store.list_events(NEW, who, 500, None)).events)
    assert summary.events == total
    assert await r.keys("ca:{cp*}:acme:*:s") == [] and await r.keys("ca:{cp*}:acme:*:h") == []
    assert await check_schema(r) == 2
    again = await migrate(r)  # idempotent: nothing left to do
    assert (again.recipients, again.schema) == (0, 2)
    assert await answers(store, OLD, evs) == await answers(store, NEW, evs)


async def test_an_interrupted_migration_resumes(store: RedisConsentStore) -> None:
    r: Any = store.client
    evs = events(3)
    for e in evs:
        await round1_write(r, replace(e, tenant_id=OLD))
        await store.record_event(replace(e, tenant_id=NEW))
    # An earlier run stopped after moving some recipients (one atomic script each).
    from consent_server.store.scripts import load_script

    one = r.register_script(load_script("migrate_one.lua"))
    moved = PEOPLE[:5]
    for who in moved:
        base = keys.recipient_base(OLD, who)
        bucket, prefix, descriptor = keys.layout(OLD, who)
        await one(keys=[keys.state(base), keys.history(base), bucket, prefix], args=[descriptor])
    assert await stored_schema(r) == 1  # round-1 data left: the server still refuses
    summary = await migrate(r)
    touched = {e.recipient for e in evs}
    assert summary.recipients == len(touched - set(moved))
    assert summary.schema == 2
    assert await answers(store, OLD, evs) == await answers(store, NEW, evs)
