"""The per-RPC metrics interceptor: grpc-prometheus's three series for every unary RPC.

``grpc_server_started_total``, ``grpc_server_handled_total`` (with ``grpc_code``) and the
``grpc_server_handling_seconds`` histogram, labelled ``grpc_type``, ``grpc_service`` and
``grpc_method`` as go-grpc-prometheus labels them, so existing dashboards and alerts
work unchanged. It runs outside the authentication interceptor: refused calls
(UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED) are counted too.

Streaming RPCs (the health service's Watch, reflection) pass through uncounted. The
label children of each method are resolved once, so a call costs two counter
increments and one histogram observation.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from consent_server.metrics import GRPC_HANDLED, GRPC_HANDLING, GRPC_STARTED

from .auth import Continuation, Ctx, Handler, ServerInterceptor

_OK = grpc.StatusCode.OK


class _MethodMetrics:
    """The metric children of one method."""

    __slots__ = ("handled", "labels", "started", "timer")

    def __init__(self, method: str) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        self.labels = ("unary", service, name)
        self.started = GRPC_STARTED.labels(*self.labels)
        self.timer = GRPC_HANDLING.labels(*self.labels)
        self.handled: dict[grpc.StatusCode, Any] = {}

    def done(self, code: grpc.StatusCode, seconds: float) -> None:
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = GRPC_HANDLED.labels(*self.labels, code.name)
        child.inc()
        self.timer.observe(seconds)


def _code(context: Ctx, default: grpc.StatusCode) -> grpc.StatusCode:
    """The status code the handler set (abort or set_code), else ``default``."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # grpc.aio keeps the raw cygrpc integer
        for member in grpc.StatusCode:
            if member.value[0] == code:
                return member
    return default


class MetricsInterceptor(ServerInterceptor):
    """Counts and times every unary RPC (see the module docstring)."""

    def __init__(self) -> None:
        self._methods: dict[str, _MethodMetrics] = {}
        # Per method, the last handler the continuation returned and its wrapper: the
        # auth interceptor hands out one handler per method for calls without a key (and
        # open methods are the servicer's own), so those calls reuse the wrapper instead
        # of building one each (bench/: CPU per call). Holding the handler keeps the
        # identity check sound.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Handler, method: str) -> Handler:
        metrics = self._methods.get(method)
        if metrics is None:
            metrics = self._methods[method] = _MethodMetrics(method)
        inner: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Ctx) -> Any:
            metrics.started.inc()
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await inner(request, context)
                code = _code(context, _OK)
                return response
            except grpc.aio.AbortError:
                code = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                metrics.done(code, time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
