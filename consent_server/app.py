"""Wiring: settings -> store -> services -> server; health, reflection, signals, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from consent_client.v1 import admin_pb2, admin_pb2_grpc, consent_pb2, consent_pb2_grpc
from consent_server.api.consent_service import ConsentServicer
from consent_server.api.delivery_admin_service import DeliveryAdminServicer
from consent_server.config import ConfigError, Settings
from consent_server.delivery.metrics import serve_metrics
from consent_server.delivery.runner import build_worker
from consent_server.domain.delivery import DeliveryAdmin
from consent_server.domain.errors import StoreUnavailable
from consent_server.domain.service import ConsentAuthority
from consent_server.store.connect import open_store
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.repository import RedisConsentStore

log = logging.getLogger("consent_server")

SERVICE_NAME = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["ConsentAdminService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


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
            await asyncio.wait_for(store.ping(), timeout=max(interval_s, 0.5))
            ok = True
        except (StoreUnavailable, TimeoutError):
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
    if settings.embedded:
        log.warning(
            "EMBEDDED STORE IN USE: consent data lives in this process's memory only and is "
            "LOST when it stops. NOT DURABLE - set CONSENT_REDIS_URL for production."
        )
    if (
        settings.require_auth == "0"
        and not settings.host.startswith("127.")
        and settings.host
        not in (
            "localhost",
            "::1",
        )
    ):
        log.warning("serving WITHOUT authentication beyond loopback (CONSENT_REQUIRE_AUTH=0)")
    store = open_store(
        settings.redis_url, cluster=settings.redis_cluster, timeout_s=settings.redis_timeout_s
    )
    authority = ConsentAuthority(store, default_region=settings.default_region)

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    consent_pb2_grpc.add_ConsentServiceServicer_to_server(ConsentServicer(authority), server)
    admin_pb2_grpc.add_ConsentAdminServiceServicer_to_server(
        DeliveryAdminServicer(DeliveryAdmin(DeliveryRepository(store.client))), server
    )
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, ADMIN_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    await _set_health(health_servicer, NOT_SERVING)
    try:
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
        extra={"address": f"{host}:{port}", "store": "embedded" if settings.embedded else "redis"},
    )
    # The inline worker starts once the server serves and stops after it drained.
    worker = build_worker(settings, store) if settings.delivery == "inline" else None
    if worker is not None:
        await worker.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(watch_store(store, health_servicer, settings.health_interval_s))
    await stop.wait()

    log.info(
        "shutting down: draining in-flight calls", extra={"grace_s": settings.shutdown_grace_s}
    )
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)
    if worker is not None:
        await worker.stop(settings.shutdown_grace_s)
    await store.aclose()
    log.info("stopped")
    return 0
