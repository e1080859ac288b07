"""Wiring: settings -> store -> services -> server; health, reflection, signals, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from consent_client.v1 import admin_pb2, admin_pb2_grpc, consent_pb2, consent_pb2_grpc
from consent_server.api.admin import ConsentAdminService
from consent_server.api.auth import AuthInterceptor
from consent_server.api.consent_service import ConsentServicer
from consent_server.config import ConfigError, Settings, is_loopback
from consent_server.delivery.metrics import serve_metrics
from consent_server.delivery.receipts import WebhookCallbacks, whatsapp_status_handler
from consent_server.delivery.runner import build_worker
from consent_server.domain.auth import OPERATOR_TENANT, Role
from consent_server.domain.delivery import DeliveryAdmin
from consent_server.domain.edge import ConsentLinks
from consent_server.domain.errors import StoreUnavailable
from consent_server.domain.security import RateLimits, SecurityAuthority
from consent_server.domain.service import ConsentAuthority, Limits
from consent_server.http.server import HttpEdge
from consent_server.http.wiring import edge_app, keyring_for
from consent_server.store.connect import open_store
from consent_server.store.edge import RedisEdgeStore
from consent_server.store.health import probe
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

log = logging.getLogger("consent_server")

SERVICE_NAME = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["ConsentAdminService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Shared with bench/empty_server.py, whose ceiling is only fair with the same options.


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The grpc.aio server options (the bench's empty server uses the same)."""
    return [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.so_reuseport", 0),
    ]


async def _set_health(servicer: health_aio.HealthServicer, status: int) -> None:
    for name in ("", SERVICE_NAME):
        await servicer.set(name, status)


async def watch_store(
    store: RedisConsentStore, servicer: health_aio.HealthServicer, interval_s: float
) -> None:
    """Keep the health status in step with Redis reachability (NOT_SERVING while down)."""
    serving: bool | None = None
    while True:
        try:
            await asyncio.wait_for(probe(store.client), timeout=max(interval_s, 0.5))
            ok = True
        except (StoreUnavailable, TimeoutError):
            ok = False
        except Exception:  # whatever else a ping raises, the store is not serving us
            log.exception("store health check failed")
            ok = False
        if ok != serving:
            await _set_health(servicer, SERVING if ok else NOT_SERVING)
            if ok:
                log.info("store reachable: serving")
            else:
                log.error("store unreachable: health NOT_SERVING, calls fail with UNAVAILABLE")
            serving = ok
        await asyncio.sleep(interval_s)


