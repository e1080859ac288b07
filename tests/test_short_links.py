"""Short links (/l/<code>) and localised link pages through the real aiohttp app over a
socket, on fakeredis and on a real redis-server (the ``store`` fixture)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_server.delivery.feedback import provider_feedback
from consent_server.delivery.receipts import WebhookCallbacks
from consent_server.domain.links_service import SHORT_CODE_RE, ConsentLinks, static_keyring
from consent_server.domain.model import Channel, Recipient, Source
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawRecipient
from consent_server.domain.whatsapp_edge import WhatsAppEdge
from consent_server.http.server import MissLimiter, build_app
from consent_server.http.wiring import log_status
from consent_server.store import keys
from consent_server.store.edge import RedisEdgeStore
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

SECRET = b"s" * 40
PHONE = "+14155550123"
RCPT = RawRecipient(Channel.SMS, PHONE)


@dataclass
class Edge:
    store: RedisConsentStore
    authority: ConsentAuthority
    links: ConsentLinks
    http: httpx.AsyncClient

    async def allowed(self, tenant: str = "acme", topic: str = "marketing") -> bool:
        return (await self.authority.check(tenant, RCPT, topic)).decision.allowed

    async def history(self, tenant: str = "acme") -> list[str]:
        events = (await self.authority.history(tenant, RCPT, 0, "")).events
        return [e.evidence for e in events]


async def _edge(store: RedisConsentStore, limiter: MissLimiter | None) -> AsyncIterator[Edge]:
    authority = ConsentAuthority(store)
    edge_store = RedisEdgeStore(store)
    links = ConsentLinks(
        authority,
        store,
        static_keyring((SECRET,)),
        "https://c.example",
        short_links=edge_store,
    )

    async def inbound(reply: object) -> None:
        return None

    callbacks = WebhookCallbacks(
        DeliveryRepository(store.client),
        RedisProviderSettings(store.client),
        provider_feedback(store),
    )
    app = build_app(
        links,
        WhatsAppEdge(authority, edge_store, inbound, log_status),
        callbacks,
        short_misses=limiter,
    )
    server = TestServer(app)
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url(""))) as http:
            yield Edge(store, authority, links, http)
    finally:
        await server.close()


@pytest.fixture
async def edge(store: RedisConsentStore) -> AsyncIterator[Edge]:
    async for e in _edge(store, None):
        yield e


def _path(url: str) -> str:
    assert url.startswith("https://c.example/")
    return url.removeprefix("https://c.example")


def _nonce(html: str) -> str:
    m = re.search(r'name=nonce value="([0-9a-f]+)"', html)
    assert m, html
    return m.group(1)


async def test_short_link_round_trip(edge: Edge) -> None:
    made = await edge.links.create("acme", RCPT, "marketing", 0, short=True)
    code = made.short_opt_out_url.rsplit("/", 1)[1]
    assert made.short_opt_out_url == f"https://c.example/l/{code}"
    assert SHORT_CODE_RE.fullmatch(code) and len(made.short_opt_out_url) < 40
    assert len(made.opt_out_url) > 200  # why SMS wants the short one
    assert made.short_resubscribe_url != made.short_opt_out_url
    # Redis holds no readable address under the code, and it expires with the link.
    raw = await edge.store.client.get(keys.short_link(code))
    assert raw is not None and PHONE.encode() not in raw and b"4155550123" not in raw
    ttl = await edge.store.client.ttl(keys.short_link(code))
    lifetime = made.expires_at_s - made.issued_at_s
    assert lifetime - 5 <= ttl <= lifetime + 1  # valid through the expiry second

    # GET shows the confirmation page and changes nothing, however often (prefetchers).
    for _ in range(3):
        page = await edge.http.get(_path(made.short_opt_out_url))
        assert page.status_code == 200
        assert "Stop receiving" in page.text and "<button" in page.text
    assert await edge.allowed() and await edge.history() == []

    done = await edge.http.post(_path(made.short_opt_out_url), data={"nonce": _nonce(page.text)})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert not await edge.allowed()
    assert await edge.history() == [made.opt_out_token_id]  # evidence: the signed token
    events = (await edge.authority.history("acme", RCPT, 0, "")).events
    assert events[0].source is Source.LINK

    # The other code stands for the re-subscribe link only.
    page = await edge.http.get(_path(made.short_resubscribe_url))
    assert "Subscribe again" in page.text
    await edge.http.post(_path(made.short_resubscribe_url), data={"nonce": _nonce(page.text)})
    assert await edge.allowed()


async def test_one_click_unsubscribe_works_on_a_short_opt_out_link(edge: Edge) -> None:
    made = await edge.links.create("acme", RCPT, "", 0, short=True)
    resp = await edge.http.post(
        _path(made.short_opt_out_url), content=b"List-Unsubscribe=One-Click"
    )
    assert resp.status_code == 200 and not await edge.allowed()
    refused = await edge.http.post(
        _path(made.short_resubscribe_url), content=b"List-Unsubscribe=One-Click"
    )
    assert refused.status_code == 400 and not await edge.allowed()


async def test_unknown_and_malformed_codes_are_one_friendly_404(edge: Edge) -> None:
    pages = []
    for code in ("AAAAAAAAAAAA", "short", "x" * 500, "%3Cscript%3E"):
        resp = await edge.http.get(f"/l/{code}", headers={"Accept-Language": "es"})
        assert resp.status_code == 404
        assert resp.headers["cache-control"] == "no-store"
        assert "Enlace no encontrado" in resp.text and '<html lang="es">' in resp.text
        assert "script>" not in resp.text and code not in resp.text
        pages.append(resp.text)
        post = await edge.http.post(f"/l/{code}", data={"nonce": "ab" * 8})
        assert post.status_code == 404
    assert len(set(pages)) == 1  # the same page whatever the reason: nothing leaks
    assert await edge.history() == []


async def test_an_expired_short_link_is_gone(edge: Edge) -> None:
    made = await edge.links.create("acme", RCPT, "", 1, short=True)
    assert (await edge.http.get(_path(made.short_opt_out_url))).status_code == 200
    await asyncio.sleep(2.2)
    resp = await edge.http.get(_path(made.short_opt_out_url))
    assert resp.status_code == 404 and "Link not found" in resp.text
    assert await edge.store.client.get(keys.short_link(made.short_opt_out_url[-12:])) is None


async def test_a_code_acts_only_for_its_own_tenant(edge: Edge) -> None:
    made = await edge.links.create("acme", RCPT, "", 0, short=True)
    page = await edge.http.get(_path(made.short_opt_out_url))
    await edge.http.post(_path(made.short_opt_out_url), data={"nonce": _nonce(page.text)})
    assert not await edge.allowed("acme")
    assert await edge.allowed("globex") and await edge.history("globex") == []

    # A code whose stored tenant is not the token's (a bug or a tampered store) is
    # refused: the token decides who is acted for, and both must agree.
    token = made.opt_out_url.rsplit("/", 1)[1]
    forged = "ForgedCode12"
    await edge.store.client.set(keys.short_link(forged), json.dumps(["globex", token]))
    resp = await edge.http.get(f"/l/{forged}")
    assert resp.status_code == 404
    # And a real code of another tenant's link is no key into this one's index.
    other = await edge.links.create("globex", RCPT, "", 0, short=True)
    raw = await edge.store.client.get(keys.short_link(other.short_opt_out_url[-12:]))
    assert json.loads(raw)[0] == "globex"


async def test_erasure_voids_short_links_and_none_are_made_afterwards(edge: Edge) -> None:
    made = await edge.links.create("acme", RCPT, "", 0, short=True)
    rcpt = Recipient(Channel.SMS, PHONE)
    await RedisSecurityStore(edge.store.client, edge.store.tombstones).forget(
        "acme", rcpt, "er_test", "test"
    )
    for url in (made.short_opt_out_url, made.short_resubscribe_url):
        resp = await edge.http.get(_path(url))
        assert resp.status_code == 404 and "4155550123" not in resp.text
        post = await edge.http.post(_path(url), data={"nonce": "ab" * 8})
        assert post.status_code == 404
    base = keys.recipient_base("acme", rcpt)
    assert [k async for k in edge.store.client.scan_iter(match=base + "*")] == []

    again = await edge.links.create("acme", RCPT, "", 0, short=True)
    assert again.short_opt_out_url == again.short_resubscribe_url == ""
    assert again.opt_out_url  # the signed links are stateless, as before
    assert [k async for k in edge.store.client.scan_iter(match=base + "*")] == []


async def test_guessing_codes_is_limited_per_client(store: RedisConsentStore) -> None:
    async for edge in _edge(store, MissLimiter(3)):
        made = await edge.links.create("acme", RCPT, "", 0, short=True)
        assert (await edge.http.get(_path(made.short_opt_out_url))).status_code == 200
        for i in range(3):
            assert (await edge.http.get(f"/l/Guess{i:07d}")).status_code == 404
        blocked = await edge.http.get("/l/Guess9999999")
        assert blocked.status_code == 429 and blocked.headers["retry-after"] == "60"
        assert "Too many attempts" in blocked.text


def test_the_miss_limiter_windows_and_bounds() -> None:
    now = [0.0]
    limiter = MissLimiter(2, max_clients=2, clock=lambda: now[0])
    limiter.miss("a")
    limiter.miss("a")
    assert limiter.blocked("a") and not limiter.blocked("b")
    limiter.miss("b")
    limiter.miss("c")  # over max_clients: not tracked, memory stays bounded
    limiter.miss("c")
    assert not limiter.blocked("c")
    now[0] = 61.0
    assert not limiter.blocked("a")  # a new window


async def test_pages_speak_the_tenants_languages_and_name(edge: Edge) -> None:
    settings = await edge.store.fresh_tenant_settings("acme")
    await edge.store.put_tenant_settings(
        "acme",
        dataclasses.replace(
            settings, business_name="Acme <Foods> & Co", page_languages=("en", "es", "pt-br")
        ),
    )
    made = await edge.links.create("acme", RCPT, "marketing", 0, short=True)
    path = _path(made.opt_out_url)

    async def get(url: str, accept: str | None = None) -> httpx.Response:
        headers = {"Accept-Language": accept} if accept else {}
        resp = await edge.http.get(url, headers=headers)
        assert resp.status_code == 200
        return resp

    spanish = await get(path, "es-MX,es;q=0.9,en;q=0.5")
    assert '<html lang="es">' in spanish.text and spanish.headers["content-language"] == "es"
    assert "¿Dejar de recibir" in spanish.text and "Darme de baja" in spanish.text
    assert "Acme &lt;Foods&gt; &amp; Co" in spanish.text and "<Foods>" not in spanish.text
    brazil = await get(_path(made.short_opt_out_url), "pt-BR")
    assert '<html lang="pt-BR">' in brazil.text and "Cancelar inscrição" in brazil.text
    assert brazil.headers["content-language"] == "pt-BR"
    # ?lang= wins; one the tenant does not offer falls back to its default (the first).
    assert '<html lang="pt-BR">' in (await get(path + "?lang=pt", "es")).text
    assert '<html lang="en">' in (await get(path + "?lang=de", "fr")).text
    injected = await get(path + '?lang="><script>', 'x"><script>')
    assert "<script>" not in injected.text and '<html lang="en">' in injected.text
    # The POST answers in the same language (the form posts back to the same URL).
    page = await get(path + "?lang=es")
    done = await edge.http.post(path + "?lang=es", data={"nonce": _nonce(page.text)})
    assert "Se ha dado de baja" in done.text and '<html lang="es">' in done.text


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    code=st.text(min_size=1, max_size=40).filter(lambda c: "/" not in c and c not in (".", "..")),
    # Printable ASCII: aiohttp's own parser refuses control characters in headers.
    accept=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    lang=st.text(max_size=20),
)
async def test_fuzzed_codes_and_languages_never_answer_500_or_echo(
    edge: Edge, code: str, accept: str, lang: str
) -> None:
    headers = {"Accept-Language": accept.strip()} if accept.strip() else {}
    for method in ("GET", "POST"):
        resp = await edge.http.request(
            method, f"/l/{quote(code, safe='')}", params={"lang": lang}, headers=headers
        )
        assert resp.status_code in (404, 429), resp.status_code
        (tag,) = re.findall(r'<html lang="([^"]*)">', resp.text)
        assert tag in ("en", "es", "pt", "fr", "de")
        assert resp.headers["content-language"] == tag
    assert await edge.history() == []
