"""Prometheus metrics of the send and delivery path, and the optional metrics listener.

One module of its own, importing nothing of the server, so every layer can count
without depending on another (the api counts accepts, delivery counts the rest).

Counters and histograms live in prometheus-client's default registry, so a server
process (accepts and an inline worker) and a worker process each export their own
share; Prometheus sums them across processes. The server processes of one supervisor
(``CONSENT_PROCESSES`` > 1) write prometheus-client's multiprocess files instead, and
the supervisor serves their sum on the one metrics listener (``consent_server.supervisor``).
"""

from __future__ import annotations

import enum
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

log = logging.getLogger("consent_server.metrics")

# A ``<name>_created`` series per counter and histogram child doubles the series count
# and no dashboard reads it (Prometheus has counter resets for that).
# (prometheus_client leaves the function unannotated; this is its type.)
_disable_created: Callable[[], None] = disable_created_metrics
_disable_created()

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

ACCEPTED = Counter("consent_messages_accepted", "Messages SendIfAllowed accepted into the outbox")
DELIVERED = Counter(
    "consent_messages_delivered", "Messages a provider accepted", ["provider", "purpose"]
)
CANCELLED = Counter(
    "consent_messages_cancelled", "Messages cancelled at delivery: the recipient opted out"
)
FAILED = Counter("consent_messages_failed", "Messages that failed for good", ["provider"])
EXPIRED = Counter("consent_messages_expired", "Messages whose not_after passed first")
RETRIES = Counter("consent_delivery_retries", "Transient provider failures retried", ["provider"])
PROVIDER_OPT_OUTS = Counter(
    "consent_provider_opt_outs", "Opt-outs recorded from provider answers", ["provider"]
)
DELIVERY_LATENCY = Histogram(
    "consent_delivery_latency_seconds",
    "From acceptance to the provider accepting the message",
    buckets=_LATENCY_BUCKETS,
)
PROVIDER_CALL = Histogram(
    "consent_provider_call_seconds", "Duration of one provider call", ["provider"]
)
OUTBOX_WAIT = Histogram(
    "consent_outbox_lag_seconds",
    "From acceptance to a worker claiming the message (outbox lag)",
    buckets=_LATENCY_BUCKETS,
)
# Under the supervisor (CONSENT_PROCESSES > 1) each process writes its own value: the
# backlog is one figure of Redis, so /metrics shows the latest of the live processes.
OUTBOX_BACKLOG = Gauge(
    "consent_outbox_backlog",
    "Messages waiting in the outboxes and retry queues",
    multiprocess_mode="livemostrecent",
)
OUTBOX_OLDEST = Gauge(
    "consent_outbox_oldest_age_seconds",
    "Age of the oldest message still in an outbox",
    multiprocess_mode="livemostrecent",
)


class MetricsListenError(ValueError):
    """The metrics listener cannot bind its address; the message names the setting."""


class Readiness:
    """Whether this process can take traffic now, and why not: ``/readyz`` on the
    metrics listener and ``/healthz`` of the HTTP edge answer from it.

    The server marks itself serving once gRPC serves and not serving when it drains;
    its health watcher sets the store's state (None until the first probe). A worker
    process is ready once its worker started.
    """

    def __init__(self) -> None:
        self.serving = False
        self.store_up: bool | None = None

    @property
    def ready(self) -> bool:
        """Serving, on a store that answers."""
        return self.serving and self.store_up is True

    def why_not(self) -> str:
        """A short reason when not ready ("" when ready)."""
        if not self.serving:
            return "not serving (starting or draining)"
        if self.store_up is not True:
            return "consent store unavailable" if self.store_up is False else "store not probed yet"
        return ""


#: This process's readiness (one per process, like the metrics).
READINESS = Readiness()


# -- change webhooks --
CHANGE_WEBHOOK_POSTS = Counter(
    "consent_change_webhook_posts",
    "Change webhook POSTs by outcome: delivered, retried (a failed attempt that will be "
    "retried), dead_letter (given up)",
    ["outcome"],
)

