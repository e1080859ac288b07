"""Configured limits against a server process: oversized requests change nothing."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc

from .security_support import bad_fields, failure
from .support import ServerProcess

pytestmark = pytest.mark.xdist_group("security-limits")

T = "t-limits"
WHO = pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550123")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """This module's server process, with small limits (conftest's ``stub`` talks to it)."""
    proc = ServerProcess(
        {
            "CONSENT_MAX_REQUEST_BYTES": "65536",
            "CONSENT_MAX_BATCH": "50",
            "CONSENT_MAX_PAGE_SIZE": "10",
            "CONSENT_MAX_EVIDENCE_BYTES": "100",
            "CONSENT_MAX_METADATA_ENTRIES": "2",
            "CONSENT_MAX_METADATA_VALUE": "16",
            "CONSENT_MAX_CONCURRENT_STREAMS": "4",
            "CONSENT_TENANTS": T,
        }
    ).start()
    yield proc
    proc.stop()


def nothing_recorded(stub: consent_pb2_grpc.ConsentServiceStub) -> None:
    events = stub.ListConsentEvents(pb.ListConsentEventsRequest(tenant_id=T, recipient=WHO))
    assert list(events.events) == []
    check = stub.CheckConsent(pb.CheckConsentRequest(tenant_id=T, recipient=WHO, topic="marketing"))
    assert check.status == pb.CONSENT_STATUS_NO_RECORD


def fields(err: grpc.RpcError) -> list[str]:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    return bad_fields(err)


def test_a_request_over_the_size_limit_is_refused_unread(stub) -> None:  # type: ignore[no-untyped-def]
    huge = pb.OptOutRequest(tenant_id=T, recipient=WHO, evidence="x" * 70_000)
    err = failure(stub.OptOut, huge, None)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    nothing_recorded(stub)


def test_evidence_over_the_configured_limit(stub) -> None:  # type: ignore[no-untyped-def]
    req = pb.OptOutRequest(tenant_id=T, recipient=WHO, evidence="é" * 51)  # 102 bytes
    assert fields(failure(stub.OptOut, req, None)) == ["evidence"]
    nothing_recorded(stub)
    ok = pb.OptOutRequest(tenant_id=T, recipient=WHO, evidence="e" * 100, event_id="lim-1")
    assert stub.OptOut(ok).applied
    stub.OptIn(pb.OptInRequest(tenant_id=T, recipient=WHO, evidence="x" * 100))


def test_batch_over_the_configured_limit(stub) -> None:  # type: ignore[no-untyped-def]
    many = [pb.Recipient(channel=pb.CHANNEL_SMS, address=f"+1415555{i:04d}") for i in range(51)]
    req = pb.BatchCheckConsentRequest(tenant_id=T, recipients=many, topic="marketing")
    assert fields(failure(stub.BatchCheckConsent, req, None)) == ["recipients"]
    assert (
        len(
            stub.BatchCheckConsent(
                pb.BatchCheckConsentRequest(tenant_id=T, recipients=many[:50], topic="m")
            ).results
        )
        == 50
    )


def test_page_size_over_the_configured_limit(stub) -> None:  # type: ignore[no-untyped-def]
    req = pb.ListConsentEventsRequest(tenant_id=T, recipient=WHO, page_size=11)
    assert fields(failure(stub.ListConsentEvents, req, None)) == ["page_size"]
    stub.ListConsentEvents(pb.ListConsentEventsRequest(tenant_id=T, recipient=WHO, page_size=10))


def test_metadata_over_the_configured_limits(stub) -> None:  # type: ignore[no-untyped-def]
    other = pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550124")

    def send(meta: dict[str, str]) -> pb.SendIfAllowedRequest:
        return pb.SendIfAllowedRequest(
            tenant_id=T,
            recipient=other,
            topic="orders",
            message=pb.Message(text="hi"),
            metadata=meta,
        )

    assert fields(failure(stub.SendIfAllowed, send({"a": "1", "b": "2", "c": "3"}), None)) == [
        "metadata"
    ]
    assert fields(failure(stub.SendIfAllowed, send({"a": "x" * 17}), None)) == ["metadata['a']"]
    assert stub.SendIfAllowed(send({"a": "x" * 16, "b": ""})).message_id


def test_concurrent_streams_are_capped_per_connection(server: ServerProcess) -> None:
    """Four open streams on one connection use the whole allowance; a fifth call waits."""
    req = pb.CheckConsentRequest(tenant_id=T, recipient=WHO, topic="marketing")
    with grpc.insecure_channel(server.target) as ch:
        reflect = reflection_pb2_grpc.ServerReflectionStub(ch)
        queues: list[queue.Queue[reflection_pb2.ServerReflectionRequest | None]] = [
            queue.Queue() for _ in range(4)
        ]

        def requests(
            q: queue.Queue[reflection_pb2.ServerReflectionRequest | None],
        ) -> Iterator[reflection_pb2.ServerReflectionRequest]:
            while (item := q.get()) is not None:
                yield item

        streams = [reflect.ServerReflectionInfo(requests(q)) for q in queues]
        for q, stream in zip(queues, streams, strict=True):
            q.put(reflection_pb2.ServerReflectionRequest(list_services=""))
            next(stream)  # the stream is open on the server
        stub = consent_pb2_grpc.ConsentServiceStub(ch)
        err = failure(stub.CheckConsent, req, None, wait_for_ready=False)
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        for q in queues:
            q.put(None)
        for stream in streams:
            list(stream)
        assert stub.CheckConsent(req, timeout=5).recipient.address == WHO.address
