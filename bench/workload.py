"""What the scenarios send: one tenant, its recipients, requests, and the data seeded first.

Recipients are fictional US numbers (+1 415 555 01xx style, extended to 10,000
distinct numbers) in E.164, so normalisation does real work but never fails. A
third of the batch recipients carry consent records (opted out of marketing or of
all topics), so reads return data, not just misses.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import Message

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pb_grpc

TENANT = "bench"
TOPIC = "marketing"
SERVICE = "/consent.v1.ConsentService/"
CHECK = SERVICE + "CheckConsent"
SEND = SERVICE + "SendIfAllowed"
BATCH = SERVICE + "BatchCheckConsent"

# CheckConsent asks about a recipient who opted out (a full decision with a record);
# SendIfAllowed sends to one who never did (accepted, appended to the outbox).
CHECKED = "+14155550100"
SENT_TO = "+14155550101"


def phone(i: int) -> str:
    """The i-th bench recipient (distinct for i < 10,000,000)."""
    return f"+1415{5550000 + i:07d}"


def recipient(address: str) -> pb.Recipient:
    """An SMS recipient."""
    return pb.Recipient(channel=pb.CHANNEL_SMS, address=address)


def check_request() -> pb.CheckConsentRequest:
    """The CheckConsent request every call of the scenario sends."""
    return pb.CheckConsentRequest(tenant_id=TENANT, recipient=recipient(CHECKED), topic=TOPIC)


def send_request() -> pb.SendIfAllowedRequest:
    """The SendIfAllowed request: no idempotency key, so every call is a new message."""
    return pb.SendIfAllowedRequest(
        tenant_id=TENANT,
        recipient=recipient(SENT_TO),
        topic="order_updates",
        message=pb.Message(text="Your order #1042 is on its way."),
        metadata={"campaign": "bench"},
    )


def batch_addresses(size: int) -> list[str]:
    """The batch's recipients (offset so they never clash with CHECKED or SENT_TO)."""
    return [phone(1000 + i) for i in range(size)]


def batch_request(size: int) -> pb.BatchCheckConsentRequest:
    """One BatchCheckConsent of ``size`` recipients about TOPIC."""
    return pb.BatchCheckConsentRequest(
        tenant_id=TENANT, topic=TOPIC, recipients=[recipient(a) for a in batch_addresses(size)]
    )


def seed(target: str, batch_size: int) -> None:
    """Record the opt-outs the scenarios read, through the real API (idempotent by event id)."""
    changes = [(CHECKED, TOPIC)] + [
        (address, TOPIC if i % 2 else "")
        for i, address in enumerate(batch_addresses(batch_size))
        if i % 3 == 0
    ]
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ConsentServiceStub(channel)
        for address, topic in changes:
            stub.OptOut(
                pb.OptOutRequest(
                    tenant_id=TENANT,
                    recipient=recipient(address),
                    topic=topic,
                    event_id=f"bench-seed-{address}-{topic or 'all'}",
                ),
                timeout=10,
            )


def probe(target: str, method: str, request: Message) -> int:
    """Call once and return the response's gRPC frame size; raise if the call fails.

    Proves the request is answered OK before load is thrown at it, and gives the
    h2load generator the size by which it tells answers from (trailers-only) errors.
    """
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, None, None)  # bytes in, bytes out
        reply: bytes = call(request.SerializeToString(), timeout=10)
    return len(reply) + 5
