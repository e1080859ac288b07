"""Point-in-time checks (CheckConsent ``at``): the pure rule against a simple model of
the store (a property test over histories of opt-outs, opt-ins and late events), and
the same answers through the use case on the embedded store and a real redis-server,
erasure included."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_server.domain.errors import InvalidArgument
from consent_server.domain.model import (
    Action,
    Channel,
    ConsentEvent,
    ConsentRecord,
    Policy,
    Scope,
    Source,
    Status,
)
from consent_server.domain.pointintime import decide_at
from consent_server.domain.security import RateLimits, SecurityAuthority
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawRecipient, RawTimestamp
from consent_server.store.history import RedisConsentHistory
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

from .support import change_consent, raw_ts

TOPICS = ("", "m", "n")


def model(
    events: list[tuple[Action, str, int]], topic: str, at: int, policy: Policy
) -> tuple[bool, Status, int | None]:
    """What a store that received, in recording order, only the events that occurred by
    ``at`` would answer now: (allowed, status, revision of the deciding event)."""
    records: dict[str, tuple[Action, int, int]] = {}  # scope -> (action, occurred, revision)
    for revision, (action, scope, occurred) in enumerate(events, start=1):
        if occurred > at:
            continue
        held = records.get(scope)
        if held is None or occurred >= held[1]:  # record_event.lua: not older applies
            records[scope] = (action, occurred, revision)
    candidates = [r for s, r in records.items() if s in ("", topic)]
    if not candidates:
        allowed = policy is Policy.ALLOW_UNLESS_OPTED_OUT
        return allowed, Status.NO_RECORD, None
    action, _, revision = max(candidates, key=lambda r: (r[1], r[2]))
    return action is Action.OPT_IN, action.status, revision


def as_events(events: list[tuple[Action, str, int]]) -> list[ConsentEvent]:
    return [
        ConsentEvent(f"e{i}", a, t, Source.API, "", o, 10_000 + i, True, i, "p")
        for i, (a, t, o) in enumerate(events, start=1)
    ]


history = st.lists(
    st.tuples(st.sampled_from(list(Action)), st.sampled_from(TOPICS), st.integers(0, 30)),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(events=history, topic=st.sampled_from(("m", "n")), policy=st.sampled_from(list(Policy)))
def test_every_instant_is_answered_as_the_model_says(
    events: list[tuple[Action, str, int]], topic: str, policy: Policy
) -> None:
    wire = as_events(events)
    for order in (wire, list(reversed(wire))):  # the history's order does not matter
        for at in range(-1, 32):
            got = decide_at(order, topic, at, policy)
            allowed, status, revision = model(events, topic, at, policy)
            assert (got.decision.allowed, got.decision.status) == (allowed, status), at
            assert (got.event.revision if got.event else None) == revision, at
            if got.event is not None:
                assert got.event.occurred_at_ms <= at
                assert got.decision.decided_by is (
                    Scope.ALL if got.event.topic == "" else Scope.TOPIC
                )


def test_a_late_opt_out_counts_from_when_the_customer_acted() -> None:
    # Recorded: opt-in at 10, then (late) the opt-out that happened at 5, then opt-in at 20.
    events = as_events([(Action.OPT_IN, "m", 10), (Action.OPT_OUT, "", 5), (Action.OPT_IN, "", 20)])
    policy = Policy.ALLOW_UNLESS_OPTED_OUT
    assert decide_at(events, "m", 4, policy).decision.status is Status.NO_RECORD
    at7 = decide_at(events, "m", 7, policy)
    assert not at7.decision.allowed and at7.event is not None and at7.event.event_id == "e2"
    assert decide_at(events, "m", 12, policy).decision.allowed  # the newer topic opt-in
    assert decide_at(events, "n", 12, policy).decision.allowed is False
    assert decide_at(events, "n", 25, policy).event.event_id == "e3"  # type: ignore[union-attr]


def test_an_erasure_tombstone_answers_every_instant_before_later_events() -> None:
    tomb = ConsentRecord(Status.OPTED_OUT, 100, 0, Source.ERASURE, "erasure")
    later = as_events([(Action.OPT_IN, "m", 150)])
    policy = Policy.ALLOW_UNLESS_OPTED_OUT
    for at in (0, 99, 100, 149):
        got = decide_at(later, "m", at, policy, tombstone=(None, tomb))
        assert not got.decision.allowed and got.event is None
        assert got.decision.record is not None and got.decision.record.source is Source.ERASURE
    assert decide_at(later, "m", 150, policy, tombstone=(None, tomb)).decision.allowed
    assert not decide_at(later, "n", 200, policy, tombstone=(None, tomb)).decision.allowed


WHO = RawRecipient(Channel.WHATSAPP, "+919876543210")


async def test_checks_at_an_instant_through_the_store(store: RedisConsentStore) -> None:
    a = ConsentAuthority(store, history=RedisConsentHistory(store.client, store.tombstones))
    base = time.time_ns() // 1_000_000 - 3_600_000
    recorded = [(Action.OPT_IN, "m", 10), (Action.OPT_OUT, "", 5), (Action.OPT_IN, "", 20)]
    for action, topic, minute in recorded:
        await change_consent(
            a, action, "acme", WHO, topic, occurred_at=raw_ts(base + minute * 60_000)
        )
    for minute in range(0, 30):
        at = base + minute * 60_000
        want = model(recorded, "m", minute, Policy.ALLOW_UNLESS_OPTED_OUT)
        got = await a.check("acme", WHO, "m", raw_ts(at))
        assert (got.decision.allowed, got.decision.status) == want[:2], minute
        assert (got.deciding_event.revision if got.deciding_event else None) == want[2]
    [one, bad] = await a.batch_check(
        "acme", "m", [WHO, RawRecipient(Channel.SMS, "nope")], raw_ts(base + 7 * 60_000)
    )
    assert not one.decision.allowed  # type: ignore[union-attr]
    assert not hasattr(bad, "decision")

    # Erase an opted-out recipient: the history is gone, the tombstone's suppression
    # answers for every instant (also those the recipient was allowed at).
    await change_consent(a, Action.OPT_OUT, "acme", WHO, occurred_at=raw_ts(base + 25 * 60_000))
    assert (await a.check("acme", WHO, "m", raw_ts(base + 12 * 60_000))).decision.allowed
    sec = SecurityAuthority(
        RedisSecurityStore(store.client, store.tombstones), store, limits=RateLimits(0, 0)
    )
    await sec.forget("acme", WHO, "op")
    for minute in (0, 12, 25):
        got = await a.check("acme", WHO, "m", raw_ts(base + minute * 60_000))
        assert not got.decision.allowed and got.deciding_event is None
        assert got.decision.record is not None
        assert got.decision.record.source is Source.ERASURE


async def test_at_is_validated(store: RedisConsentStore) -> None:
    a = ConsentAuthority(store, history=RedisConsentHistory(store.client, store.tombstones))
    future = time.time_ns() // 1_000_000 + 3_600_000
    for at in (RawTimestamp(-1, 0), RawTimestamp(0, -5), RawTimestamp(10**12, 0), raw_ts(future)):
        with pytest.raises(InvalidArgument) as info:
            await a.check("acme", WHO, "m", at)
        assert [v.field for v in info.value.violations] == ["at"]
    many = [WHO] * 1001
    with pytest.raises(InvalidArgument) as info:
        await a.batch_check("acme", "m", many, raw_ts(future - 7_200_000))
    assert [v.field for v in info.value.violations] == ["recipients"]
    # A server without the history port refuses `at` instead of answering for now.
    with pytest.raises(InvalidArgument):
        await ConsentAuthority(store).check("acme", WHO, "m", raw_ts(future - 7_200_000))
