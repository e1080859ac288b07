"""Provider feedback ("this user opted out / blocked you") is one use case: a provider's
answer to a delivery and a later receipt record the same kind of opt-out, with one
evidence format within the evidence limit, and delivery reaches the store only
through the domain's ports."""

from __future__ import annotations

import ast
import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consent_server.delivery.feedback import provider_feedback
from consent_server.delivery.receipts import apply_receipt
from consent_server.delivery.worker import DeliveryWorker, WorkerOptions
from consent_server.domain.delivery import (
    ALL_CHANNELS,
    DeliveryAdmin,
    ProviderKind,
    RawProvider,
    ReceiptOutcome,
    ReceiptStatus,
)
from consent_server.domain.egress import EgressPolicy
from consent_server.domain.feedback import opt_out_scope
from consent_server.domain.model import Action, Channel, MessageState, Source
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import MAX_EVIDENCE_BYTES, RawRecipient
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore

from .fake_provider import FakeProvider, fake_provider
from .support import change_consent, send_text

TENANT = "acme"
PHONE = "+919876543210"
WA = RawRecipient(Channel.WHATSAPP, PHONE)
ROOT = Path(__file__).resolve().parents[1] / "consent_server"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with fake_provider() as f:
        yield f


async def _answered_and_delivered(store: RedisConsentStore, fake: FakeProvider) -> tuple[str, str]:
    """Send two messages through a worker: the first is answered 21610, the second
    delivered; (opted-out message id, delivered message id)."""
    await DeliveryAdmin(RedisProviderSettings(store.client), fake.policy).set_provider(
        TENANT,
        RawProvider(ALL_CHANNELS, ProviderKind.WEBHOOK, url=fake.url + "/h", secret="s" * 16),
    )
    outbox = DeliveryRepository(store.client)
    worker = DeliveryWorker(
        store,
        outbox,
        WorkerOptions(visibility_timeout_s=0.3, consumer="w"),
        providers=RedisProviderSettings(store.client),
        egress=fake.policy,
    )
    authority = ConsentAuthority(store)
    ids = []
    fake.answer((400, {"code": 21610, "message": "unsubscribed"}))
    for topic in ("marketing", "order_updates"):
        ids.append(await send_text(authority, TENANT, WA, topic, "hi"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await worker.run_once()
            st = await store.message_status(TENANT, ids[-1])
            if st is not None and st.state in (MessageState.FAILED, MessageState.DELIVERED):
                break
            await asyncio.sleep(0.02)
        # Opt back in, so the next one is sent.
        await change_consent(authority, Action.OPT_IN, TENANT, WA, evidence="back")
    await worker.stop(0)
    return ids[0], ids[1]


async def test_answer_and_receipt_opt_outs_share_one_evidence_format(
    store: RedisConsentStore, fake: FakeProvider
) -> None:
    answered, delivered = await _answered_and_delivered(store, fake)
    # A receipt for the delivered message, with the longest error a call-back may carry,
    # in a script whose characters take two bytes each.
    long_error = "é" * 500
    outcome = await apply_receipt(
        DeliveryRepository(store.client),
        provider_feedback(store),
        TENANT,
        ReceiptStatus.FAILED,
        message_id=delivered,
        error_code=21610,
        error=long_error,
        provider="webhook",
    )
    assert outcome is ReceiptOutcome.APPLIED
    history = await ConsentAuthority(store).history(TENANT, WA, 20, "")
    provider = [e for e in history.events if e.source is Source.PROVIDER]
    assert {e.event_id for e in provider} == {
        f"provider:{answered}",
        f"provider-receipt:{delivered}",
    }
    by_id = {e.event_id: e for e in provider}
    answer = by_id[f"provider:{answered}"]
    receipt = by_id[f"provider-receipt:{delivered}"]
    assert answer.evidence == f"webhook answer for message {answered}: webhook 400: error 21610"
    assert receipt.evidence.startswith(f"webhook receipt for message {delivered}: error 21610: é")
    for event in (answer, receipt):
        assert len(event.evidence.encode()) <= MAX_EVIDENCE_BYTES
        assert event.topic == "" and event.principal.startswith("delivery-")
    assert len(receipt.evidence.encode()) > MAX_EVIDENCE_BYTES - 2  # cut at the limit


def test_opt_out_meanings_live_in_one_place() -> None:
    assert opt_out_scope(131050) == "marketing"
    assert opt_out_scope(21610) == ""
    assert opt_out_scope(error_class="recipient_opted_out") == ""
    assert opt_out_scope(131026) is None and opt_out_scope() is None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("module", ["delivery/worker.py", "delivery/receipts.py"])
def test_delivery_use_cases_reach_the_store_only_through_domain_ports(module: str) -> None:
    store_imports = {m for m in _imports(ROOT / module) if m.startswith("consent_server.store")}
    assert store_imports == set()


def test_the_egress_guard_is_pure_policy_in_the_domain() -> None:
    forbidden = ("httpx", "httpcore", "socket", "grpc", "redis", "aiohttp")
    found = {m for m in _imports(ROOT / "domain/egress.py") if m.split(".")[0] in forbidden}
    assert found == set()
    assert EgressPolicy().rules == ()  # the default allows no internal destination
