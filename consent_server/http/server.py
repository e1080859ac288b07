"""The HTTP edge on aiohttp, in the gRPC server's process and event loop.

Routes:
    GET  /whatsapp/<tenant_id>   WhatsApp verification handshake (echo hub.challenge)
    POST /whatsapp/<tenant_id>   WhatsApp notifications (X-Hub-Signature-256 checked)
    GET  /whatsapp               the app-level handshake (any tenant's verify token)
    POST /whatsapp               the app-level callback: each entry routed to the tenant
                                 that registered its phone_number_id
    GET  /u/<token>, /s/<token>  confirmation page (never changes anything)
    POST /u/<token>, /s/<token>  record the opt-out / opt-in; on /u also RFC 8058
                                 one-click (body ``List-Unsubscribe=One-Click``)
    GET  /l/<code>               a short link (for SMS): the same confirmation page as
                                 the signed link it stands for; unknown code -> 404
    POST /l/<code>               the same as POSTing that signed link; unknown codes
                                 are limited per client address (429 after 20/minute)
    POST /receipts/<tenant_id>   delivery receipts from the tenant's webhook provider
                                 (signed like our deliveries to it)
    GET  /healthz                 200 "ok" while the consent store answers, else 503

Status codes for WhatsApp: 200 once a well-formed, authentic notification was
processed (items we could not apply are kept as dead letters, not refused: a
redelivery would fail the same way); 400 not a JSON notification; 401 bad or missing
signature; 403 no entry is about one of the tenant's registered phone numbers; 404 no
webhook for that tenant (app-level: no tenant registered the numbers); 413 body over
1 MiB; 503 the consent store is unreachable. Every answer but 200 makes Meta
redeliver, and every item is idempotent. No input answers 500: domain refusals are
mapped here (WEBHOOK_STATUS), anything else is a bug with an incident id.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qs

from aiohttp import web
from aiohttp.typedefs import Middleware

from consent_server.delivery.receipts import CallbackRefused, WebhookCallbacks
from consent_server.domain import page_messages as pm
from consent_server.domain.errors import InvalidArgument, StoreUnavailable, TenantNotFound
from consent_server.domain.links import LinkClaims, LinkError, LinkExpired
from consent_server.domain.links_service import SHORT_PATH, ConsentLinks, ShortLinkNotFound
from consent_server.domain.model import Action
from consent_server.domain.whatsapp_edge import (
    WebhookBadRequest,
    WebhookNotBound,
    WebhookNotConfigured,
    WebhookRefused,
    WebhookSignatureInvalid,
    WebhookVerificationFailed,
    WhatsAppEdge,
)

from . import pages

log = logging.getLogger("consent_server.http")

MAX_BODY_BYTES = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_LINKS = web.AppKey("links", ConsentLinks)
_WHATSAPP = web.AppKey("whatsapp", WhatsAppEdge)
_CALLBACKS = web.AppKey("callbacks", WebhookCallbacks)
_STORE_UP: web.AppKey[Callable[[], bool]] = web.AppKey("store_up")


def _html(status: int, body: str) -> web.Response:
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        charset="utf-8",
        headers=pages.SECURITY_HEADERS,
    )


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain", charset="utf-8")


async def _read_body(request: web.Request) -> bytes:
    """The raw body, refused with 413 as soon as it passes MAX_BODY_BYTES.

    Content-Length is checked first; a chunked body is counted while it streams in,
    so an oversized upload is never buffered whole.
    """
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY_BYTES, actual_size=request.content_length
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


# -- WhatsApp ---------------------------------------------------------------------------

# The HTTP answer to each refusal of the WhatsApp use case.
WEBHOOK_STATUS: dict[type[WebhookRefused], int] = {
    WebhookBadRequest: 400,
    WebhookSignatureInvalid: 401,
    WebhookVerificationFailed: 403,
    WebhookNotBound: 403,
    WebhookNotConfigured: 404,
}


def _refused(exc: WebhookRefused) -> web.Response:
    return _text(WEBHOOK_STATUS.get(type(exc), 400), str(exc))


async def whatsapp_verify(request: web.Request) -> web.Response:
    """GET /whatsapp[/<tenant_id>]: Meta's subscription handshake."""
    edge = request.app[_WHATSAPP]
    q = request.query
    tenant = request.match_info.get("tenant_id")
    mode, token, challenge = (
        q.get("hub.mode", ""),
        q.get("hub.verify_token", ""),
        q.get("hub.challenge", ""),
    )
    try:
        if tenant is None:
            answer = await edge.app_handshake(mode, token, challenge)
        else:
            answer = await edge.handshake(tenant, mode, token, challenge)
    except WebhookRefused as exc:
        return _refused(exc)
    except StoreUnavailable:
        return _text(503, "consent store unavailable; retry later")
    log.info("whatsapp webhook verified", extra={"tenant": tenant or "(app-level)"})
    return _text(200, answer)


