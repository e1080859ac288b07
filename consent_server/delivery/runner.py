"""Running delivery: the inline worker of a server, and the standalone worker process."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from consent_server import tracing
from consent_server.config import ConfigError, Settings
from consent_server.domain.delivery import DeliveryAdmin
from consent_server.domain.whatsapp import StatusHandler
from consent_server.metrics import READINESS, MetricsListenError, serve_metrics
from consent_server.store import keys
from consent_server.store.change_webhooks import RedisChangeWebhooks
from consent_server.store.connect import open_store
from consent_server.store.feed import RedisChangeFeed
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore
from consent_server.store.schema import SchemaMismatch, check_schema

from .change_webhooks import ChangeWebhookDispatcher, DispatchOptions
from .feedback import provider_feedback
from .receipts import WebhookCallbacks, whatsapp_status_handler
from .worker import DeliveryWorker, WorkerOptions

log = logging.getLogger("consent_server.delivery")


def worker_options(settings: Settings) -> WorkerOptions:
    """Worker tuning from the settings (CONSENT_DELIVERY_*)."""
    return WorkerOptions(
        concurrency=settings.delivery.concurrency,
        visibility_timeout_s=settings.delivery.visibility_s,
        max_attempts=settings.delivery.max_attempts,
        backoff_base_ms=settings.delivery.backoff_s * 1000,
        backoff_max_ms=settings.delivery.backoff_max_s * 1000,
    )


@dataclass(frozen=True, slots=True)
class DeliveryServices:
    """What a server needs of delivery besides the worker: the provider admin use case,
    the webhook-provider call-backs and the WhatsApp status handler."""

    admin: DeliveryAdmin
    callbacks: WebhookCallbacks
    on_status: StatusHandler


def delivery_services(settings: Settings, store: RedisConsentStore) -> DeliveryServices:
    """Delivery's server-side services on ``store``'s Redis client."""
    outbox = DeliveryRepository(store.client, cluster=settings.redis.cluster)
    providers = RedisProviderSettings(store.client)
    feedback = provider_feedback(store)
    return DeliveryServices(
        admin=DeliveryAdmin(providers, settings.delivery.egress_allow),
        callbacks=WebhookCallbacks(outbox, providers, feedback, tenant_lookup=store.tenant_lookup),
        on_status=whatsapp_status_handler(outbox, feedback),
    )


def consent_store(settings: Settings) -> RedisConsentStore:
    """The consent store the settings name (the embedded one without a Redis URL), with
    replica acknowledgement as configured: what a server and a worker process both open."""
    return open_store(
        settings.redis.url,
        cluster=settings.redis.cluster,
        timeout_s=settings.redis.timeout_s,
        min_replicas_ack=settings.redis.min_replicas_ack,
        ack_timeout_ms=settings.redis.ack_timeout_ms,
        feed_maxlen=settings.redis.feed_maxlen,
        # Tracing's Redis spans come from redis-py's instrumented command path, which
        # the shared connection bypasses: with tracing on, every command takes the pool.
        multiplex=settings.redis.multiplex and not tracing.enabled(),
    )


def start_metrics(settings: Settings) -> None:
    """Serve /metrics when CONSENT_METRICS_LISTEN is set; ConfigError when it cannot bind."""
    try:
        serve_metrics(settings.observability.metrics_listen)
    except MetricsListenError as exc:
        raise ConfigError(str(exc)) from None


def change_webhook_dispatcher(
    settings: Settings, store: RedisConsentStore
) -> ChangeWebhookDispatcher:
    """The change webhook dispatcher on ``store``'s client: the outbox's attempts and
    backoff, the providers' egress rule."""
    opts = worker_options(settings)
    return ChangeWebhookDispatcher(
        RedisChangeWebhooks(store.client),
        RedisChangeFeed(store.client),
        DispatchOptions(
            max_attempts=opts.max_attempts,
            backoff_base_ms=opts.backoff_base_ms,
            backoff_max_ms=opts.backoff_max_ms,
        ),
        egress=settings.delivery.egress_allow,
    )


