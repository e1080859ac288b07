"""The composition root: settings -> store -> use cases -> servicers -> listeners.

:func:`build` wires everything and binds the listening sockets without starting
anything; :func:`run` starts the listeners, the health watcher and the inline worker,
and drains them gracefully once told to stop; :func:`serve` (the process) installs the
SIGTERM/SIGINT handlers first and runs the two. Each step is a small named function, so
that a new piece of wiring has an obvious home.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio  # = health.aio, which the stubs omit
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from consent_client.v1 import admin_pb2, admin_pb2_grpc, consent_pb2
from consent_server import tracing
from consent_server.api.admin import ConsentAdminService
from consent_server.api.admin_deployment import DeploymentHandlers
from consent_server.api.admin_security import SecurityHandlers
from consent_server.api.admin_service import TenantSettingsHandlers
from consent_server.api.admin_tenants import TenantHandlers
from consent_server.api.auth import AuthInterceptor, TenantLookup
from consent_server.api.bulk_service import BulkHandlers
from consent_server.api.change_webhooks_service import ChangeWebhookHandlers
from consent_server.api.consent_service import ConsentServicer
from consent_server.api.consent_service import add_to_server as add_consent_service
from consent_server.api.delivery_admin_service import DeliveryProviderHandlers
from consent_server.api.edge_admin_service import WhatsAppWebhookHandlers
from consent_server.api.rpc_metrics import MetricsInterceptor
from consent_server.config import ConfigError, Settings, TlsSettings, is_loopback
from consent_server.delivery.runner import (
    DeliveryServices,
    build_worker,
    consent_store,
    delivery_services,
    start_metrics,
    warn_if_only_log_provider,
)
from consent_server.delivery.worker import DeliveryWorker
from consent_server.domain.auth import OPERATOR_TENANT, Role
from consent_server.domain.bulk import BulkConsent
from consent_server.domain.change_webhooks import ChangeWebhookAdmin
from consent_server.domain.errors import StoreUnavailable
from consent_server.domain.feed import ChangeFeed
from consent_server.domain.links_service import ConsentLinks
from consent_server.domain.ports import DeploymentProbe
from consent_server.domain.security import RateLimits, SecurityAuthority
from consent_server.domain.service import ConsentAuthority, Limits
from consent_server.domain.tenants import TenantRegistry
from consent_server.domain.whatsapp_edge import WhatsAppEdge
from consent_server.http.server import HttpEdge
from consent_server.http.wiring import edge_app, keyring_for, whatsapp_edge
from consent_server.metrics import READINESS, STORE_PROBE, STORE_UP, count_inbound
from consent_server.store import keys
from consent_server.store.bulk import RedisBulkStore
from consent_server.store.change_webhooks import RedisChangeWebhooks
from consent_server.store.connect import redis_address
from consent_server.store.durability import StoreDurabilityProbe, durability_problems
from consent_server.store.edge import RedisEdgeStore
from consent_server.store.feed import RedisChangeFeed
from consent_server.store.health import failure_cause, probe
from consent_server.store.history import RedisConsentHistory
from consent_server.store.repository import RedisConsentStore
from consent_server.store.schema import SchemaMismatch, check_schema
from consent_server.store.security import RedisSecurityStore
from consent_server.tenant_bootstrap import ensure_tenants, tenant_registry

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
        ("grpc.max_receive_message_length", settings.limits.max_request_bytes),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", settings.limits.max_concurrent_streams),
        # grpc core's "overload protection" (on by default) counts streams the server has
        # not yet released, not the open HTTP/2 streams the client counts, so a client
        # that keeps within the announced limit still had calls refused (REFUSED_STREAM ->
        # UNAVAILABLE) in bursts. Off, the announced limit is the one enforced and extra
        # calls wait on the client; what it protected against (handlers of streams reset
        # at once piling up, "rapid reset") is bounded by maximum_concurrent_rpcs.
        ("grpc.http.overload_protection", 0),
        # Several processes share the port only on purpose (CONSENT_PROCESSES > 1, under
        # the supervisor); otherwise a second server on the port fails to start.
        ("grpc.so_reuseport", 1 if settings.processes > 1 else 0),
    ]


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the server is made of, wired and bound, nothing started yet.

    :func:`build` makes it from the settings; :func:`run` starts it and drains it. Tests
    build one on the embedded store and call the servicers or the bound port directly.
    """

    settings: Settings
    store: RedisConsentStore
    authority: ConsentAuthority
    security: SecurityAuthority
    edge_store: RedisEdgeStore
    links: ConsentLinks
    delivery: DeliveryServices  # provider admin, webhook call-backs, WhatsApp statuses
    whatsapp: WhatsAppEdge  # the WhatsApp webhook use case (HTTP edge, dead-letter replay)
    public_url: str | None  # the base URL of consent links and webhook URLs, if any
    consent: ConsentServicer
    admin: ConsentAdminService
    health: health_aio.HealthServicer
    server: grpc.aio.Server  # servicers added, port bound, not started
    port: int  # the bound gRPC port (the real one when CONSENT_LISTEN ends in :0)
    reloader: CertificateReloader | None  # None without TLS
    http_edge: HttpEdge | None  # socket bound, not served; None without CONSENT_HTTP_LISTEN
    worker: DeliveryWorker | None  # None unless CONSENT_DELIVERY=inline


