"""The decision rule, as a pure function.

The same rule is implemented in Lua inside the send script (it must be atomic
with the enqueue); tests check both agree.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from .model import BlockReason, ConsentRecord, Decision, Policy, Scope, Status


class Dated(Protocol):
    """A record ordered by the rule: its event time, then its revision."""

    @property
    def occurred_at_ms(self) -> int: ...

    @property
    def revision(self) -> int: ...


R = TypeVar("R", bound=Dated)


def newer(a: R | None, b: R | None) -> R | None:
    """The newer of two records by (occurred_at, revision); None when both are None
    (a ConsentRecord, or an import's ScopeRecord: one rule for both)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if (a.occurred_at_ms, a.revision) > (b.occurred_at_ms, b.revision) else b


# With no record the decision depends on the policy alone; Decision is frozen, so one
# shared value per policy spares a large batch of mostly unknown recipients an object each.
_BY_POLICY = {
    policy: Decision(
        allowed=policy is Policy.ALLOW_UNLESS_OPTED_OUT,
        status=Status.NO_RECORD,
        decided_by=Scope.DEFAULT_POLICY,
        record=None,
        block_reason=None
        if policy is Policy.ALLOW_UNLESS_OPTED_OUT
        else BlockReason.OPT_IN_REQUIRED,
    )
    for policy in Policy
}


def decide(
    topic_record: ConsentRecord | None,
    all_record: ConsentRecord | None,
    policy: Policy,
) -> Decision:
    """Decide from the topic's record, the all-topics record and the default policy.

    The newer record decides: allowed iff it is an opt-in. With no record the
    policy decides. For the empty topic pass ``topic_record=None``.
    """
    winner = newer(topic_record, all_record)
    if winner is None:
        return _BY_POLICY[policy]
    allowed = winner.status is Status.OPTED_IN
    return Decision(
        allowed=allowed,
        status=winner.status,
        decided_by=Scope.ALL if winner is all_record else Scope.TOPIC,
        record=winner,
        block_reason=None if allowed else BlockReason.RECIPIENT_OPTED_OUT,
    )