def build_worker(settings: Settings, store: RedisConsentStore) -> DeliveryWorker:
    """A worker sharing ``store``'s Redis client (the inline worker of a server), with
    the change webhook dispatcher beside it."""
    outbox = DeliveryRepository(store.client, cluster=settings.redis.cluster)
    return DeliveryWorker(
        store,
        outbox,
        worker_options(settings),
        providers=RedisProviderSettings(store.client),
        egress=settings.delivery.egress_allow,
        companions=(change_webhook_dispatcher(settings, store),),
    )


LOG_ONLY_WARNING = (
    "ONLY THE LOG PROVIDER IS CONFIGURED: messages accepted on this durable Redis are "
    "written to the server log and marked LOGGED; nothing is sent to anyone. Configure "
    "a webhook or whatsapp_cloud provider (SetDeliveryProvider) to deliver."
)


PROVIDERS_OK = "delivery providers checked: at least one tenant has a provider that sends"

_CHECKS: set[asyncio.Task[bool]] = set()  # keeps background checks referenced


def warn_if_only_log_provider(
    settings: Settings, store: RedisConsentStore, *, delivering: bool | None = None
) -> asyncio.Task[bool] | None:
    """Start-up, on a real Redis where this process delivers (``delivering``; default:
    the inline worker is on): check in the background, so a large keyspace does not
    delay serving, and warn loudly when no tenant has a provider that sends (the
    default ``log`` provider only writes a log line). The task answers whether it warned.
    The embedded store is for development, where log-only is expected: no check."""
    if delivering is None:
        delivering = settings.delivery.mode == "inline"
    if settings.redis.embedded or not delivering:
        return None
    task = asyncio.create_task(_check_providers(settings, store), name="provider-check")
    _CHECKS.add(task)
    task.add_done_callback(_CHECKS.discard)
    return task


async def _check_providers(settings: Settings, store: RedisConsentStore) -> bool:
    try:
        sending = await RedisProviderSettings(store.client).any_sending_provider()
    except Exception as exc:  # best effort (store down at start-up): never fail the server
        log.info("provider check skipped at start-up", extra={"error": str(exc)})
        return False
    if sending:
        log.info(PROVIDERS_OK)
        return False
    log.warning(LOG_ONLY_WARNING)
    return True


async def run_worker(settings: Settings) -> int:
    """``python -m consent_server.worker``: deliver until SIGTERM/SIGINT, then drain."""
    if settings.redis.embedded:
        raise ConfigError(
            "CONSENT_REDIS_URL is required: a worker process delivers from a shared Redis "
            "(the embedded store lives inside one server process)"
        )
    # Handlers first, as the server does: the metrics port is what health checks probe,
    # so a SIGTERM may arrive as soon as it is open; it must mean "drain and exit 0".
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    start_metrics(settings)
    store = consent_store(settings)
    worker = build_worker(settings, store)
    keys.await_layout()  # nothing is read or written before the store's layout is known
    while True:
        try:
            await check_schema(store.client, settings.redis.partitions)
            await worker.start()
            break
        except SchemaMismatch as exc:
            await store.aclose()
            raise ConfigError(f"store schema: {exc}") from None
        except Exception as exc:  # Redis not up yet: keep trying until told to stop
            log.error("delivery worker cannot start yet", extra={"error": str(exc)})
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
                await store.aclose()
                return 0
            except TimeoutError:
                continue
    warn_if_only_log_provider(settings, store, delivering=True)
    READINESS.serving = READINESS.store_up = True  # /readyz: the worker reached Redis
    log.info("delivery worker process ready", extra={"consumer": worker.consumer})
    await stop.wait()
    READINESS.serving = False
    await worker.stop(settings.server.shutdown_grace_s)
    await store.aclose()
    return 0