async def serve(settings: Settings, on_serving: Callable[[], None] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; return the process exit code.

    ``on_serving`` (a process under the supervisor) is called once it serves.
    """
    # Handlers first: a SIGTERM that lands while we start up still means "drain and exit 0".
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await run(build(settings), stop, on_serving)


def build(settings: Settings) -> Services:
    """Wire the store, use cases, servicers, HTTP edge and worker; start nothing.

    Listening sockets are bound (ConfigError when an address is unusable), so that link
    URLs and tests know the real ports.
    """
    warn_at_start(settings)
    store = consent_store(settings)
    authority = ConsentAuthority(
        store,
        default_region=settings.server.default_region,
        limits=limits_of(settings),
        history=RedisConsentHistory(store.client, store.tombstones),
        on_inbound=count_inbound,
    )
    bulk = BulkConsent(
        store,
        RedisBulkStore(store.client, store.tombstones),
        default_region=settings.server.default_region,
    )
    security = SecurityAuthority(
        RedisSecurityStore(store.client, store.tombstones),
        store,
        limits=RateLimits(settings.auth.rate_limit, settings.auth.rate_burst),
        default_region=settings.server.default_region,
    )
    # The HTTP edge binds first, so that link URLs can name its real port.
    http_edge = bind_http_edge(settings)
    public_url = settings.edge.public_url or (http_edge.local_url if http_edge else None)
    edge_store = RedisEdgeStore(store)
    links = consent_links(settings, authority, store, edge_store, public_url)
    delivery = delivery_services(settings, store)
    # One WhatsApp use case: the HTTP edge serves it, the admin service replays its
    # dead letters through it.
    whatsapp = whatsapp_edge(authority, edge_store, on_status=delivery.on_status)
    consent = ConsentServicer(authority, links, ChangeFeed(RedisChangeFeed(store.client)))
    admin = admin_servicer(
        authority,
        security,
        edge_store,
        public_url,
        delivery,
        whatsapp,
        tenant_registry(store),
        bulk,
        StoreDurabilityProbe(
            store.client, embedded=settings.redis.embedded, cluster=settings.redis.cluster
        ),
        ChangeWebhookAdmin(
            RedisChangeWebhooks(store.client),
            RedisChangeFeed(store.client),
            settings.delivery.egress_allow,
        ),
    )
    health = health_aio.HealthServicer()
    server = grpc_server(settings, security, consent, admin, health, store.tenant_lookup)
    reloader = CertificateReloader(settings.tls) if settings.tls.enabled else None
    return Services(
        settings=settings,
        store=store,
        authority=authority,
        security=security,
        edge_store=edge_store,
        links=links,
        delivery=delivery,
        whatsapp=whatsapp,
        public_url=public_url,
        consent=consent,
        admin=admin,
        health=health,
        server=server,
        port=bind_grpc(server, settings, reloader),
        reloader=reloader,
        http_edge=http_edge,
        worker=build_worker(settings, store) if settings.delivery.mode == "inline" else None,
    )


def consent_links(
    settings: Settings,
    authority: ConsentAuthority,
    store: RedisConsentStore,
    edge_store: RedisEdgeStore,
    public_url: str | None,
) -> ConsentLinks:
    """The link use case; opt-out confirmations carry signed links when customers can
    open them."""
    links = ConsentLinks(
        authority,
        store,
        keyring_for(settings, edge_store),
        public_url,
        default_region=settings.server.default_region,
        short_links=edge_store,
    )
    # Customers must be able to open a link sent in a confirmation: without an explicit
    # CONSENT_PUBLIC_URL, only a loopback listener (development) names its own address.
    if settings.edge.public_url or (
        settings.edge.listen is not None and is_loopback(settings.edge.listen_host)
    ):
        authority.use_signed_links(links.resubscribe_url)
    return links


def admin_servicer(
    authority: ConsentAuthority,
    security: SecurityAuthority,
    edge_store: RedisEdgeStore,
    public_url: str | None,
    delivery: DeliveryServices,
    whatsapp: WhatsAppEdge,
    tenants: TenantRegistry,
    bulk: BulkConsent,
    probe: DeploymentProbe,
    change_webhooks: ChangeWebhookAdmin,
) -> ConsentAdminService:
    """ConsentAdminService: one handler object per area, each on its use case."""
    return ConsentAdminService(
        tenants=TenantHandlers(tenants),
        settings=TenantSettingsHandlers(authority),
        security=SecurityHandlers(security),
        delivery=DeliveryProviderHandlers(delivery.admin),
        webhooks=WhatsAppWebhookHandlers(edge_store, public_url, whatsapp),
        bulk=BulkHandlers(bulk),
        deployment=DeploymentHandlers(probe),
        change_webhooks=ChangeWebhookHandlers(change_webhooks),
    )


def grpc_server(
    settings: Settings,
    security: SecurityAuthority,
    consent: ConsentServicer,
    admin: ConsentAdminService,
    health_servicer: health_aio.HealthServicer,
    tenant_lookup: TenantLookup,
) -> grpc.aio.Server:
    """The gRPC server with authentication (and the tenant-exists check), every service,
    and reflection."""
    server = grpc.aio.server(
        # Metrics outermost: calls the authentication refuses are counted too.
        interceptors=[
            *tracing.grpc_interceptors(),  # [] unless OTEL_* turned tracing on
            MetricsInterceptor(),
            AuthInterceptor(security, required=settings.auth_required, tenant_lookup=tenant_lookup),
        ],
        options=server_options(settings),
        # Bounds the handlers of a process whatever clients do (many connections, or
        # streams reset as soon as opened), now that streams count as HTTP/2 counts them.
        maximum_concurrent_rpcs=settings.limits.max_concurrent_calls,
    )
    add_consent_service(consent, server)  # BatchCheckConsent answers pre-encoded bytes
    admin_pb2_grpc.add_ConsentAdminServiceServicer_to_server(admin, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, ADMIN_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server


def bind_grpc(
    server: grpc.aio.Server, settings: Settings, reloader: CertificateReloader | None
) -> int:
    """Bind CONSENT_LISTEN (TLS when configured); the bound port, or ConfigError."""
    listen = settings.server.listen
    try:
        if reloader is not None:
            port = server.add_secure_port(listen, server_credentials(reloader, settings))
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError:
        port = 0
    if port == 0 and not listen.endswith(":0"):
        raise ConfigError(f"CONSENT_LISTEN={listen!r}: cannot listen there (in use?)")
    return port


# Python's collector runs a young collection every 700 allocations by default; an
# import allocates ~10 objects per record, and those collections (and the full ones
# they lead to, walking every cached normalisation and tombstone name) were a third of
# the server's CPU per imported record (docs/benchmarks.md). Young collections every
# 100,000 allocations instead; what start-up built (modules, protobuf descriptors,
# config) is frozen out of every collection. Memory stays bounded: only cyclic garbage
# waits longer, and little of it is made (the objects of a call are freed by count).
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Freeze start-up's objects and space out the collections (GC_THRESHOLDS)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run(
    services: Services, stop: asyncio.Event, on_serving: Callable[[], None] | None = None
) -> int:
    """Serve ``services`` until ``stop`` is set, then drain; return the exit code (0).

    ``on_serving`` is called once gRPC serves; then this process logs "process serving"
    and the supervisor logs "consent authority serving" when all its processes do.
    """
    s = services
    settings = s.settings
    loop = asyncio.get_running_loop()
    await _set_health(s.health, NOT_SERVING)
    refused: list[str] = []
    schema_task = await check_store_schema(s.store, stop, refused, store_partitions(settings))
    bootstrap = await install_bootstrap(s)
    tenants_task = await ensure_tenants(tenant_registry(s.store), settings)
    start_metrics(settings)
    await s.server.start()
    tune_gc()
    READINESS.serving = True
    log.info(
        "consent authority serving" if on_serving is None else "process serving",
        extra={
            "address": f"{settings.server.listen.rsplit(':', 1)[0]}:{s.port}",
            "pid": os.getpid(),
            "store": "embedded" if settings.redis.embedded else "redis",
            "auth": "required" if settings.auth_required else "optional",
            "tls": "mtls" if settings.tls.client_ca else ("tls" if settings.tls.enabled else "off"),
        },
    )
    if on_serving is not None:
        on_serving()
    # The inline worker starts once the server serves and stops after it drained.
    if s.worker is not None:
        await s.worker.start()
    warn_if_only_log_provider(settings, s.store)
    if s.http_edge is not None:
        await start_http_edge(s, s.http_edge)
    if s.reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, s.reloader.reload)
    watcher = asyncio.create_task(
        watch_store(
            s.store,
            s.health,
            settings.server.health_interval_s,
            redis_address(settings.redis.url) if settings.redis.url else "the embedded store",
        )
    )
    durability = warn_if_not_durable(settings, s.store)
    await stop.wait()
    tasks = (watcher, bootstrap, tenants_task, durability, schema_task)
    await drain(s, [t for t in tasks if t is not None])
    if refused:
        raise ConfigError(refused[0])
    return 0


def store_partitions(settings: Settings) -> int | None:
    """The partition count to create a new store with: CONSENT_PARTITIONS, else 16 on
    the embedded store (one process, no cluster) and the schema default on Redis."""
    if settings.redis.partitions is None and settings.redis.embedded:
        return keys.LEGACY_PARTITIONS
    return settings.redis.partitions


async def check_store_schema(
    store: RedisConsentStore,
    stop: asyncio.Event,
    refused: list[str],
    partitions: int | None = None,
) -> asyncio.Task[None] | None:
    """Refuse to start on a store schema this release does not serve (store/schema.py):
    raise ConfigError now, or, when Redis answers only later, log it, append it to
    ``refused`` and set ``stop`` (run() then raises it: exit code 2). Until the store's
    layout is read, no partition key can be used (keys.await_layout): calls get
    UNAVAILABLE and health says NOT_SERVING."""
    keys.await_layout()
    try:
        await check_schema(store.client, partitions)
        return None
    except SchemaMismatch as exc:
        raise ConfigError(f"store schema: {exc}") from None
    except StoreUnavailable:
        pass

    async def keep_trying() -> None:
        while True:
            await asyncio.sleep(1)
            try:
                await check_schema(store.client, partitions)
                return
            except StoreUnavailable:
                continue
            except SchemaMismatch as exc:
                log.error("store schema refused; stopping", extra={"why": str(exc)})
                refused.append(f"store schema: {exc}")
                stop.set()
                return
            except Exception as exc:  # anything else: the layout stays unknown; keep trying
                log.warning("store schema check failed; retrying", extra={"error": str(exc)})

    return asyncio.create_task(keep_trying(), name="schema-check")


async def install_bootstrap(services: Services) -> asyncio.Task[bool] | None:
    """Install CONSENT_BOOTSTRAP_ADMIN_KEY before serving, so the first call can use it.

    While Redis is down the server starts anyway (NOT_SERVING): the returned task keeps
    trying in the background.
    """
    token = services.settings.auth.bootstrap_admin_key
    if not token or await install_bootstrap_key(services.security, token, retry=False):
        return None
    return asyncio.create_task(install_bootstrap_key(services.security, token, retry=True))


async def start_http_edge(services: Services, http_edge: HttpEdge) -> None:
    """Serve the edge's app on its bound socket."""
    s = services
    await http_edge.start(
        edge_app(
            s.authority,
            s.links,
            s.edge_store,
            s.delivery.callbacks,
            whatsapp=s.whatsapp,
            store_up=lambda: READINESS.store_up is True,
            middlewares=tracing.http_middlewares(),
        ),
        s.settings.server.shutdown_grace_s,
    )
    log.info(
        "http edge serving",
        extra={
            "address": http_edge.local_url.removeprefix("http://"),
            "public_url": s.public_url,
        },
    )


async def _set_health(servicer: health_aio.HealthServicer, status: int) -> None:
    for name in ("", SERVICE_NAME):
        await servicer.set(name, status)


#: While the store stays unreachable for the same reason, its error line is repeated
#: this often, so that the tail of any log says why the server is NOT_SERVING.
UNREACHABLE_REPEAT_S = 60.0


async def watch_store(
    store: RedisConsentStore,
    servicer: health_aio.HealthServicer,
    interval_s: float,
    address: str = "",
) -> None:
    """Keep the health status in step with Redis reachability (NOT_SERVING while down),
    and the ``consent_store_up`` gauge with it."""
    loop_time = time.perf_counter
    serving: bool | None = None
    told: tuple[str, float] | None = None  # the cause last logged, and when
    while True:
        started = loop_time()
        cause = ""
        failure: BaseException | None = None
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as the probe completes, and the shutdown would wait on us forever.
            async with asyncio.timeout(max(interval_s, 0.5)):
                await probe(store.client)
            STORE_PROBE.observe(loop_time() - started)
        except Exception as exc:  # whatever a probe raises, the store is not serving us
            cause, failure = failure_cause(exc), exc
        ok = not cause
        STORE_UP.set(1 if ok else 0)
        READINESS.store_up = ok
        if ok != serving:
            await _set_health(servicer, SERVING if ok else NOT_SERVING)
            if ok:
                log.info("store reachable: serving", extra={"redis": address})
                told = None
            serving = ok
        if not ok and (
            told is None or told[0] != cause or started - told[1] >= UNREACHABLE_REPEAT_S
        ):
            # One line that says where and why, never the password; again only when the
            # cause changes or every UNREACHABLE_REPEAT_S while it lasts.
            log.error(
                f"consent store unreachable at {address or 'the configured Redis'}: {cause}; "
                "health NOT_SERVING, calls fail with UNAVAILABLE; retrying",
                extra={"redis": address, "cause": cause},
                # Not an outage we know: the traceback says what (a bug, not Redis).
                exc_info=None if isinstance(failure, StoreUnavailable | TimeoutError) else failure,
            )
            told = (cause, started)
        await asyncio.sleep(interval_s)


async def drain(services: Services, background: list[asyncio.Task[Any]]) -> None:
    """Graceful shutdown within one grace period: health NOT_SERVING, in-flight calls
    finish, then the worker's deliveries, then the store closes."""
    s = services
    grace = s.settings.server.shutdown_grace_s
    loop = asyncio.get_running_loop()
    READINESS.serving = False
    log.info("shutting down: draining in-flight calls", extra={"grace_s": grace})
    deadline = loop.time() + grace
    for task in background:
        await _cancel_quietly(task)
    if s.reloader is not None:
        loop.remove_signal_handler(signal.SIGHUP)
    await s.health.enter_graceful_shutdown()
    # HTTP and gRPC drain side by side, within one grace period: in-flight calls, webhooks
    # and clicks finish; WhatsApp redelivers anything refused meanwhile.
    await asyncio.gather(
        *([s.http_edge.stop()] if s.http_edge is not None else []),
        s.server.stop(grace),
    )
    if s.worker is not None:
        # Deliveries under way get what is left of the grace period; the rest stay
        # pending and another worker reclaims them.
        await s.worker.stop(max(0.0, deadline - loop.time()))
    with contextlib.suppress(Exception):  # closing connections must not fail the exit
        await s.store.aclose()
    log.info("stopped")


async def _cancel_quietly(task: asyncio.Task[Any]) -> None:
    """Cancel a background task; whatever it raised is logged, never fails the shutdown.

    A task can swallow one cancel (a library catching CancelledError, or a wait_for race),
    so the cancel is repeated until the task ends rather than awaited once forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if task.cancelled():
        return
    if task.exception() is not None:
        log.error("background task failed before shutdown", exc_info=task.exception())


def limits_of(settings: Settings) -> Limits:
    """The request limits the settings configure: each of Limits' fields from the setting
    of the same name."""
    return Limits(**{f.name: getattr(settings.limits, f.name) for f in fields(Limits)})


class CertificateReloader:
    """Serves the TLS files and re-reads them on SIGHUP, without dropping connections.

    gRPC asks :meth:`fetch` on each new handshake; it returns the new configuration
    once after a reload (None = keep the current one). Established connections keep
    the certificate they were made with. A reload that fails keeps the old files.
    """

    def __init__(self, tls: TlsSettings) -> None:
        self._tls = tls
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.initial = self._read()

    def _read(self) -> grpc.ServerCertificateConfiguration:
        t = self._tls
        assert t.cert and t.key
        # gRPC would only find a bad pair at the next handshake, failing every new
        # connection; the ssl module checks the key matches the certificate now.
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        check.load_cert_chain(t.cert, t.key)
        if t.client_ca:
            check.load_verify_locations(t.client_ca)
        with open(t.key, "rb") as fh:
            key = fh.read()
        with open(t.cert, "rb") as fh:
            cert = fh.read()
        client_ca = None
        if t.client_ca:
            with open(t.client_ca, "rb") as fh:
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
        require_client_authentication=settings.tls.client_ca is not None,
    )


DURABILITY_WARNING = (
    "REDIS CAN LOSE CONSENT: {problems}. An opt-out that Redis loses lets messages reach "
    "people who said stop. Set appendonly yes (or save points) and "
    "maxmemory-policy noeviction on {address}."
)


def warn_if_not_durable(settings: Settings, store: RedisConsentStore) -> asyncio.Task[None] | None:
    """Start-up, on a real Redis: once Redis answers, check (once) that it keeps what it
    is told (AOF or RDB save points) and never evicts (maxmemory-policy noeviction);
    one WARNING line naming every problem. The embedded store says it is not durable
    already (warn_at_start): no check."""
    if settings.redis.url is None:
        return None
    address = redis_address(settings.redis.url)

    async def check() -> None:
        while True:
            try:
                problems = await durability_problems(store.client)
                break
            except StoreUnavailable:  # the health watcher says why; check once it answers
                await asyncio.sleep(1)
        if problems is None:
            log.info(
                "redis durability not checked: CONFIG is not available to this client",
                extra={"redis": address},
            )
        elif problems:
            log.warning(DURABILITY_WARNING.format(problems="; ".join(problems), address=address))
        else:
            log.info(
                "redis durability checked: persistence on, noeviction", extra={"redis": address}
            )

    return asyncio.create_task(check(), name="durability-check")


def warn_at_start(settings: Settings) -> None:
    """Log what an operator must know before the first call: durability and exposure."""
    if settings.redis.embedded:
        log.warning(
            "EMBEDDED STORE IN USE: consent data lives in this process's memory only and is "
            "LOST when it stops. NOT DURABLE - set CONSENT_REDIS_URL for production."
        )
    _warn_security(settings)


def _warn_security(settings: Settings) -> None:
    beyond = not is_loopback(settings.server.host)
    if not settings.auth_required:
        if beyond:
            log.warning(
                "serving WITHOUT authentication beyond loopback "
                "(CONSENT_REQUIRE_AUTH=0, CONSENT_ALLOW_INSECURE=1): anyone who reaches "
                "the port can read and change consent"
            )
    elif beyond and not settings.tls.enabled:
        log.warning(
            "authentication is on but TLS is off: API keys cross the network in clear text; "
            "set CONSENT_TLS_CERT/CONSENT_TLS_KEY unless a proxy terminates TLS"
        )
    if settings.auth_required and settings.redis.embedded and not settings.auth.bootstrap_admin_key:
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
            # Once (the first try, before serving): the health watcher's line says why.
            if not retry:
                log.warning("bootstrap API key not installed yet: store unreachable; retrying")
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
    listen = settings.edge.listen
    if not listen:
        return None
    try:
        return HttpEdge(listen, reuse_port=settings.processes > 1)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"CONSENT_HTTP_LISTEN={listen!r}: cannot listen there ({why})") from None