# -- the WhatsApp webhook of the HTTP edge --
WHATSAPP_UNAPPLIED = Counter(
    "consent_whatsapp_unapplied",
    "WhatsApp notification items not applied, by reason (malformed, unsupported, refused, "
    "failed, unknown_message, unbound: kept as dead letters; foreign_number, unrouted, "
    "bad_signature: counted only)",
    ["reason"],
)
WHATSAPP_DEAD_LETTERS_EVICTED = Counter(
    "consent_whatsapp_dead_letters_evicted",
    "Dead letters dropped because a tenant's list was full (oldest first)",
)


Ready = Callable[[], tuple[bool, str]]


def _this_process() -> tuple[bool, str]:
    return READINESS.ready, READINESS.why_not()


def metrics_app(registry: CollectorRegistry, ready: Ready) -> WsgiApp:
    """``/readyz`` (200 "ready", or 503 and the reason) beside prometheus-client's
    ``/metrics`` app (which answers every other path)."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/readyz":
            ok, why = ready()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8")],
            )
            return [b"ready\n" if ok else f"not ready: {why}\n".encode()]
        body: Iterable[bytes] = metrics(environ, start_response)
        return body

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_metrics_server(
    listen: str, *, registry: CollectorRegistry = REGISTRY, ready: Ready = _this_process
) -> None:
    """Serve /metrics and /readyz on ``host:port`` in a daemon thread; OSError when the
    address cannot be bound."""
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    family = socket.getaddrinfo(bare, int(port), type=socket.SOCK_STREAM)[0][0]

    class Server(ThreadingWSGIServer):
        address_family = family

    httpd = make_server(
        bare, int(port), metrics_app(registry, ready), Server, handler_class=_QuietHandler
    )
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()


def serve_metrics(listen: str | None) -> None:
    """Expose /metrics and /readyz on ``host:port`` (a daemon thread); nothing when
    ``listen`` is None.

    Raises MetricsListenError when the address cannot be bound.
    """
    if not listen:
        return
    try:
        start_metrics_server(listen)
    except OSError as exc:
        raise MetricsListenError(
            f"CONSENT_METRICS_LISTEN={listen!r}: cannot listen there ({exc.strerror or exc})"
        ) from None
    log.info("metrics serving", extra={"address": listen})


# -- every RPC, following grpc-prometheus (go-grpc-prometheus) naming --
_RPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
GRPC_STARTED = Counter("grpc_server_started", "RPCs started on the server", _RPC_LABELS)
GRPC_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, whatever their status code",
    [*_RPC_LABELS, "grpc_code"],
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time the server took to answer an RPC",
    _RPC_LABELS,
    buckets=_RPC_BUCKETS,
)

# -- what the consent answers were --
DECISIONS = Counter(
    "consent_decisions",
    "Consent decisions answered: CheckConsent, each BatchCheckConsent item, SendIfAllowed "
    "(result allowed|blocked; reason RECIPIENT_OPTED_OUT|OPT_IN_REQUIRED, none when "
    "allowed; scope topic|all|default_policy: which record decided, record|default_policy "
    "for an accepted SendIfAllowed, whose script does not say which record allowed it)",
    ["rpc", "result", "reason", "scope"],
)
INBOUND_ACTIONS = Counter(
    "consent_inbound_actions",
    "Inbound customer messages by what they did (opted_out, opted_in, help, none) and channel",
    ["action", "channel"],
)


def count_inbound(channel: enum.Enum, action: enum.Enum) -> None:
    """One ``consent_inbound_actions_total`` increment (the domain's inbound observer)."""
    INBOUND_ACTIONS.labels(action.value, channel.value).inc()


RATE_LIMITED = Counter(
    "consent_rate_limited",
    "Calls refused with RESOURCE_EXHAUSTED because their API key was over its rate limit",
)

# -- the store (Redis) --
STORE_CALL = Histogram(
    "consent_store_call_seconds",
    "Duration of one store operation (a Lua script or a command), by outcome "
    "(ok, unavailable: counted as an outage, error: any other failure)",
    ["outcome"],
    buckets=_RPC_BUCKETS,
)
STORE_UP = Gauge(
    "consent_store_up",
    "1 while the store answers the health probe, 0 while it does not",
    multiprocess_mode="livemin",
)
STORE_PROBE = Histogram(
    "consent_store_probe_seconds",
    "Duration of the health probe (PING, or CLUSTER INFO of every primary)",
    buckets=_RPC_BUCKETS,
)
