"""The decision rule as a pure function, checked exhaustively and by properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_server.domain.decision import decide, newer
from consent_server.domain.model import (
    BlockReason,
    ConsentRecord,
    Policy,
    Scope,
    Source,
    Status,
)


def rec(status: Status, occurred: int, revision: int) -> ConsentRecord:
    return ConsentRecord(status, occurred, revision, Source.API, f"e{revision}")


OUT, IN = Status.OPTED_OUT, Status.OPTED_IN


def test_no_record_uses_policy() -> None:
    allow = decide(None, None, Policy.ALLOW_UNLESS_OPTED_OUT)
    assert allow.allowed and allow.decided_by is Scope.DEFAULT_POLICY
    assert allow.status is Status.NO_RECORD and allow.block_reason is None
    deny = decide(None, None, Policy.REQUIRE_OPT_IN)
    assert not deny.allowed and deny.block_reason is BlockReason.OPT_IN_REQUIRED


def test_spec_examples() -> None:
    marketing_in = rec(IN, 100, 1)
    stop_all = rec(OUT, 200, 2)
    # STOP (ALL) after a marketing opt-in blocks marketing.
    d = decide(marketing_in, stop_all, Policy.ALLOW_UNLESS_OPTED_OUT)
    assert not d.allowed and d.decided_by is Scope.ALL
    assert d.block_reason is BlockReason.RECIPIENT_OPTED_OUT
    # A later opt-in to order_updates re-allows order updates only.
    orders_in = rec(IN, 300, 3)
    assert decide(orders_in, stop_all, Policy.ALLOW_UNLESS_OPTED_OUT).allowed
    assert not decide(marketing_in, stop_all, Policy.ALLOW_UNLESS_OPTED_OUT).allowed
    # START (ALL) later re-allows everything, even where the policy requires opt-in.
    start_all = rec(IN, 400, 4)
    assert decide(marketing_in, start_all, Policy.REQUIRE_OPT_IN).allowed
    assert decide(None, start_all, Policy.REQUIRE_OPT_IN).allowed
    # A topic opt-out after START blocks that topic only.
    promo_out = rec(OUT, 500, 5)
    assert not decide(promo_out, start_all, Policy.ALLOW_UNLESS_OPTED_OUT).allowed
    assert decide(None, start_all, Policy.ALLOW_UNLESS_OPTED_OUT).allowed


def test_equal_times_break_ties_by_revision() -> None:
    a, b = rec(OUT, 100, 7), rec(IN, 100, 8)
    assert newer(a, b) is b and newer(b, a) is b
    assert decide(a, b, Policy.ALLOW_UNLESS_OPTED_OUT).decided_by is Scope.ALL


@pytest.mark.parametrize(
    ("topic_status", "all_status", "policy"),
    list(itertools.product([None, IN, OUT], [None, IN, OUT], list(Policy))),
)
def test_exhaustive_small_table(
    topic_status: Status | None, all_status: Status | None, policy: Policy
) -> None:
    for t_occ, a_occ in itertools.product([1, 2], repeat=2):
        t = rec(topic_status, t_occ, 1) if topic_status else None
        a = rec(all_status, a_occ, 2) if all_status else None
        d = decide(t, a, policy)
        if t is None and a is None:
            assert d.allowed == (policy is Policy.ALLOW_UNLESS_OPTED_OUT)
            continue
        winner = max((r for r in (t, a) if r), key=lambda r: (r.occurred_at_ms, r.revision))
        assert d.allowed == (winner.status is IN)
        assert d.record is winner
        assert (d.block_reason is None) == d.allowed


records = st.builds(
    rec,
    st.sampled_from([IN, OUT]),
    st.integers(0, 10),
    st.integers(1, 1000),
)


@given(st.one_of(st.none(), records), st.one_of(st.none(), records), st.sampled_from(list(Policy)))
def test_properties(t: ConsentRecord | None, a: ConsentRecord | None, policy: Policy) -> None:
    d = decide(t, a, policy)
    # Allowed iff the deciding record is an opt-in; the policy only speaks without records.
    if d.record is not None:
        assert d.allowed == (d.record.status is IN)
        assert d.decided_by is (Scope.ALL if d.record is a else Scope.TOPIC)
    else:
        assert t is None and a is None
    # Symmetry: the newer record wins whichever slot it sits in.
    assert newer(t, a) == newer(a, t) or (
        t is not None
        and a is not None
        and (t.occurred_at_ms, t.revision) == (a.occurred_at_ms, a.revision)
    )
