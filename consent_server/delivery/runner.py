"""Running delivery: the inline worker of a server, and the standalone worker process."""

from __future__ import annotations

import asyncio
import logging
import signal

from consent_server.config import ConfigError, Settings
from consent_server.store.connect import open_store
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.repository import RedisConsentStore

from .metrics import serve_metrics
from .worker import DeliveryWorker, WorkerOptions

log = logging.getLogger("consent_server.delivery")


def worker_options(settings: Settings) -> WorkerOptions:
    """Worker tuning from the settings (CONSENT_DELIVERY_*)."""
    return WorkerOptions(
        concurrency=settings.delivery_concurrency,
        visibility_timeout_s=settings.delivery_visibility_s,
        max_attempts=settings.delivery_max_attempts,
        backoff_base_ms=settings.delivery_backoff_s * 1000,
        backoff_max_ms=settings.delivery_backoff_max_s * 1000,
    )


def build_worker(settings: Settings, store: RedisConsentStore) -> DeliveryWorker:
    """A worker sharing ``store``'s Redis client (the inline worker of a server)."""
    outbox = DeliveryRepository(store.client, cluster=settings.redis_cluster)
    return DeliveryWorker(store, outbox, worker_options(settings))


async def run_worker(settings: Settings) -> int:
    """``python -m consent_server.worker``: deliver until SIGTERM/SIGINT, then drain."""
    if settings.embedded:
        raise ConfigError(
            "CONSENT_REDIS_URL is required: a worker process delivers from a shared Redis "
            "(the embedded store lives inside one server process)"
        )
    serve_metrics(settings.metrics_listen)
    store = open_store(
        settings.redis_url,
        cluster=settings.redis_cluster,
        timeout_s=settings.redis_timeout_s,
        min_replicas_ack=settings.redis_min_replicas_ack,
        ack_timeout_ms=settings.redis_ack_timeout_ms,
    )
    worker = build_worker(settings, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while True:
        try:
            await worker.start()
            break
        except Exception as exc:  # Redis not up yet: keep trying until told to stop
            log.error("delivery worker cannot start yet", extra={"error": str(exc)})
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
                await store.aclose()
                return 0
            except TimeoutError:
                continue
    log.info("delivery worker process ready", extra={"consumer": worker.consumer})
    await stop.wait()
    await worker.stop(settings.shutdown_grace_s)
    await store.aclose()
    return 0
