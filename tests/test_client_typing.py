"""Static typing of the client's results: this module is checked by ``mypy --strict`` in
``make lint`` (pyproject's ``[tool.mypy] files``), so a change that made
``item.decision`` optional again after ``if item.ok:`` fails the lint, not a user.

It imports only ``consent_client``, so mypy checks it without the test helpers; the
tests run the same narrowing code on real values.
"""

from __future__ import annotations

from consent_client import (
    AsyncConsentClient,
    BatchDecision,
    BatchError,
    BatchItem,
    ConsentClient,
    ConsentError,
    Decision,
    InvalidArgument,
)
from consent_client._calls import batch_check_consent
from consent_client.v1 import consent_pb2 as pb


def allowed_by_ok(items: list[BatchItem]) -> list[bool | str]:
    """``ok`` is the discriminator: no ``assert item.decision is not None`` needed."""
    out: list[bool | str] = []
    for item in items:
        if item.ok:
            out.append(item.decision.allowed)
        else:
            out.append(item.error.message)
    return out


def allowed_by_isinstance(items: list[BatchItem]) -> list[bool]:
    return [item.decision.allowed for item in items if isinstance(item, BatchDecision)]


def allowed_by_match(item: BatchItem) -> bool | ConsentError:
    match item:
        case BatchDecision(decision=decision):
            return decision.allowed
        case BatchError(error=error):
            return error


def typed_tenant_view(client: ConsentClient) -> Decision:
    """A view's methods keep their signatures minus ``tenant_id`` (checked, not run)."""
    acme = client.for_tenant("acme")
    return acme.check_consent("sms", "+15550100", "marketing", timeout=1.0)


async def typed_async_tenant_view(client: AsyncConsentClient) -> bool:
    acme = client.for_tenant("acme")
    items = await acme.batch_check_consent([("sms", "+15550100")], "marketing")
    return all(item.decision.allowed for item in items if item.ok)


def _parse(resp: pb.BatchCheckConsentResponse) -> list[BatchItem]:
    return batch_check_consent("t", [("sms", "+15550100")], "marketing").parse(resp)


def _response() -> pb.BatchCheckConsentResponse:
    resp = pb.BatchCheckConsentResponse()
    resp.results.add().decision.CopyFrom(
        pb.CheckConsentResponse(allowed=True, topic="marketing", revision=3)
    )
    bad = resp.results.add().error
    bad.code = 3  # INVALID_ARGUMENT
    bad.message = "not a possible phone number"
    resp.results.add().decision.CopyFrom(pb.CheckConsentResponse(allowed=False, topic="x"))
    return resp


def test_batch_items_narrow_on_ok() -> None:
    items = _parse(_response())
    assert [type(i) for i in items] == [BatchDecision, BatchError, BatchDecision]
    assert [i.index for i in items] == [0, 1, 2]
    assert allowed_by_ok(items) == [True, "not a possible phone number", False]
    assert allowed_by_isinstance(items) == [True, False]
    assert allowed_by_match(items[0]) is True
    assert isinstance(allowed_by_match(items[1]), InvalidArgument)


def test_each_kind_carries_only_its_half() -> None:
    items = _parse(_response())
    first, second = items[0], items[1]
    assert isinstance(first, BatchDecision) and isinstance(first.decision, Decision)
    assert first.ok is True and first.error is None
    assert isinstance(second, BatchError) and second.ok is False and second.decision is None
    assert isinstance(second.error, InvalidArgument)
