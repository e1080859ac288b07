"""gRPC framing for load generators that speak raw HTTP/2 (h2load)."""

from __future__ import annotations

import struct

from google.protobuf.message import Message

GRPC_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", "application/grpc"),
    ("te", "trailers"),
)


def frame(payload: bytes) -> bytes:
    """One uncompressed gRPC message: flag byte 0, big-endian length, payload."""
    return struct.pack(">BI", 0, len(payload)) + payload


def serialize(message: Message) -> bytes:
    """A request message's wire bytes."""
    return message.SerializeToString()
