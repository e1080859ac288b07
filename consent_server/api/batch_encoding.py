"""BatchCheckConsentResponse bytes built without a protobuf message per item.

A batch of 1,000 mostly holds recipients the default policy decides: one Decision
object shared by all of them (domain.decision). Such an item's bytes differ only by its
recipient, so per distinct (decision, channel, address length) the bytes before the
address are built once and every item is ``head + address + tail``. Items decided by a
record (each with its own time and revision) and per-item errors are encoded by
protobuf itself, one small message each. The result is exactly what
``BatchCheckConsentResponse.SerializeToString()`` gives for the same answers
(fields in number order, as protobuf writes them); tests/test_batch_lean.py checks
that byte for byte. The handler returns these bytes with no response serializer
(consent_service.add_to_server).
"""

from __future__ import annotations

from typing import Any

from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.model import Channel, Decision, Recipient
from consent_server.domain.service import BatchAnswers, BatchItemError

from . import convert as cv
from .errors import item_status


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, body: bytes) -> bytes:
    """A length-delimited field (tag byte already shifted: field << 3 | 2)."""
    return bytes((tag,)) + varint(len(body)) + body


def _split(decision: Decision, topic: str) -> tuple[bytes, bytes]:
    """A shared decision's CheckConsentResponse bytes before field 8 (recipient) and
    after it (topic, reason_code)."""
    full = pb.CheckConsentResponse()
    cv.fill_check_response(full, Recipient(Channel.SMS, "x"), topic, decision)
    full.ClearField("recipient")
    after = pb.CheckConsentResponse(topic=full.topic, reason_code=full.reason_code)
    full.ClearField("topic")
    full.ClearField("reason_code")
    return full.SerializeToString(), after.SerializeToString()


class _Shared:
    """Heads and tails of one batch's shared decisions (built once per batch)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.splits: dict[int, tuple[Decision, bytes, bytes]] = {}
        self.heads: dict[tuple[int, Channel, int], bytes] = {}

    def head(self, decision: Decision, channel: Channel, length: int) -> tuple[bytes, bytes]:
        key = (id(decision), channel, length)
        split = self.splits.get(key[0])
        if split is None:
            split = self.splits[key[0]] = (decision, *_split(decision, self.topic))
        head = self.heads.get(key)
        if head is None:
            # Recipient{channel=1 (varint), address=2}; the address bytes follow the head.
            rcpt_head = b"\x08" + varint(cv.channel_number(channel)) + b"\x12" + varint(length)
            rcpt_len = len(rcpt_head) + length
            inner_len = len(split[1]) + 1 + len(varint(rcpt_len)) + rcpt_len + len(split[2])
            result_len = 1 + len(varint(inner_len)) + inner_len
            head = self.heads[key] = (
                b"\x0a"
                + varint(result_len)
                + b"\x0a"
                + varint(inner_len)
                + split[1]
                + b"\x42"
                + varint(rcpt_len)
                + rcpt_head
            )
        return head, split[2]


def encode(answers: BatchAnswers, count: Any = None) -> bytes:
    """The serialized BatchCheckConsentResponse. ``count(decision, n)``: called once per
    distinct shared decision with how many items it answered, and once per other decided
    item with n=1 (the decision metrics)."""
    shared = _Shared(answers.topic)
    parts: list[bytes] = []
    append = parts.append
    counts: dict[int, list[Any]] = {}
    topic = answers.topic
    for rcpt, outcome in zip(answers.recipients, answers.outcomes, strict=True):
        if isinstance(outcome, BatchItemError):
            result = pb.BatchCheckConsentResult(error=item_status(outcome.violations))
            append(_field(0x0A, result.SerializeToString()))
            continue
        assert rcpt is not None
        channel, address = rcpt
        if outcome.record is None:
            data = address.encode()
            head, tail = shared.head(outcome, channel, len(data))
            append(head)
            append(data)
            append(tail)
            seen = counts.get(id(outcome))
            if seen is None:
                counts[id(outcome)] = [outcome, 1]
            else:
                seen[1] += 1
            continue
        decision = pb.CheckConsentResponse()
        cv.fill_check_response(decision, Recipient(channel, address), topic, outcome)
        append(_field(0x0A, _field(0x0A, decision.SerializeToString())))
        if count is not None:
            count(outcome, 1)
    if count is not None:
        for decision_, n in counts.values():
            count(decision_, n)
    return b"".join(parts)