async def whatsapp_notify(request: web.Request) -> web.Response:
    """POST /whatsapp[/<tenant_id>]: a notification; see the module docstring for codes."""
    edge = request.app[_WHATSAPP]
    tenant = request.match_info.get("tenant_id")
    signature = request.headers.get("X-Hub-Signature-256")
    try:
        body = await _read_body(request)
        if tenant is None:
            await edge.receive_app(body, signature)
        else:
            await edge.receive(tenant, body, signature)
    except web.HTTPRequestEntityTooLarge:
        log.warning("whatsapp webhook body too large", extra={"tenant": tenant or ""})
        return _text(413, f"body larger than {MAX_BODY_BYTES} bytes")
    except WebhookRefused as exc:
        log.warning(
            "whatsapp webhook refused",
            extra={"tenant": tenant or "(app-level)", "why": type(exc).__name__},
        )
        return _refused(exc)
    except StoreUnavailable:
        log.error(
            "whatsapp webhook: consent store unreachable, answering 503",
            extra={"tenant": tenant or "(app-level)"},
        )
        return _text(503, "consent store unavailable; redeliver later")
    return _text(200, "OK")


# -- webhook-provider receipts -----------------------------------------------------------


async def provider_receipt(request: web.Request) -> web.Response:
    """POST /receipts/<tenant_id>: 200 applied (or safely ignored), 400 malformed, 401
    bad signature or stale timestamp, 404 no webhook provider, 413 too large, 503 retry."""
    tenant = request.match_info["tenant_id"]
    try:
        body = await _read_body(request)
        outcome = await request.app[_CALLBACKS].receive(
            tenant,
            body,
            request.headers.get("X-Consent-Timestamp"),
            request.headers.get("X-Consent-Signature"),
        )
    except web.HTTPRequestEntityTooLarge:
        return _text(413, f"body larger than {MAX_BODY_BYTES} bytes")
    except CallbackRefused as exc:
        log.warning(
            "provider receipt refused",
            extra={"tenant": tenant, "status": exc.status, "why": str(exc)},
        )
        return _text(exc.status, str(exc))
    except StoreUnavailable:
        return _text(503, "consent store unavailable; retry later")
    return _text(200, outcome.value)


