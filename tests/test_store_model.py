"""A pure model and the store decide identically on random event sequences (opt-outs,
opt-ins, late and duplicate events, several topics), on fakeredis and real Redis."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_server.domain.decision import decide
from consent_server.domain.model import (
    Action,
    Channel,
    ConsentEventInput,
    ConsentRecord,
    Policy,
    Recipient,
    Source,
    Status,
)
from consent_server.store.repository import RedisConsentStore

PEOPLE = [Recipient(Channel.SMS, "+14155550100"), Recipient(Channel.EMAIL, "a@example.com")]
TOPICS = ["", "marketing", "news"]
_tenants = itertools.count()

event_st = st.tuples(
    st.integers(0, len(PEOPLE) - 1),
    st.sampled_from(TOPICS),
    st.sampled_from([Action.OPT_OUT, Action.OPT_IN]),
    st.integers(0, 20),  # occurred (hours): late events are common
    st.integers(0, 12),  # event id: small, so duplicates happen
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seq=st.lists(event_st, min_size=1, max_size=25))
async def test_the_store_decides_like_the_model(store: RedisConsentStore, seq: list[Any]) -> None:
    tenant = f"model{next(_tenants)}"
    # The model: per (recipient, scope) the record with the newest (occurred, revision);
    # per recipient a revision counting every non-duplicate event; an event id seen
    # before (same recipient) is a replay and changes nothing.
    records: dict[tuple[int, str], ConsentRecord] = {}
    revision = dict.fromkeys(range(len(PEOPLE)), 0)
    seen: dict[tuple[int, str], tuple[Action, str]] = {}
    for who, topic, action, hour, n in seq:
        event_id = f"e{n}"
        if (who, event_id) in seen:
            if seen[(who, event_id)] != (action, topic):
                action, topic = seen[(who, event_id)]  # replay the first change instead
            out = await store.record_event(
                ConsentEventInput(
                    tenant,
                    PEOPLE[who],
                    topic,
                    action,
                    Source.API,
                    "",
                    hour * 3_600_000,
                    event_id,
                    "k",
                )
            )
            assert out.duplicate
            continue
        seen[(who, event_id)] = (action, topic)
        revision[who] += 1
        occurred = hour * 3_600_000
        cur = records.get((who, topic))
        if cur is None or occurred >= cur.occurred_at_ms:
            status = Status.OPTED_OUT if action is Action.OPT_OUT else Status.OPTED_IN
            records[(who, topic)] = ConsentRecord(
                status, occurred, revision[who], Source.API, event_id
            )
        out = await store.record_event(
            ConsentEventInput(
                tenant, PEOPLE[who], topic, action, Source.API, "", occurred, event_id, "k"
            )
        )
        assert not out.duplicate and out.revision == revision[who]
    for topic in TOPICS[1:]:
        pairs = await store.read_records(tenant, PEOPLE, topic)
        for who, (topic_rec, all_rec) in enumerate(pairs):
            assert topic_rec == records.get((who, topic))
            assert all_rec == records.get((who, ""))
            for policy in Policy:
                assert decide(topic_rec, all_rec, policy) == decide(
                    records.get((who, topic)), records.get((who, "")), policy
                )
    for who, rcpt in enumerate(PEOPLE):
        page = await store.list_events(tenant, rcpt, 100, None)
        assert [e.revision for e in page.events] == list(range(revision[who], 0, -1))
