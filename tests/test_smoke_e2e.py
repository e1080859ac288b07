"""The seed scenario over gRPC against the real server process (embedded and real Redis)."""

from __future__ import annotations

import grpc
import pytest

from consent_client.v1 import consent_pb2 as pb

from .security_support import details as error_details


def test_seed_scenario(stub, tenant) -> None:
    wa = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="+91 98765 43210")
    send = pb.SendIfAllowedRequest(
        tenant_id=tenant, recipient=wa, topic="marketing", message=pb.Message(text="20% off today")
    )
    assert stub.SendIfAllowed(send).message_id

    out = stub.OptOut(pb.OptOutRequest(tenant_id=tenant, recipient=wa, source=pb.SOURCE_BUTTON))
    assert out.applied and out.changed and out.status == pb.CONSENT_STATUS_OPTED_OUT

    check = stub.CheckConsent(
        pb.CheckConsentRequest(tenant_id=tenant, recipient=wa, topic="marketing")
    )
    assert not check.allowed and check.decided_by == pb.SCOPE_ALL
    assert check.reason == "RECIPIENT_OPTED_OUT" and check.source == pb.SOURCE_BUTTON

    with pytest.raises(grpc.RpcError) as blocked:
        stub.SendIfAllowed(send)
    assert blocked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error_details(blocked.value)
    info = details["ErrorInfo"]
    assert info.reason == "RECIPIENT_OPTED_OUT" and info.domain == "consent.v1"
    assert info.metadata["scope"] == "ALL" and info.metadata["source"] == "SOURCE_BUTTON"
    assert info.metadata["topic"] == "marketing" and info.metadata["since"]
    assert (
        "+91987*****10" in blocked.value.details() and "9876543210" not in blocked.value.details()
    )

    back = stub.OptIn(pb.OptInRequest(tenant_id=tenant, recipient=wa, source=pb.SOURCE_KEYWORD))
    assert back.changed and back.revision > out.revision
    assert stub.SendIfAllowed(send).message_id


def test_reused_ids_for_different_requests_are_refused(stub, tenant) -> None:
    """A reused event_id / idempotency_key must not silently drop an opt-out or a message."""
    sms = pb.Recipient(channel=pb.CHANNEL_SMS, address="+1 415 555 0199")
    stub.OptIn(pb.OptInRequest(tenant_id=tenant, recipient=sms, event_id="evt-1"))
    with pytest.raises(grpc.RpcError) as err:
        stub.OptOut(pb.OptOutRequest(tenant_id=tenant, recipient=sms, event_id="evt-1"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    details = error_details(err.value)
    assert details["ErrorInfo"].reason == "EVENT_ID_REUSED"
    assert [v.field for v in details["BadRequest"].field_violations] == ["event_id"]
    events = stub.ListConsentEvents(pb.ListConsentEventsRequest(tenant_id=tenant, recipient=sms))
    assert len(events.events) == 1

    send = pb.SendIfAllowedRequest(
        tenant_id=tenant,
        recipient=sms,
        topic="orders",
        message=pb.Message(text="your order shipped"),
        idempotency_key="order-9",
    )
    first = stub.SendIfAllowed(send)
    assert stub.SendIfAllowed(send).message_id == first.message_id
    send.message.text = "a different message"
    with pytest.raises(grpc.RpcError) as err:
        stub.SendIfAllowed(send)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(err.value)["ErrorInfo"].reason == "IDEMPOTENCY_KEY_REUSED"