async def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; return the process exit code."""
    # Handlers first: a SIGTERM that lands while we start up still means "drain and exit 0".
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.embedded:
        log.warning(
            "EMBEDDED STORE IN USE: consent data lives in this process's memory only and is "
            "LOST when it stops. NOT DURABLE - set CONSENT_REDIS_URL for production."
        )
    _warn_security(settings)
    store = open_store(
        settings.redis_url,
        cluster=settings.redis_cluster,
        timeout_s=settings.redis_timeout_s,
        min_replicas_ack=settings.redis_min_replicas_ack,
        ack_timeout_ms=settings.redis_ack_timeout_ms,
    )
    authority = ConsentAuthority(
        store, default_region=settings.default_region, limits=limits_of(settings)
    )
    security = SecurityAuthority(
        RedisSecurityStore(store.client, store.tombstones),
        store,
        limits=RateLimits(settings.rate_limit, settings.rate_burst),
        default_region=settings.default_region,
    )
    # The HTTP edge binds first, so that link URLs can name its real port.
    http_edge = bind_http_edge(settings)
    public_url = settings.public_url or (http_edge.local_url if http_edge else None)
    edge_store = RedisEdgeStore(store)
    links = ConsentLinks(
        authority,
        store,
        keyring_for(settings, edge_store),
        public_url,
        default_region=settings.default_region,
    )
    # Customers must be able to open a link sent in a confirmation: without an explicit
    # CONSENT_PUBLIC_URL, only a loopback listener (development) names its own address.
    if settings.public_url or (http_edge is not None and is_loopback(settings.http_listen_host)):
        authority.use_signed_links(links.resubscribe_url)
    consent_servicer = ConsentServicer(authority, links)
    delivery_repo = DeliveryRepository(store.client)

    server = grpc.aio.server(
        interceptors=[AuthInterceptor(security, required=settings.auth_required)],
        options=server_options(settings),
    )
    consent_pb2_grpc.add_ConsentServiceServicer_to_server(consent_servicer, server)
    admin_pb2_grpc.add_ConsentAdminServiceServicer_to_server(
        ConsentAdminService(
            authority,
            security,
            edge_store,
            public_url,
            DeliveryAdmin(delivery_repo),
        ),
        server,
    )
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, ADMIN_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    await _set_health(health_servicer, NOT_SERVING)
    bootstrap: asyncio.Task[bool] | None = None
    # Installed before serving, so the first call can already use it; while Redis is
    # down the server starts anyway (NOT_SERVING) and keeps trying in the background.
    if settings.bootstrap_admin_key and not await install_bootstrap_key(
        security, settings.bootstrap_admin_key, retry=False
    ):
        bootstrap = asyncio.create_task(
            install_bootstrap_key(security, settings.bootstrap_admin_key, retry=True)
        )
    reloader = CertificateReloader(settings) if settings.tls else None
    try:
        if reloader is not None:
            port = server.add_secure_port(settings.listen, server_credentials(reloader, settings))
        else:
            port = server.add_insecure_port(settings.listen)
    except RuntimeError:
        port = 0
    if port == 0 and not settings.listen.endswith(":0"):
        raise ConfigError(f"CONSENT_LISTEN={settings.listen!r}: cannot listen there (in use?)")
    serve_metrics(settings.metrics_listen)
    await server.start()
    host = settings.listen.rsplit(":", 1)[0]
    log.info(
        "consent authority serving",
        extra={
            "address": f"{host}:{port}",
            "store": "embedded" if settings.embedded else "redis",
            "auth": "required" if settings.auth_required else "optional",
            "tls": "mtls" if settings.tls_client_ca else ("tls" if settings.tls else "off"),
        },
    )
    # The inline worker starts once the server serves and stops after it drained.
    worker = build_worker(settings, store) if settings.delivery == "inline" else None
    if worker is not None:
        await worker.start()

    if http_edge is not None:
        await http_edge.start(
            edge_app(
                authority,
                links,
                edge_store,
                WebhookCallbacks(store, delivery_repo),
                on_status=whatsapp_status_handler(store, delivery_repo),
            ),
            settings.shutdown_grace_s,
        )
        log.info(
            "http edge serving",
            extra={
                "address": http_edge.local_url.removeprefix("http://"),
                "public_url": public_url,
            },
        )

    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    watcher = asyncio.create_task(watch_store(store, health_servicer, settings.health_interval_s))
    await stop.wait()

    log.info(
        "shutting down: draining in-flight calls", extra={"grace_s": settings.shutdown_grace_s}
    )
    deadline = loop.time() + settings.shutdown_grace_s
    for task in (watcher, bootstrap):
        if task is not None:
            await _cancel_quietly(task)
    await health_servicer.enter_graceful_shutdown()
    # HTTP and gRPC drain side by side, within one grace period: in-flight calls, webhooks
    # and clicks finish; WhatsApp redelivers anything refused meanwhile.
    await asyncio.gather(
        *([http_edge.stop()] if http_edge is not None else []),
        server.stop(settings.shutdown_grace_s),
    )
    if worker is not None:
        # Deliveries under way get what is left of the grace period; the rest stay
        # pending and another worker reclaims them.
        await worker.stop(max(0.0, deadline - loop.time()))
    with contextlib.suppress(Exception):  # closing connections must not fail the exit
        await store.aclose()
    log.info("stopped")
    return 0


async def _cancel_quietly(task: asyncio.Task[Any]) -> None:
    """Cancel a background task; whatever it raised is logged, never fails the shutdown."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("background task failed before shutdown")


def limits_of(settings: Settings) -> Limits:
    """The request limits the settings configure."""
    return Limits(
        max_batch=settings.max_batch,
        max_page_size=settings.max_page_size,
        max_evidence_bytes=settings.max_evidence_bytes,
        max_metadata_entries=settings.max_metadata_entries,
        max_metadata_value=settings.max_metadata_value,
    )


