"""The lean BatchCheckConsent path agrees with the reference on random records.

- store: read_batch (plain pipelined HMGETs on real Redis; the script read on fakeredis)
  against read_records (read_states.lua), on random state hashes and erasure tombstones;
- domain: batch_decide against batch_check, with invalid items (unknown channel, bad
  address) mixed in: same order, same decisions, same per-item errors;
- api: batch_encoding.encode against BatchCheckConsentResponse.SerializeToString() of
  the reference message, byte for byte (hypothesis).
"""

from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pb_grpc
from consent_server.api import batch_encoding
from consent_server.api import convert as cv
from consent_server.api.errors import item_status
from consent_server.domain.decision import decide
from consent_server.domain.model import (
    Action,
    Channel,
    ConsentEventInput,
    ConsentRecord,
    Decision,
    Policy,
    Recipient,
    Source,
    Status,
)
from consent_server.domain.service import BatchAnswers, BatchItemError, ConsentAuthority
from consent_server.domain.validation import FieldViolation, RawRecipient
from consent_server.store import keys
from consent_server.store.repository import RedisConsentStore
from consent_server.store.tombstones import TombstoneNames

TOPICS = ["marketing", "billing"]


def _record(rng: random.Random) -> str:
    status = rng.choice(["in", "out"])
    source = rng.choice([s.value for s in Source])
    return f"{status}|{rng.randrange(1, 50)}|{rng.randrange(0, 4)}|{source}|e{rng.randrange(99)}"


async def _seed(store: RedisConsentStore, tenant: str, rng: random.Random) -> list[Recipient]:
    """Random recipients: about half get random opt-out/opt-in events through the write
    script (their records in the compact layout's buckets), a third erasure tombstones
    written directly (round-1 record form, as forget.lua writes them)."""
    secret = await store.tombstones.secret(tenant)
    out = []
    for n in range(rng.randrange(1, 60)):
        channel = rng.choice([Channel.SMS, Channel.WHATSAPP, Channel.EMAIL])
        address = f"u{n}@example.com" if channel is Channel.EMAIL else f"+1415555{n:04d}"
        rcpt = Recipient(channel, address)
        tomb = keys.tombstone(tenant, rcpt, TombstoneNames.digest(secret, rcpt))
        await store.client.delete(tomb)
        if rng.random() < 0.33:
            for scope in ["*", *TOPICS]:
                if rng.random() < 0.5:
                    await store.client.hset(tomb, f"s:{scope}", _record(rng))
        if rng.random() < 0.5:
            for _ in range(rng.randrange(1, 4)):
                topic = rng.choice(["", *TOPICS])
                action = rng.choice([Action.OPT_OUT, Action.OPT_IN])
                await store.record_event(
                    ConsentEventInput(
                        tenant,
                        rcpt,
                        topic,
                        action,
                        Source.API,
                        "",
                        rng.randrange(1, 100),
                        f"ev{rng.randrange(10**9)}",
                        "k",
                    )
                )
        out.append(rcpt)
    return out


async def test_read_batch_agrees_with_the_script_read(
    store: RedisConsentStore, tenant: str
) -> None:
    rng = random.Random(11)
    for _ in range(25):
        recipients = await _seed(store, tenant, rng)
        recipients += rng.sample(recipients, min(5, len(recipients)))  # repeats too
        for topic in ["", *TOPICS]:
            want = await store.read_records(tenant, recipients, topic)
            got = await store.read_batch(
                tenant, [(r.channel, r.address) for r in recipients], topic
            )
            assert got == [None if p == (None, None) else p for p in want]


async def test_batch_decide_agrees_with_batch_check(store: RedisConsentStore, tenant: str) -> None:
    authority = ConsentAuthority(store)
    rng = random.Random(5)
    for _ in range(15):
        recipients = await _seed(store, tenant, rng)
        raws: list[tuple[Channel | None, str]] = [(r.channel, r.address) for r in recipients]
        for _ in range(rng.randrange(0, 4)):  # invalid items keep their per-item errors
            bad = rng.choice([(None, "+14155550000"), (Channel.SMS, "abc"), (Channel.EMAIL, "x")])
            raws.insert(rng.randrange(len(raws) + 1), bad)
        # A spelling that normalises to a seeded recipient.
        raws.append((Channel.SMS, "+1 (415) 555-0000"))
        topic = rng.choice(TOPICS)
        want = await authority.batch_check(tenant, topic, [RawRecipient(c, a) for c, a in raws])
        got = await authority.batch_decide(tenant, topic, raws)
        assert got.topic == topic
        assert len(got.outcomes) == len(want)
        for rcpt, outcome, ref in zip(got.recipients, got.outcomes, want, strict=True):
            if isinstance(ref, BatchItemError):
                assert outcome == ref and rcpt is None
            else:
                assert outcome == ref.decision
                assert rcpt == (ref.recipient.channel, ref.recipient.address)


