"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` variables turn it on.

Nothing is imported or installed while they are unset. On (see :func:`exporter_names`),
one tracer provider exports spans for:

- every gRPC call (the OpenTelemetry gRPC server interceptor, outermost, so the span
  covers authentication; W3C ``traceparent`` metadata continues a caller's trace);
- every Redis command and Lua script (arguments replaced by ``?``: no addresses);
- every HTTP edge request, named by its route template (``POST /{kind}/{token}``, never
  a link token), continuing a caller's ``traceparent``;
- every provider call over httpx, its URL cut to scheme and host (webhook URLs may
  carry secrets in their path or query).

The variables (all read by the OpenTelemetry SDK as it documents them):
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``; a comma list is allowed),
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (set alone they
mean ``otlp``), ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` only), ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_EXPORTER_OTLP_INSECURE``, ``OTEL_EXPORTER_OTLP_CERTIFICATE``, ``OTEL_SERVICE_NAME``
(default ``consent-server`` / ``consent-worker``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_BSP_*``, ``OTEL_PROPAGATORS``,
and ``OTEL_SDK_DISABLED=true`` (off whatever else is set).
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from consent_server.config import ConfigError

if TYPE_CHECKING:
    from aiohttp import web
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("consent_server.tracing")

_state: dict[str, Any] = {}  # "provider" once set up


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The span exporters the variables ask for; [] = tracing off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if raw:
        return [n.strip() for n in raw.split(",") if n.strip() and n.strip() != "none"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


def enabled() -> bool:
    """True once :func:`setup` turned tracing on in this process."""
    return "provider" in _state


def _exporter(name: str, env: Mapping[str, str]) -> tuple[SpanExporter, bool]:
    """One exporter and whether it is batched."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(), False
    if name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        if protocol != "grpc":
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only 'grpc' is supported "
                "(the OTLP/gRPC exporter is installed)"
            )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(), True
    raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r}: must be otlp, console or none")


def setup(
    service_name: str,
    env: Mapping[str, str] | None = None,
    *,
    exporter: SpanExporter | None = None,
) -> bool:
    """Turn tracing on when the variables ask for it (or an ``exporter`` is given, in
    tests); True when on. ConfigError for an exporter or protocol we cannot serve."""
    env = os.environ if env is None else env
    names = exporter_names(env)
    if exporter is None and not names:
        return False
    if enabled():
        return True
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    named = "OTEL_SERVICE_NAME" in env or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(
        resource=Resource.create({} if named else {"service.name": service_name})
    )
    exporters = [(exporter, False)] if exporter is not None else [_exporter(n, env) for n in names]
    for exp, batched in exporters:
        provider.add_span_processor(
            BatchSpanProcessor(exp) if batched else SimpleSpanProcessor(exp)
        )
    trace.set_tracer_provider(provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(
        tracer_provider=provider, async_request_hook=_cut_url, request_hook=_cut_url_sync
    )
    _state["provider"] = provider
    atexit.register(provider.shutdown)
    log.info(
        "tracing on",
        extra={"exporters": ",".join(names) or "given", "service": service_name},
    )
    return True


def _short_url(request: Any) -> str:
    url = request.url  # httpx.URL
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def _cut_url_sync(span: Any, request: Any) -> None:
    if span is not None and span.is_recording():
        short = _short_url(request)
        span.set_attribute("url.full", short)
        span.set_attribute("http.url", short)


async def _cut_url(span: Any, request: Any) -> None:
    _cut_url_sync(span, request)


def grpc_interceptors() -> list[Any]:
    """The server interceptors tracing adds, outermost first ([] while off)."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    # (opentelemetry leaves the factory unannotated; this is its type.)
    interceptor: Callable[..., Any] = aio_server_interceptor
    return [interceptor(tracer_provider=_state["provider"])]


Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def http_middlewares() -> list[Any]:
    """The aiohttp middleware tracing adds to the HTTP edge ([] while off)."""
    if not enabled():
        return []
    from aiohttp import web
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind, StatusCode

    tracer = _state["provider"].get_tracer("consent_server.http")

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route},
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                span.set_attribute("http.response.status_code", exc.status)
                raise
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(StatusCode.ERROR)
            return response

    return [traced]
