"""Provider answers -> results, and the HTTP behaviour (timeouts, unreachable hosts)
against a real local HTTP server."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from consent_server.delivery.providers import (
    Delivered,
    DeliveryMessage,
    OptedOut,
    PermanentFailure,
    TransientFailure,
    webhook,
    whatsapp_cloud,
)
from consent_server.delivery.providers.webhook import WebhookProvider
from consent_server.delivery.providers.whatsapp_cloud import WhatsAppCloudProvider
from consent_server.domain.delivery import ProviderConfig, ProviderKind

from .fake_provider import fake_provider
from .support import free_port

MSG = DeliveryMessage(
    message_id="m0a0000000000000000000000000000",
    tenant_id="acme",
    channel="whatsapp",
    address="+919876543210",
    topic="marketing",
    purpose="send",
    body={"kind": "text", "text": "hi"},
)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, '{"id": "abc"}', Delivered("abc")),
        (202, "accepted", Delivered("")),
        (204, "", Delivered("")),
        (409, '{"error": "recipient_opted_out"}', OptedOut("", "")),
        (200, '{"error": "recipient_opted_out"}', OptedOut("", "")),
        (400, '{"code": 21610}', OptedOut("", "")),
        (400, '{"error": {"code": "131050"}}', OptedOut("marketing", "")),
        (429, "slow down", TransientFailure("")),
        (408, "", TransientFailure("")),
        (503, "<html>busy</html>", TransientFailure("")),
        (400, '{"error": "bad"}', PermanentFailure("")),
        (401, "", PermanentFailure("")),
        (301, "", PermanentFailure("")),
    ],
)
def test_webhook_answers(status: int, body: str, expected: object) -> None:
    result = webhook.classify(status, body)
    assert type(result) is type(expected)
    if isinstance(expected, Delivered):
        assert result == expected
    if isinstance(expected, OptedOut):
        assert isinstance(result, OptedOut) and result.topic == expected.topic


@pytest.mark.parametrize(
    ("status", "body", "kind", "detail"),
    [
        (200, '{"messages": [{"id": "wamid.X"}]}', Delivered, "wamid.X"),
        (400, '{"error": {"code": 131050, "message": "stopped"}}', OptedOut, "marketing"),
        (400, '{"error": {"code": 21610}}', OptedOut, ""),
        (400, '{"error": {"code": 130429, "message": "rate limit"}}', TransientFailure, None),
        (500, '{"error": {"code": 131000}}', TransientFailure, None),
        (400, '{"error": {"code": 131026, "message": "undeliverable"}}', PermanentFailure, None),
        (401, '{"error": {"code": 190, "message": "token expired"}}', PermanentFailure, None),
        (502, "not json", TransientFailure, None),
    ],
)
def test_whatsapp_answers(status: int, body: str, kind: type, detail: str | None) -> None:
    result = whatsapp_cloud.classify(status, body)
    assert isinstance(result, kind)
    if isinstance(result, Delivered):
        assert result.provider_message_id == detail
    if isinstance(result, OptedOut):
        assert result.topic == detail


def test_whatsapp_refuses_what_it_cannot_send() -> None:
    payload = {"kind": "payload", "content_type": "a/b", "data": "AA=="}
    assert whatsapp_cloud.request_body(dataclasses.replace(MSG, body=payload)) is None


async def test_webhook_timeout_is_transient() -> None:
    with fake_provider() as fake:
        fake.hold.clear()  # never answers in time
        async with httpx.AsyncClient() as http:
            provider = WebhookProvider(
                ProviderConfig(ProviderKind.WEBHOOK, url=fake.url, secret="s" * 16, timeout_ms=200),
                http,
            )
            result = await provider.send(MSG)
        fake.hold.set()
    assert result == TransientFailure("webhook timed out")


async def test_unreachable_provider_is_transient() -> None:
    async with httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        hook = WebhookProvider(ProviderConfig(ProviderKind.WEBHOOK, url=url, secret="s" * 16), http)
        wa = WhatsAppCloudProvider(
            ProviderConfig(ProviderKind.WHATSAPP_CLOUD, url=url, secret="t", phone_number_id="1"),
            http,
        )
        assert isinstance(await hook.send(MSG), TransientFailure)
        assert isinstance(await wa.send(MSG), TransientFailure)


async def test_whatsapp_only_sends_whatsapp() -> None:
    async with httpx.AsyncClient() as http:
        wa = WhatsAppCloudProvider(
            ProviderConfig(
                ProviderKind.WHATSAPP_CLOUD,
                url="https://x.example",
                secret="t",
                phone_number_id="1",
            ),
            http,
        )
        sms = DeliveryMessage(
            **{**{f: getattr(MSG, f) for f in MSG.__dataclass_fields__}, "channel": "sms"}
        )
        result = await wa.send(sms)
    assert result == PermanentFailure("whatsapp_cloud cannot deliver sms messages")
