"""Fuzz: malformed input to the HTTP edge is a 4xx (or a 200 with dead letters where Meta
semantics want one), never a 500 with a traceback.

The webhook parser gets arbitrary JSON documents shaped like notifications (wrong
types at every level, 5,000-digit numbers, deep nesting, lone surrogates, giant
strings) and raw bytes; the aiohttp application gets the same bodies signed and
unsigned, and odd paths, queries and headers, on fakeredis in process.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_server.delivery.feedback import provider_feedback
from consent_server.delivery.receipts import WebhookCallbacks, whatsapp_status_handler
from consent_server.domain.links_service import ConsentLinks, static_keyring
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.whatsapp import WebhookBatch, WebhookMalformed, parse_webhook, sign
from consent_server.domain.whatsapp_edge import (
    WhatsAppEdge,
    WhatsAppWebhookConfig,
    inbound_use_case,
)
from consent_server.http.server import build_app
from consent_server.store.edge import RedisEdgeStore
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore

SECRET = "fuzz-app-secret"
NUMBER = "106540352242922"

ODD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "",
            "STOP",
            "stop promotions",
            "16505551234",
            "+16505551234",
            "9" * 5000,
            "\u00b2",  # a digit to str.isdigit(), not to int()
            "\u0661\u0667\u0664\u0669",
            "1749416383",
            "-1",
            "wamid.\ud800",
            "\x00\x1b[31m",
            "x" * 70_000,
            "failed",
            "marketing_messages",
            "stop",
            "resume",
            "text",
            "button",
            "interactive",
            "button_reply",
            NUMBER,
        ]
    ),
    st.text(max_size=40),
)
JSON = st.recursive(
    ODD_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)
KEYS = {
    "message": ["from", "id", "timestamp", "type", "text", "button", "interactive"],
    "status": ["id", "status", "timestamp", "recipient_id", "errors"],
    "pref": ["wa_id", "category", "value", "timestamp"],
}


def shaped(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """An item with the right keys and arbitrary values (and sometimes real ones)."""
    return st.fixed_dictionaries({}, optional={k: JSON for k in KEYS[kind]})


VALUE = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.one_of(JSON, st.just({"phone_number_id": NUMBER})),
        "messages": st.one_of(JSON, st.lists(st.one_of(shaped("message"), JSON), max_size=3)),
        "statuses": st.one_of(JSON, st.lists(st.one_of(shaped("status"), JSON), max_size=3)),
        "user_preferences": st.one_of(JSON, st.lists(shaped("pref"), max_size=3)),
    },
)
DOCUMENT = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "entry": st.one_of(
                JSON,
                st.lists(
                    st.one_of(
                        JSON,
                        st.fixed_dictionaries(
                            {
                                "changes": st.one_of(
                                    JSON,
                                    st.lists(
                                        st.one_of(
                                            JSON,
                                            st.fixed_dictionaries(
                                                {"field": JSON, "value": st.one_of(VALUE, JSON)}
                                            ),
                                        ),
                                        max_size=3,
                                    ),
                                )
                            }
                        ),
                    ),
                    max_size=3,
                ),
            )
        }
    ),
)


def encoded(doc: object) -> bytes:
    return json.dumps(doc).encode()


SPECIAL_BODIES = [
    b'{"entry": [{"changes": [{"value": {"messages": [{"timestamp": ' + b"9" * 5000 + b"}]}}]}]}",
    b'{"entry": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"entry": [' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]}",
    b"\xff\xfe\x00{",
    b'{"entry": [{"changes": [{"value": {"messages": [{"type": ["text"]}]}}]}]}',
    b'{"entry": [{"changes": [{"value": {"user_preferences": [{"value": ["stop"]}]}}]}]}',
    b'{"entry": [1e999999]}',
    b'"\\ud800"',
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(DOCUMENT.map(encoded), st.binary(max_size=300)))
def test_the_parser_never_raises_anything_but_malformed(body: bytes) -> None:
    try:
        batch = parse_webhook("acme", body)
    except WebhookMalformed:
        return
    assert isinstance(batch, WebhookBatch)
    for reply in batch.replies:
        assert 0 < len(reply.provider_message_id) <= 128
        assert reply.provider_message_id.isascii() and reply.provider_message_id.isprintable()
        reply.text.encode()  # no lone surrogates reach the store or the logs
    for item in batch.unapplied:
        item.raw.encode()
        assert len(item.raw) <= 16 * 1024


@pytest.mark.parametrize("body", SPECIAL_BODIES)
def test_special_bodies_are_malformed_or_parsed(body: bytes) -> None:
    with contextlib.suppress(WebhookMalformed):
        parse_webhook("acme", body)


@pytest.fixture
async def edge_http() -> AsyncIterator[httpx.AsyncClient]:
    store = RedisConsentStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
    authority = ConsentAuthority(store)
    edge_store = RedisEdgeStore(store)
    await edge_store.set_whatsapp_webhook("acme", WhatsAppWebhookConfig("vt", SECRET, (NUMBER,)))
    outbox = DeliveryRepository(store.client)
    edge = WhatsAppEdge(
        authority,
        edge_store,
        inbound_use_case(authority),
        whatsapp_status_handler(outbox, provider_feedback(store)),
    )
    links = ConsentLinks(authority, store, static_keyring((b"k" * 40,)), "https://c.example")
    server = TestServer(
        build_app(
            links,
            edge,
            WebhookCallbacks(outbox, RedisProviderSettings(store.client), provider_feedback(store)),
        )
    )
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url("")), timeout=30) as client:
            yield client
    finally:
        await server.close()
        await store.aclose()


async def _post_everywhere(http: httpx.AsyncClient, body: bytes) -> list[int]:
    codes = []
    for path in ("/whatsapp/acme", "/whatsapp"):
        for signature in (sign(SECRET, body), "sha256=" + "0" * 64, None):
            headers = {"X-Hub-Signature-256": signature} if signature else {}
            resp = await http.post(path, content=body, headers=headers)
            codes.append(resp.status_code)
    resp = await http.post(
        "/receipts/acme",
        content=body,
        headers={"X-Consent-Timestamp": "9" * 5000, "X-Consent-Signature": "v1=x"},
    )
    codes.append(resp.status_code)
    return codes


@pytest.mark.parametrize("body", SPECIAL_BODIES)
async def test_special_bodies_never_answer_500(
    edge_http: httpx.AsyncClient, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        codes = await _post_everywhere(edge_http, body)
    assert all(code < 500 for code in codes), codes
    assert "unexpected error" not in caplog.text


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=st.one_of(DOCUMENT.map(encoded), st.binary(max_size=200)))
async def test_fuzzed_notifications_never_answer_500(
    edge_http: httpx.AsyncClient, body: bytes
) -> None:
    codes = await _post_everywhere(edge_http, body)
    assert all(code < 500 for code in codes), codes


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    segment=st.text(max_size=300),
    query=st.dictionaries(
        st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge", "x"]),
        st.text(max_size=2000),
        max_size=4,
    ),
)
async def test_fuzzed_paths_and_queries_never_answer_500(
    edge_http: httpx.AsyncClient, segment: str, query: dict[str, str]
) -> None:
    for path in (f"/whatsapp/{segment}", "/whatsapp", f"/u/{segment}", f"/s/{segment}"):
        try:
            got = await edge_http.get(path, params=query)
            posted = await edge_http.post(path, content=segment.encode("utf-8", "replace"))
        except httpx.InvalidURL:
            continue  # not a URL any client can send
        assert got.status_code < 500 and posted.status_code < 500, path