def _reference_bytes(answers: BatchAnswers) -> bytes:
    """What the reference servicer code builds for the same answers."""
    out = pb.BatchCheckConsentResponse()
    for rcpt, outcome in zip(answers.recipients, answers.outcomes, strict=True):
        if isinstance(outcome, BatchItemError):
            out.results.add(error=item_status(outcome.violations))
        else:
            assert rcpt is not None
            d = out.results.add().decision
            cv.fill_check_response(d, Recipient(*rcpt), answers.topic, outcome)
    return out.SerializeToString()


_records = st.builds(
    ConsentRecord,
    status=st.sampled_from([Status.OPTED_IN, Status.OPTED_OUT]),
    occurred_at_ms=st.integers(0, 2**41),
    revision=st.integers(0, 2**40),
    source=st.sampled_from(list(Source)),
    event_id=st.text(max_size=20),
)
_decisions = st.one_of(
    st.sampled_from([decide(None, None, p) for p in Policy]),
    st.builds(decide, st.none() | _records, st.none() | _records, st.sampled_from(list(Policy))),
)
_addresses = st.text(min_size=1, max_size=300)  # lengths past one varint byte too


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(list(Channel)), _addresses, _decisions),
            st.builds(
                lambda m: (None, "", BatchItemError([FieldViolation("recipients[0]", m)])),
                st.text(max_size=40),
            ),
        ),
        max_size=30,
    ),
    st.sampled_from(["marketing", "a" * 64]),
)
def test_encoding_is_protobufs_byte_for_byte(
    items: list[tuple[Channel | None, str, Decision | BatchItemError]], topic: str
) -> None:
    answers = BatchAnswers(
        topic,
        [None if c is None else (c, a) for c, a, _ in items],
        [o for _, _, o in items],
    )
    counted: list[tuple[Decision, int]] = []
    assert batch_encoding.encode(answers, lambda d, n: counted.append((d, n))) == (
        _reference_bytes(answers)
    )
    decided = [o for o in answers.outcomes if not isinstance(o, BatchItemError)]
    assert sum(n for _, n in counted) == len(decided)


def test_served_over_grpc_errors_and_point_in_time_keep_their_contract(
    stub: pb_grpc.ConsentServiceStub, tenant: str
) -> None:
    """Through the real server: the bytes path answers a parseable response, bad items
    as per-item errors, and a bad request (with or without ``at``) fails as a whole."""
    rcpts = [
        pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550123"),
        pb.Recipient(channel=pb.CHANNEL_UNSPECIFIED, address="+14155550124"),
        pb.Recipient(channel=pb.CHANNEL_SMS, address="not a number"),
    ]
    reply = stub.BatchCheckConsent(
        pb.BatchCheckConsentRequest(tenant_id=tenant, topic="marketing", recipients=rcpts)
    )
    assert [r.WhichOneof("result") for r in reply.results] == ["decision", "error", "error"]
    assert reply.results[0].decision.recipient.address == "+14155550123"
    assert reply.results[0].decision.allowed
    for at in (None, Timestamp(seconds=1_700_000_000)):
        request = pb.BatchCheckConsentRequest(tenant_id=tenant, topic="", recipients=rcpts)
        if at is not None:
            request.at.CopyFrom(at)
        with pytest.raises(grpc.RpcError) as err:
            stub.BatchCheckConsent(request)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    request = pb.BatchCheckConsentRequest(tenant_id=tenant, topic="marketing", recipients=rcpts)
    request.at.CopyFrom(Timestamp(seconds=1_700_000_000))
    at_reply = stub.BatchCheckConsent(request)
    assert [r.WhichOneof("result") for r in at_reply.results] == ["decision", "error", "error"]
