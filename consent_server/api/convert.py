"""Conversions between generated proto messages and domain values."""

from __future__ import annotations

import enum
from typing import Any, Protocol, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.model import (
    Action,
    Channel,
    ConsentEvent,
    Decision,
    InboundAction,
    MessageState,
    Recipient,
    Scope,
    Source,
    Status,
)
from consent_server.domain.validation import RawMessage, RawRecipient, RawTimestamp

from .errors import BLOCK_REASONS, reason_name

E = TypeVar("E", bound=enum.Enum)
V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)


class ProtoEnum(Protocol[V_co]):
    """A generated proto enum: its numbers by name."""

    def Value(self, name: str) -> V_co:
        """The number of the value called ``name``."""
        ...


def to_pb_by_name(members: type[E], proto: ProtoEnum[V], prefix: str) -> dict[E, V]:
    """Each domain member's wire number: the proto value named ``prefix`` + its name
    (a member the proto lacks fails at import, not on a call)."""
    return {m: proto.Value(prefix + m.name) for m in members}


_CHANNEL_TO_PB = to_pb_by_name(Channel, pb.Channel, "CHANNEL_")
# The domain channel of each wire number (unspecified and unknown numbers: absent).
CHANNEL_FROM_PB = {v: k for k, v in _CHANNEL_TO_PB.items()}
_SOURCE_TO_PB = to_pb_by_name(Source, pb.Source, "SOURCE_")
_SOURCE_FROM_PB: dict[int, Source] = {v: k for k, v in _SOURCE_TO_PB.items()}
_STATUS_TO_PB = to_pb_by_name(Status, pb.ConsentStatus, "CONSENT_STATUS_")
_SCOPE_TO_PB = to_pb_by_name(Scope, pb.Scope, "SCOPE_")
_ACTION_TO_PB = to_pb_by_name(Action, pb.ConsentAction, "CONSENT_ACTION_")
_INBOUND_TO_PB = to_pb_by_name(InboundAction, pb.InboundAction, "INBOUND_ACTION_")
_MESSAGE_STATE_TO_PB = to_pb_by_name(MessageState, pb.MessageStatus, "MESSAGE_STATUS_")


def raw_recipient(recipient: pb.Recipient) -> RawRecipient:
    """The wire recipient as plain values (unknown channel -> None)."""
    return RawRecipient(CHANNEL_FROM_PB.get(recipient.channel), recipient.address)


def raw_recipients(recipients: Any) -> list[tuple[Channel | None, str]]:
    """A batch's wire recipients as (channel or None when unknown, address) pairs."""
    get = CHANNEL_FROM_PB.get
    return [(get(r.channel), r.address) for r in recipients]


def channel_number(channel: Channel) -> int:
    """The channel's enum number on the wire."""
    return _CHANNEL_TO_PB[channel]


def optional_recipient(has: bool, recipient: pb.Recipient) -> RawRecipient | None:
    """None when the request did not set the recipient at all."""
    return RawRecipient(CHANNEL_FROM_PB.get(recipient.channel), recipient.address) if has else None


def source(value: int) -> Source | None:
    """SOURCE_UNSPECIFIED means API; unknown numbers are None (rejected)."""
    if value == pb.SOURCE_UNSPECIFIED:
        return Source.API
    return _SOURCE_FROM_PB.get(value)


def raw_timestamp(has: bool, ts: Timestamp) -> RawTimestamp | None:
    """None when unset."""
    return RawTimestamp(ts.seconds, ts.nanos) if has else None


def raw_message(has: bool, message: pb.Message) -> RawMessage | None:
    """The wire message as plain values."""
    if not has:
        return None
    kind = message.WhichOneof("content")
    size = message.ByteSize()
    if kind == "text":
        return RawMessage("text", text=message.text, serialized_size=size)
    if kind == "template":
        t = message.template
        return RawMessage(
            "template",
            template_name=t.name,
            template_language=t.language,
            template_parameters=tuple(t.parameters),
            serialized_size=size,
        )
    if kind == "payload":
        return RawMessage(
            "payload",
            content_type=message.payload.content_type,
            data=message.payload.data,
            serialized_size=size,
        )
    return RawMessage(None, serialized_size=size)


def timestamp(ms: int) -> Timestamp:
    """A proto Timestamp of Unix milliseconds."""
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def recipient(value: Recipient) -> pb.Recipient:
    """The normalised recipient on the wire."""
    return pb.Recipient(channel=_CHANNEL_TO_PB[value.channel], address=value.address)


def status(value: Status) -> pb.ConsentStatus.ValueType:
    """A domain status on the wire."""
    return _STATUS_TO_PB[value]


def inbound_action(value: InboundAction) -> pb.InboundAction.ValueType:
    """What an inbound message did, on the wire."""
    return _INBOUND_TO_PB[value]


def message_state(value: MessageState) -> pb.MessageStatus.ValueType:
    """A message state on the wire."""
    return _MESSAGE_STATE_TO_PB[value]


def check_response(rcpt: Recipient, topic: str, decision: Decision) -> pb.CheckConsentResponse:
    """A CheckConsentResponse for a decision."""
    resp = pb.CheckConsentResponse()
    fill_check_response(resp, rcpt, topic, decision)
    return resp


def fill_check_response(
    resp: pb.CheckConsentResponse, rcpt: Recipient, topic: str, decision: Decision
) -> None:
    """Set a decision's fields on ``resp`` in place (batches fill their items without copies)."""
    resp.allowed = decision.allowed
    resp.status = _STATUS_TO_PB[decision.status]
    resp.decided_by = _SCOPE_TO_PB[decision.decided_by]
    if decision.block_reason:
        resp.reason_code = BLOCK_REASONS[decision.block_reason]
        resp.reason = reason_name(resp.reason_code)
    resp.recipient.channel = _CHANNEL_TO_PB[rcpt.channel]
    resp.recipient.address = rcpt.address
    resp.topic = topic
    if decision.record is not None:
        ms = decision.record.occurred_at_ms
        resp.since.seconds = ms // 1000
        resp.since.nanos = (ms % 1000) * 1_000_000
        resp.source = _SOURCE_TO_PB[decision.record.source]
        resp.revision = decision.record.revision


def event(value: ConsentEvent) -> pb.ConsentEvent:
    """A history entry on the wire."""
    return pb.ConsentEvent(
        event_id=value.event_id,
        action=_ACTION_TO_PB[value.action],
        topic=value.topic,
        source=_SOURCE_TO_PB[value.source],
        evidence=value.evidence,
        occurred_at=timestamp(value.occurred_at_ms),
        recorded_at=timestamp(value.recorded_at_ms),
        applied=value.applied,
        revision=value.revision,
        principal=value.principal,
    )


def channel_to_pb(value: Channel) -> pb.Channel.ValueType:
    """A domain channel on the wire."""
    return _CHANNEL_TO_PB[value]


def action_to_pb(value: Action) -> pb.ConsentAction.ValueType:
    """A domain action on the wire."""
    return _ACTION_TO_PB[value]


def source_to_pb(value: Source) -> pb.Source.ValueType:
    """A domain source on the wire."""
    return _SOURCE_TO_PB[value]