# -- consent links ----------------------------------------------------------------------


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qs(body.decode("utf-8"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in pairs.items()}


def _link_action(request: web.Request) -> Action:
    return Action.OPT_OUT if request.match_info["kind"] == "u" else Action.OPT_IN


# Before a link is opened its tenant is unknown: its error pages may speak any
# language of the catalogue (English first).
_ANY_LANGUAGE = [pm.FALLBACK, *(t for t in pm.CATALOGUE if t != pm.FALLBACK)]


async def _context(request: web.Request, tenant_id: str | None) -> pages.PageContext:
    """The page's language (``?lang=``, then Accept-Language, then the tenant's default)
    and business name; the store being down only costs the tenant's choices."""
    business, supported = "", _ANY_LANGUAGE
    if tenant_id is not None:
        try:
            business, supported = await request.app[_LINKS].page_settings(tenant_id)
        except (StoreUnavailable, TenantNotFound):
            business = tenant_id
    lang = pm.negotiate(
        supported, request.headers.get("Accept-Language"), request.query.get("lang")
    )
    return pages.PageContext(lang=lang, business=business)


def _page(status: int, body: str, ctx: pages.PageContext) -> web.Response:
    response = _html(status, body)
    # A validated tag from the tenant's list (page_messages.negotiate), never request text.
    response.headers["Content-Language"] = pm.html_tag(ctx.lang)
    response.headers["Vary"] = "Accept-Language"
    return response


def _link_error(exc: Exception, ctx: pages.PageContext) -> web.Response:
    if isinstance(exc, ShortLinkNotFound):
        return _page(404, pages.catalogue_error(ctx, "not_found"), ctx)
    if isinstance(exc, LinkExpired):
        return _page(400, pages.catalogue_error(ctx, "expired"), ctx)
    if isinstance(exc, LinkError | InvalidArgument):
        return _page(400, pages.catalogue_error(ctx, "invalid"), ctx)
    if isinstance(exc, TenantNotFound):
        return _page(404, pages.catalogue_error(ctx, "gone"), ctx)
    if isinstance(exc, StoreUnavailable):
        return _page(503, pages.catalogue_error(ctx, "unavailable"), ctx)
    raise exc


async def link_page(request: web.Request) -> web.Response:
    """GET /u|s/<token>: the confirmation page. Changes nothing (scanners prefetch links)."""
    links = request.app[_LINKS]
    try:
        claims = await links.open(request.match_info["token"], _link_action(request))
    except (LinkError, StoreUnavailable, TenantNotFound) as exc:
        return _link_error(exc, await _context(request, None))
    ctx = await _context(request, claims.tenant_id)
    return _page(200, pages.confirm_page(claims, secrets.token_hex(16), ctx), ctx)


async def link_submit(request: web.Request) -> web.Response:
    """POST /u|s/<token>: record the change; RFC 8058 one-click on /u answers no page."""
    return await _submit(request, request.match_info["token"], _link_action(request))


async def _submit(request: web.Request, token: str, action: Action) -> web.Response:
    links = request.app[_LINKS]
    try:
        body = await _read_body(request)
    except web.HTTPRequestEntityTooLarge:
        return _text(413, "request too large")
    form = _form(body)
    one_click = form.get("List-Unsubscribe") == "One-Click" or (
        # RFC 8058 allows multipart/form-data too; its one field is all we need.
        request.content_type == "multipart/form-data"
        and b'name="List-Unsubscribe"' in body
        and b"One-Click" in body
    )
    try:
        if one_click:
            if action is not Action.OPT_OUT:
                raise InvalidArgument.single("List-Unsubscribe", "one-click only unsubscribes")
            await links.submit(token, action)
            log.info("one-click unsubscribe recorded")
            return _text(200, "unsubscribed")
        nonce = form.get("nonce", "")
        if not nonce:
            raise InvalidArgument.single("nonce", "the confirmation form was not submitted")
        claims, result = await links.submit(token, action, nonce)
    except (LinkError, StoreUnavailable, InvalidArgument, TenantNotFound) as exc:
        if one_click:
            status = (
                503
                if isinstance(exc, StoreUnavailable)
                else 404
                if isinstance(exc, TenantNotFound)
                else 400
            )
            return _text(status, "link not valid" if status == 400 else "try again later")
        return _link_error(exc, await _context(request, None))
    log.info(
        "consent link recorded",
        extra={
            "action": action.name,
            "changed": result.outcome.changed,
            "token_id": claims.token_id,
        },
    )
    ctx = await _context(request, claims.tenant_id)
    return _page(200, pages.done_page(claims, result.outcome.changed, ctx), ctx)


# -- short links -------------------------------------------------------------------------


class MissLimiter:
    """Counts unknown short codes per client address in fixed one-minute windows.

    Only misses count (a customer opening a live link is never slowed), so guessing
    codes is throttled without throttling everyone behind one proxy address. In the
    process's memory: each server process limits on its own, which bounds guessing
    all the same. Bounded: at most ``max_clients`` addresses are tracked per window.
    """

    def __init__(
        self,
        misses_per_minute: int = 20,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = misses_per_minute
        self._max = max_clients
        self._clock = clock
        self._window = -1
        self._misses: dict[str, int] = {}

    def _roll(self) -> None:
        window = int(self._clock() // 60)
        if window != self._window:
            self._window, self._misses = window, {}

    def blocked(self, client: str) -> bool:
        """True when ``client`` used up its misses in this window."""
        self._roll()
        return self._misses.get(client, 0) >= self._limit

    def miss(self, client: str) -> None:
        """Count one unknown code for ``client``."""
        self._roll()
        if client in self._misses or len(self._misses) < self._max:
            self._misses[client] = self._misses.get(client, 0) + 1


_SHORT_MISSES = web.AppKey("short_misses", MissLimiter)


def _client(request: web.Request) -> str:
    return request.remote or "?"


async def _open_short(request: web.Request) -> tuple[str, LinkClaims] | web.Response:
    """The token and claims behind the path's code, or the page to answer instead."""
    limiter = request.app[_SHORT_MISSES]
    client = _client(request)
    if limiter.blocked(client):
        ctx = await _context(request, None)
        response = _page(429, pages.catalogue_error(ctx, "too_many"), ctx)
        response.headers["Retry-After"] = "60"
        return response
    try:
        return await request.app[_LINKS].open_short(request.match_info["code"])
    except (LinkError, StoreUnavailable, TenantNotFound) as exc:
        if isinstance(exc, ShortLinkNotFound):
            limiter.miss(client)
        return _link_error(exc, await _context(request, None))


async def short_page(request: web.Request) -> web.Response:
    """GET /l/<code>: the same confirmation page as the signed link. Changes nothing."""
    opened = await _open_short(request)
    if isinstance(opened, web.Response):
        return opened
    _, claims = opened
    ctx = await _context(request, claims.tenant_id)
    return _page(200, pages.confirm_page(claims, secrets.token_hex(16), ctx), ctx)


async def short_submit(request: web.Request) -> web.Response:
    """POST /l/<code>: exactly the signed link's POST, for the action the code stands for."""
    opened = await _open_short(request)
    if isinstance(opened, web.Response):
        return opened
    token, claims = opened
    return await _submit(request, token, claims.action)


async def healthz(request: web.Request) -> web.Response:
    """200 "ok" while the consent store answers; 503 while it does not (the same state
    as gRPC health), so a load balancer stops sending webhooks and clicks we would
    answer 503 anyway."""
    if not request.app[_STORE_UP]():
        return _text(503, "consent store unavailable")
    return _text(200, "ok")


@web.middleware
async def _unexpected_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A bug answers 500 with an incident id; the log names the route, never the URL
    (link URLs carry tokens)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        incident = uuid.uuid4().hex[:12]
        route = request.match_info.route.resource
        log.error(
            "unexpected error in the HTTP edge",
            exc_info=exc,
            extra={"incident": incident, "route": route.canonical if route else "?"},
        )
        if request.path.startswith(("/whatsapp", "/receipts/")):
            return _text(500, f"internal error (incident {incident})")
        ctx = pages.PageContext(
            lang=pm.negotiate(
                _ANY_LANGUAGE, request.headers.get("Accept-Language"), request.query.get("lang")
            )
        )
        return _page(500, pages.catalogue_error(ctx, "error", incident=incident), ctx)


def _listening() -> bool:
    return True


def build_app(
    links: ConsentLinks,
    whatsapp: WhatsAppEdge,
    callbacks: WebhookCallbacks,
    *,
    store_up: Callable[[], bool] = _listening,
    middlewares: Sequence[Middleware] = (),  # outside the edge's own (tracing)
    short_misses: MissLimiter | None = None,
) -> web.Application:
    """The aiohttp application with every edge route. ``store_up`` is the store's
    health for ``/healthz`` (the server passes its health watcher's; an app built
    alone, in tests, reports only that it listens)."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[*middlewares, _unexpected_errors]
    )
    app[_STORE_UP] = store_up
    app[_LINKS] = links
    app[_WHATSAPP] = whatsapp
    app[_CALLBACKS] = callbacks
    app[_SHORT_MISSES] = short_misses if short_misses is not None else MissLimiter()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/whatsapp", whatsapp_verify)
    app.router.add_post("/whatsapp", whatsapp_notify)
    app.router.add_get("/whatsapp/{tenant_id}", whatsapp_verify)
    app.router.add_post("/whatsapp/{tenant_id}", whatsapp_notify)
    app.router.add_post("/receipts/{tenant_id}", provider_receipt)
    app.router.add_get(r"/{kind:[us]}/{token}", link_page)
    app.router.add_post(r"/{kind:[us]}/{token}", link_submit)
    # Any segment (aiohttp's default refuses braces): every mistyped code gets our page.
    app.router.add_get(f"/{SHORT_PATH}/{{code:[^/]+}}", short_page)
    app.router.add_post(f"/{SHORT_PATH}/{{code:[^/]+}}", short_submit)
    return app


class HttpEdge:
    """The edge's listening socket, bound early so that its URL is known, then served.

    Binding happens in the constructor (OSError when the address is unusable), so
    start-up can build the link URLs from the real port before serving anything.
    """

    def __init__(self, listen: str, *, reuse_port: bool = False) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:  # the server processes of one supervisor share the port
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._sock.bind((host, int(port)))
            self._sock.listen(128)
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise
        self.port = int(self._sock.getsockname()[1])
        url_host = f"[{host}]" if ":" in host else host
        self.local_url = f"http://{url_host}:{self.port}"
        self._runner: web.AppRunner | None = None

    async def start(self, app: web.Application, shutdown_timeout_s: float) -> None:
        """Serve ``app`` on the bound socket."""
        # access_log off: link URLs carry bearer tokens that must not land in logs.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout_s
        )
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the timeout), close."""
        if self._runner is not None:
            await self._runner.cleanup()
        self._sock.close()