class CertificateReloader:
    """Serves the TLS files and re-reads them on SIGHUP, without dropping connections.

    gRPC asks :meth:`fetch` on each new handshake; it returns the new configuration
    once after a reload (None = keep the current one). Established connections keep
    the certificate they were made with. A reload that fails keeps the old files.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.initial = self._read()

    def _read(self) -> grpc.ServerCertificateConfiguration:
        s = self._settings
        assert s.tls_cert and s.tls_key
        # gRPC would only find a bad pair at the next handshake, failing every new
        # connection; the ssl module checks the key matches the certificate now.
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        check.load_cert_chain(s.tls_cert, s.tls_key)
        if s.tls_client_ca:
            check.load_verify_locations(s.tls_client_ca)
        with open(s.tls_key, "rb") as fh:
            key = fh.read()
        with open(s.tls_cert, "rb") as fh:
            cert = fh.read()
        client_ca = None
        if s.tls_client_ca:
            with open(s.tls_client_ca, "rb") as fh:
                client_ca = fh.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], client_ca)

    def reload(self) -> None:
        """Re-read the files (SIGHUP); new handshakes use them."""
        try:
            self._pending = self._read()
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.error(
                "TLS files not reloaded; keeping the current ones",
                extra={"error": type(exc).__name__},
            )
            return
        log.info("TLS certificates reloaded; new connections use them")

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's per-handshake question: a new configuration, or None."""
        pending, self._pending = self._pending, None
        return pending


def server_credentials(reloader: CertificateReloader, settings: Settings) -> grpc.ServerCredentials:
    """TLS credentials; with CONSENT_TLS_CLIENT_CA every client must present a certificate."""
    return grpc.dynamic_ssl_server_credentials(
        reloader.initial,
        reloader.fetch,  # type: ignore[arg-type]  # gRPC documents None as "no change"
        require_client_authentication=settings.tls_client_ca is not None,
    )


def _warn_security(settings: Settings) -> None:
    beyond = not is_loopback(settings.host)
    if not settings.auth_required:
        if beyond:
            log.warning(
                "serving WITHOUT authentication beyond loopback "
                "(CONSENT_REQUIRE_AUTH=0, CONSENT_ALLOW_INSECURE=1): anyone who reaches "
                "the port can read and change consent"
            )
    elif beyond and not settings.tls:
        log.warning(
            "authentication is on but TLS is off: API keys cross the network in clear text; "
            "set CONSENT_TLS_CERT/CONSENT_TLS_KEY unless a proxy terminates TLS"
        )
    if settings.auth_required and settings.embedded and not settings.bootstrap_admin_key:
        log.warning(
            "authentication is on with the embedded store and no CONSENT_BOOTSTRAP_ADMIN_KEY: "
            "no key exists, so every call will fail with UNAUTHENTICATED"
        )


async def install_bootstrap_key(security: SecurityAuthority, token: str, *, retry: bool) -> bool:
    """Install CONSENT_BOOTSTRAP_ADMIN_KEY as an operator admin key; False if Redis is down.

    With ``retry`` it keeps trying every second until Redis answers. An existing key of
    that id is never changed: a revoked bootstrap key stays revoked.
    """
    while True:
        try:
            outcome = await security.install_key(token, OPERATOR_TENANT, Role.ADMIN, "bootstrap")
        except StoreUnavailable:
            log.error("bootstrap API key not installed yet: store unreachable; retrying")
            if not retry:
                return False
            await asyncio.sleep(1)
            continue
        if outcome == "revoked":
            log.warning(
                "CONSENT_BOOTSTRAP_ADMIN_KEY names a revoked key: it stays revoked; "
                "unset the variable"
            )
        else:
            log.info("bootstrap operator key ready", extra={"key_id": token[3:19]})
        return True


def bind_http_edge(settings: Settings) -> HttpEdge | None:
    """The HTTP edge's bound socket when CONSENT_HTTP_LISTEN is set; ConfigError when unusable."""
    if not settings.http_listen:
        return None
    try:
        return HttpEdge(settings.http_listen)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"CONSENT_HTTP_LISTEN={settings.http_listen!r}: cannot listen there ({why})"
        ) from None
