"""What the scenarios send: one tenant, its recipients, requests, and the data seeded first.

Recipients are fictional US numbers (+1 415 555 01xx style, extended to millions of
distinct numbers) in E.164, so normalisation does real work but never fails.
Batches carry distinct recipients: BATCH_CYCLE (100,000) addresses in batches of
``size``, sent in turn, so that no cache sees one batch again before all the others;
the cold rows use addresses the server has never seen (COLD_BASE on, a new range each
round). Every SEED_EVERY-th cycled recipient carries a consent record (opted out of
marketing or of all topics), so reads return data, not just misses.
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


BATCH_CYCLE = 100_000  # distinct addresses the warm batch rows cycle through
SEED_EVERY = 10  # every 10th of them carries a record
COLD_BASE = 5_000_000  # cold rows' addresses start here (far from the cycle)


def batch_addresses(size: int, batch: int = 0, *, base: int = 1000) -> list[str]:
    """The ``batch``-th batch's recipients (offset so they never clash with CHECKED or
    SENT_TO)."""
    first = base + batch * size
    return [phone(first + i) for i in range(size)]


def batch_count(size: int, cycle: int = BATCH_CYCLE) -> int:
    """How many distinct batches of ``size`` cover at least ``cycle`` addresses."""
    return max(1, -(-cycle // size))


def batch_request(size: int, batch: int = 0, *, base: int = 1000) -> pb.BatchCheckConsentRequest:
    """One BatchCheckConsent of ``size`` recipients about TOPIC."""
    return pb.BatchCheckConsentRequest(
        tenant_id=TENANT,
        topic=TOPIC,
        recipients=[recipient(a) for a in batch_addresses(size, batch, base=base)],
    )


def batch_requests(size: int, count: int, *, base: int = 1000) -> list[bytes]:
    """``count`` serialized batches of distinct recipients, from address ``base`` on."""
    return [batch_request(size, n, base=base).SerializeToString() for n in range(count)]


def seed(target: str, batch_size: int, cycle: int = BATCH_CYCLE) -> None:
    """Record the opt-outs the scenarios read, through the real API (idempotent by event id).

    Every SEED_EVERY-th recipient of the batch cycle, alternately of TOPIC and of all
    topics; 64 calls in flight."""
    total = batch_count(batch_size, cycle) * batch_size
    changes = [(CHECKED, TOPIC)] + [
        (phone(1000 + i), TOPIC if (i // SEED_EVERY) % 2 else "")
        for i in range(0, total, SEED_EVERY)
    ]
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ConsentServiceStub(channel)
        for start in range(0, len(changes), 64):
            calls = [
                stub.OptOut.future(
                    pb.OptOutRequest(
                        tenant_id=TENANT,
                        recipient=recipient(address),
                        topic=topic,
                        event_id=f"bench-seed-{address}-{topic or 'all'}",
                    ),
                    timeout=30,
                )
                for address, topic in changes[start : start + 64]
            ]
            for call in calls:
                call.result()


def probe(target: str, method: str, request: Message) -> int:
    """Call once and return the response's gRPC frame size; raise if the call fails.

    Proves the request is answered OK before load is thrown at it, and gives the
    h2load generator the size by which it tells answers from (trailers-only) errors.
    """
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, None, None)  # bytes in, bytes out
        reply: bytes = call(request.SerializeToString(), timeout=10)
    return len(reply) + 5
