"""Point-in-time consent: was the recipient allowed at instant T? (CheckConsent ``at``)

A pure function over the recipient's history (what ListConsentEvents returns) and its
erasure tombstone records. The answer at T is the decision rule (domain.decision) over
each scope's record *as of T*: of the scope's events that occurred at or before T, the
one with the greatest (occurred_at, revision). That is exactly the record the store's
script would hold had it received only those events, in their recording order (it
applies an event when it is not older than the scope's record), so a late event (one
recorded after a newer one) counts from when the customer acted, as it does now.

Erasure: the history of an erased recipient is gone; what remains is the tombstone's
scope records (opt-outs dated at the erasure, source ERASURE). They answer for every
instant, also those before the erasure: the service no longer knows what held then,
and the conservative answer is the suppression. Events recorded after the erasure
compete with them as usual (only an opt-in dated after the erasure lifts it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .decision import decide, newer
from .model import ConsentEvent, ConsentRecord, Decision, Policy


@dataclass(frozen=True, slots=True)
class PointInTimeDecision:
    """The decision at an instant and the history event that decided (None when the
    default policy or a tombstone record decided)."""

    decision: Decision
    event: ConsentEvent | None


def record_of(event: ConsentEvent) -> ConsentRecord:
    """The scope record an event sets when it applies."""
    return ConsentRecord(
        status=event.action.status,
        occurred_at_ms=event.occurred_at_ms,
        revision=event.revision,
        source=event.source,
        event_id=event.event_id,
    )


def decide_at(
    events: Iterable[ConsentEvent],
    topic: str,
    at_ms: int,
    policy: Policy,
    *,
    tombstone: tuple[ConsentRecord | None, ConsentRecord | None] = (None, None),
) -> PointInTimeDecision:
    """Whether a message about ``topic`` was allowed at ``at_ms``.

    ``events``: the recipient's history (any order); ``tombstone``: its erasure
    tombstone's (topic, all-topics) records, None where it holds none. ``topic`` ""
    asks about the all-topics scope alone."""
    best: dict[str, ConsentEvent] = {}
    for e in events:
        if e.occurred_at_ms > at_ms or (e.topic != topic and e.topic != ""):
            continue
        held = best.get(e.topic)
        if held is None or (e.occurred_at_ms, e.revision) > (held.occurred_at_ms, held.revision):
            best[e.topic] = e
    topic_event = best.get(topic) if topic else None
    all_event = best.get("")
    topic_record = newer(record_of(topic_event) if topic_event else None, tombstone[0])
    all_record = newer(record_of(all_event) if all_event else None, tombstone[1])
    decision = decide(topic_record if topic else None, all_record, policy)
    deciding: ConsentEvent | None = None
    if decision.record is not None:
        for candidate in (topic_event, all_event):
            if candidate is not None and decision.record == record_of(candidate):
                deciding = candidate
                break
    return PointInTimeDecision(decision, deciding)
