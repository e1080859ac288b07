"""The asyncio thin client (consent_client.AsyncConsentClient): the same behaviour as the
sync client, against the real server process and the in-process fake."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from consent_client import (
    AsyncConsentClient,
    ConsentStatus,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RecipientOptedOut,
    Scope,
    Source,
    Unavailable,
)

from .client_fake import (
    FAST,
    WA,
    FakeConsentService,
    fail,
    forward_then_unavailable,
    opted_out_info,
    restarting_server,
    sleep_then_forward,
    unavailable,
)
from .support import ServerProcess, free_port

SMS = "+1 202 555 0100"


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AsyncConsentClient]:
    async with AsyncConsentClient(server.target, timeout=10) as c:
        yield c


async def test_seed_scenario(client: AsyncConsentClient, tenant: str) -> None:
    assert (await client.send_if_allowed(tenant, "whatsapp", WA, "marketing", "20% off")).message_id
    out = await client.opt_out(tenant, "whatsapp", WA, source="button")
    assert out.applied and out.changed and out.status is ConsentStatus.OPTED_OUT

    decision = await client.check_consent(tenant, "whatsapp", WA, "marketing")
    assert not decision.allowed and decision.decided_by is Scope.ALL
    assert decision.source is Source.BUTTON

    with pytest.raises(RecipientOptedOut) as blocked:
        await client.send_if_allowed(tenant, "whatsapp", WA, "marketing", "20% off")
    assert blocked.value.scope is Scope.ALL and blocked.value.source is Source.BUTTON
    assert blocked.value.since is not None and blocked.value.topic == "marketing"

    back = await client.opt_in(tenant, "whatsapp", WA, source="keyword")
    assert back.changed and back.revision > out.revision
    assert (await client.send_if_allowed(tenant, "whatsapp", WA, "marketing", "hi")).message_id


async def test_errors_batch_and_paging(client: AsyncConsentClient, tenant: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        await client.check_consent(tenant, "sms", SMS, "Not A Topic!")
    assert "topic" in bad.value.fields
    with pytest.raises(NotFound):
        await client.get_message_status(tenant, "msg_nope")

    items = await client.batch_check_consent(tenant, [("sms", SMS), ("email", "nope")], "marketing")
    assert items[0].ok and not items[1].ok
    assert isinstance(items[1].error, InvalidArgument)
    assert items[1].error.fields == ["recipients[1].address"]

    ids = [(await client.opt_out(tenant, "sms", SMS, f"topic{i}")).event_id for i in range(5)]
    events = [e async for e in client.iter_consent_events(tenant, "sms", SMS, page_size=2)]
    assert [e.event_id for e in events] == ids[::-1]


async def test_inbound(client: AsyncConsentClient, tenant: str) -> None:
    result = await client.handle_inbound_message(
        tenant, "sms", SMS, text="STOP", provider_message_id="sm-1"
    )
    assert result.action.value == "opted_out" and result.matched_keyword == "stop"
    assert result.reply_message_id
    status = await client.get_message_status(tenant, result.reply_message_id)
    assert status.topic == "" and status.status.value == "accepted"


async def test_retried_opt_out_is_applied_once(
    proxy: FakeConsentService, client: AsyncConsentClient, tenant: str
) -> None:
    proxy.on("OptOut", forward_then_unavailable())
    async with AsyncConsentClient(proxy.target, backoff=FAST) as c:
        result = await c.opt_out(tenant, "sms", SMS)
    calls = proxy.seen("OptOut")
    assert len(calls) == 2 and calls[0].request.event_id == calls[1].request.event_id
    assert result.duplicate
    events = [e async for e in client.iter_consent_events(tenant, "sms", SMS)]
    assert [e.event_id for e in events] == [result.event_id]


async def test_retried_send_is_queued_once(proxy: FakeConsentService, tenant: str) -> None:
    proxy.on("SendIfAllowed", forward_then_unavailable())
    async with AsyncConsentClient(proxy.target, backoff=FAST) as c:
        result = await c.send_if_allowed(tenant, "sms", SMS, "otp", "1234")
    assert result.duplicate and len(proxy.seen("SendIfAllowed")) == 2


async def test_no_retry_on_failed_precondition(fake: FakeConsentService) -> None:
    fake.on("SendIfAllowed", fail(grpc.StatusCode.FAILED_PRECONDITION, "no", opted_out_info()))
    async with AsyncConsentClient(fake.target, backoff=FAST) as c:
        with pytest.raises(RecipientOptedOut) as blocked:
            await c.send_if_allowed("t", "whatsapp", WA, "marketing", "hi")
    assert blocked.value.source is Source.KEYWORD
    assert len(fake.seen("SendIfAllowed")) == 1


async def test_unavailable_retried_then_raised(fake: FakeConsentService) -> None:
    fake.on("GetMessageStatus", *[unavailable(retry_after=0.05)] * 2)
    async with AsyncConsentClient(fake.target, retries=1, backoff=FAST) as c:
        with pytest.raises(Unavailable) as down:
            await c.get_message_status("t", "m")
    assert down.value.retry_delay == pytest.approx(0.05)
    assert len(fake.seen("GetMessageStatus")) == 2


async def test_deadline_and_api_key(fake: FakeConsentService) -> None:
    fake.on("OptIn", sleep_then_forward(2.0))
    async with AsyncConsentClient(fake.target, api_key="k-1", timeout=0.3) as c:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await c.opt_in("t", "sms", SMS)
        assert time.monotonic() - start < 1.5
    assert len(fake.seen("OptIn")) == 1  # a write is not retried on DEADLINE_EXCEEDED
    assert fake.calls[0].metadata["authorization"] == "Bearer k-1"


async def test_unavailable_when_nothing_listens() -> None:
    async with AsyncConsentClient(
        f"127.0.0.1:{free_port()}", timeout=2, retries=1, backoff=FAST
    ) as c:
        with pytest.raises(Unavailable):
            await c.check_consent("t", "sms", SMS, "marketing")


async def test_tenant_settings_and_inbound(client: AsyncConsentClient, tenant: str) -> None:
    got = await client.get_tenant_settings(tenant)
    assert got.infer_opt_out_in_sentences and got.version == 0
    new = await client.update_tenant_settings(
        tenant, {"business_name": "Meal Box", "resubscribe_url": "https://meal.example/back"}
    )
    assert new.business_name == "Meal Box" and new.version == 1
    result = await client.handle_inbound_message(
        tenant, "whatsapp", WA, text="stop!", provider_message_id="wamid.async.1"
    )
    assert result.reply_text == (
        "You have been unsubscribed from Meal Box messages. "
        "Reply START or visit https://meal.example/back to subscribe again."
    )
    with pytest.raises(InvalidArgument) as err:
        await client.update_tenant_settings(tenant, {"resubscribeUrl": "ftp://nope"})
    assert err.value.fields == ["settings.resubscribe_url"]


# -- created outside a running loop -------------------------------------------------------


def test_created_outside_a_loop_and_used_across_runs(server: ServerProcess, tenant: str) -> None:
    # At import time there is no running loop; grpc.aio would bind a channel made here.
    client = AsyncConsentClient(server.target, timeout=10)

    async def check() -> bool:
        return (await client.check_consent(tenant, "sms", SMS, "marketing")).allowed

    assert asyncio.run(check())
    # A second asyncio.run is a new loop: the first loop's channel is replaced, not reused.
    assert asyncio.run(check())
    asyncio.run(client.close())
    asyncio.run(client.close())  # closing twice does nothing


def test_close_without_a_call_makes_no_channel() -> None:
    client = AsyncConsentClient(f"127.0.0.1:{free_port()}")
    asyncio.run(client.close())
    assert client._channel is None


async def test_closed_client_is_reopened_on_next_use(
    proxy: FakeConsentService, tenant: str
) -> None:
    client = AsyncConsentClient(proxy.target, timeout=10)
    assert (await client.check_consent(tenant, "sms", SMS, "marketing")).allowed
    await client.close()
    assert (await client.check_consent(tenant, "sms", SMS, "marketing")).allowed
    await client.close()
    assert len(proxy.seen("CheckConsent")) == 2


async def test_async_for_tenant(proxy: FakeConsentService, tenant: str) -> None:
    async with AsyncConsentClient(proxy.target, timeout=10) as client:
        acme = client.for_tenant(tenant)
        await acme.opt_out("sms", SMS, "marketing")
        assert not (await acme.check_consent("sms", SMS, "marketing")).allowed
        events = [e async for e in acme.iter_consent_events("sms", SMS)]
        assert len(events) == 1
    assert {s.request.tenant_id for s in proxy.calls} == {tenant}


async def test_a_read_retried_while_the_server_restarts_succeeds_once_it_is_back() -> None:
    with restarting_server() as (target, stop, backoff):
        async with AsyncConsentClient(target, backoff=backoff, retries=3) as c:
            assert (await c.check_consent("t", "sms", "+14155550100", "marketing")).allowed
            stop()
            assert (await c.check_consent("t", "sms", "+14155550100", "marketing")).allowed
