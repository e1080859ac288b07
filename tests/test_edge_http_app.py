"""The edge's aiohttp app in process (over a real socket): what a bug looks like."""

from __future__ import annotations

import logging

import fakeredis
import httpx
import pytest
from aiohttp.test_utils import TestServer

from consent_server.delivery.feedback import provider_feedback
from consent_server.delivery.receipts import WebhookCallbacks
from consent_server.domain.links import LinkCodec
from consent_server.domain.links_service import ConsentLinks
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.whatsapp_edge import WhatsAppEdge
from consent_server.http.server import build_app
from consent_server.http.wiring import log_status
from consent_server.store.edge import RedisEdgeStore
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore


async def test_a_bug_answers_500_with_an_incident_and_logs_no_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisConsentStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
    authority = ConsentAuthority(store)

    async def broken_keyring() -> LinkCodec:
        raise RuntimeError("bug")

    async def inbound(reply: object) -> None:
        return None

    links = ConsentLinks(authority, store, broken_keyring, "https://c.example")
    edge = WhatsAppEdge(authority, RedisEdgeStore(store), inbound, log_status)
    callbacks = WebhookCallbacks(
        DeliveryRepository(store.client),
        RedisProviderSettings(store.client),
        provider_feedback(store),
    )
    server = TestServer(build_app(links, edge, callbacks))
    await server.start_server()
    token = "gAAAAA" + "b" * 100
    try:
        with caplog.at_level(logging.ERROR):
            async with httpx.AsyncClient(base_url=str(server.make_url(""))) as http:
                resp = await http.get(f"/u/{token}")
        assert resp.status_code == 500 and "incident" in resp.text
        assert resp.headers["cache-control"] == "no-store"
        assert any("unexpected error" in r.message for r in caplog.records)
        assert token not in caplog.text
    finally:
        await server.close()
        await store.aclose()
