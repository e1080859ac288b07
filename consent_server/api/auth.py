"""The authentication interceptor: API key -> caller -> role and tenant check -> handler.

Every RPC except health and reflection passes through it. When authentication is
required a call without a valid key fails with UNAUTHENTICATED; a key whose role or
tenant does not allow the call fails with PERMISSION_DENIED; a key over its rate limit
fails with RESOURCE_EXHAUSTED and a RetryInfo. When authentication is optional (the
server on loopback with CONSENT_REQUIRE_AUTH=auto or 0) a call without a key runs as
"anonymous", but a key that *is* presented is still checked and enforced.

The tenant check reads the request's ``tenant_id`` field, so the handler is wrapped
and the check runs after the request is decoded, before the servicer sees it. Then,
for every RPC of both services, a tenant that does not exist fails with NOT_FOUND
(TENANT_NOT_FOUND) before the servicer runs: after the key's checks, so a key of
another tenant learns nothing about which tenants exist. The lookup is the cached
tenant-settings read the use case makes anyway (no extra round trip). The
authenticated caller is kept in a context variable for the servicers (the principal
recorded on consent events). The key is never logged.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from consent_server.domain.auth import (
    OPERATOR_METHODS,
    OPERATOR_TENANT,
    Caller,
    RateLimited,
    is_open,
)
from consent_server.domain.errors import InvalidArgument, TenantNotFound
from consent_server.domain.security import SecurityAuthority, call_cost
from consent_server.domain.service import ANONYMOUS
from consent_server.domain.validation import TENANT_RE
from consent_server.metrics import RATE_LIMITED

from .errors import abort

log = logging.getLogger("consent_server.auth")

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "consent_caller", default=None
)


def current_caller() -> Caller | None:
    """The authenticated caller of the current RPC; None when it runs anonymously."""
    return _caller.get()


def current_principal() -> str:
    """The principal to record on consent events: the key id, or "anonymous"."""
    caller = _caller.get()
    return caller.principal if caller is not None else ANONYMOUS


def request_items(request: Any) -> int:
    """How many batch items a request carries (its ``recipients``, or the ``records`` of
    an import message), for its rate cost."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:
        return 1
    if "recipients" in descriptor.fields_by_name:
        return len(request.recipients)
    if "records" in descriptor.fields_by_name:
        return len(request.records)
    return 1


def request_tenant(request: Any) -> str | None:
    """The request's ``tenant_id``; None when its message has no such field."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None or "tenant_id" not in descriptor.fields_by_name:
        return None
    value: str = request.tenant_id
    return value


class Undecodable:
    """Stands in for a request whose bytes are not a valid message of the method's type."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _lenient(
    deserializer: Callable[[bytes], Any] | None, method: str
) -> Callable[[bytes], Any] | None:
    """A deserializer that turns corrupt bytes into Undecodable instead of raising.

    grpc would answer a raising deserializer with UNKNOWN and the parser's own text;
    a corrupt request is the caller's error: INVALID_ARGUMENT naming the message type.
    """
    if deserializer is None:
        return None
    name = method.rsplit("/", 1)[-1]

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return Undecodable(f"is not a valid {name} request message (corrupt wire format)")

    return decode


def _authorization(details: grpc.HandlerCallDetails) -> str | None:
    for key, value in details.invocation_metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


Ctx = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    ServerInterceptor: TypeAlias = grpc.aio.ServerInterceptor[Any, Any]
else:  # grpc's runtime classes are not generic
    Handler: TypeAlias = grpc.RpcMethodHandler
    ServerInterceptor: TypeAlias = grpc.aio.ServerInterceptor

# What an interceptor's intercept_service is handed: the next step, to the handler.
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


# tenant id -> its settings, or None when the tenant does not exist.
TenantLookup = Callable[[str], Awaitable[object | None]]


class AuthInterceptor(ServerInterceptor):
    """Authenticates and authorizes every call (see the module docstring)."""

    def __init__(
        self,
        security: SecurityAuthority,
        *,
        required: bool,
        tenant_lookup: TenantLookup | None = None,
    ) -> None:
        self._security = security
        self._required = required
        self._tenant_lookup = tenant_lookup
        # Wrapped handlers of calls without a key, per method: they depend on nothing
        # per call, and building them on every call cost measurable CPU (bench/).
        self._anonymous: dict[str, Handler] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_open(method):
            return handler
        if (
            handler.unary_unary is None
            and handler.stream_unary is None
            and (handler.unary_stream is None)
        ):
            # Checked RPCs are unary, client-streaming (ImportConsent: the first message
            # names the tenant) or server-streaming (ExportConsent). A bidirectional
            # stream here is an RPC whose tenants nobody checks: refuse it as unknown
            # (UNIMPLEMENTED) rather than serve it unchecked.
            log.error(
                "streaming RPC refused: not checked by the interceptor", extra={"method": method}
            )
            # None is grpc's "no such method"; grpc-stubs do not spell it in the return type.
            return None  # type: ignore[return-value]
        header = _authorization(handler_call_details)
        if header is None and not self._required:
            wrapped = self._anonymous.get(method)
            if wrapped is None:
                wrapped = self._wrap(handler, method, None, authenticate=False)
                self._anonymous[method] = wrapped
            return wrapped
        return self._wrap(handler, method, header, authenticate=True)

    async def _admit(self, method: str, header: str | None, request: Any) -> Caller:
        caller = await self._security.authenticate(header, call_cost(request_items(request)))
        self._security.authorize(caller, method, request_tenant(request))
        return caller

    async def _tenant_exists(self, method: str, request: Any) -> None:
        """TenantNotFound when the request names a well-formed tenant id that does not
        exist. A malformed or empty id is left to the use case's validation; the tenant
        RPCs themselves and the operator pseudo-tenant are not checked."""
        if self._tenant_lookup is None or method in OPERATOR_METHODS:
            return
        tenant = request_tenant(request)
        if not tenant or tenant == OPERATOR_TENANT or not TENANT_RE.fullmatch(tenant):
            return
        if await self._tenant_lookup(tenant) is None:
            raise TenantNotFound(tenant)

    def _wrap(
        self, handler: Handler, method: str, header: str | None, *, authenticate: bool
    ) -> Handler:
        admit = self._admit
        exists = self._tenant_exists
        deserializer = _lenient(handler.request_deserializer, method)

        async def enter(request: Any, context: Ctx) -> None:
            """Refuse an undecodable request, then authenticate and authorize, then
            refuse a tenant that does not exist."""
            try:
                if isinstance(request, Undecodable):
                    raise InvalidArgument.single("request", request.reason)
                if authenticate:
                    _caller.set(await admit(method, header, request))
                await exists(method, request)
            except Exception as exc:
                if isinstance(exc, RateLimited):
                    RATE_LIMITED.inc()
                await abort(context, exc)
                raise

        if handler.stream_unary is not None:
            return self._wrap_client_stream(handler, enter, header, authenticate, deserializer)
        if handler.unary_stream is not None:
            streaming: Any = handler.unary_stream

            async def unary_stream(request: Any, context: Ctx) -> Any:
                await enter(request, context)
                async for response in streaming(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )

        inner: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Ctx) -> Any:
            await enter(request, context)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_client_stream(
        self,
        handler: Handler,
        enter: Callable[[Any, Ctx], Awaitable[None]],
        header: str | None,
        authenticate: bool,
        deserializer: Callable[[bytes], Any] | None,
    ) -> Handler:
        """A client stream is admitted on its first message (which names the tenant);
        every later message is authenticated again and pays its rate cost, so a key
        revoked or over its limit stops the stream. The handler sees the first message
        again, then the rest."""
        security = self._security
        inner: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: Ctx) -> Any:
            stream = requests.__aiter__()
            try:
                first: Any = await stream.__anext__()
            except StopAsyncIteration:
                first = None
            await enter(first if first is not None else object(), context)

            async def messages() -> AsyncIterator[Any]:
                if first is None:
                    return
                yield first
                async for message in stream:
                    if isinstance(message, Undecodable):
                        raise InvalidArgument.single("request", message.reason)
                    if authenticate:
                        await security.authenticate(header, call_cost(request_items(message)))
                    yield message

            return await inner(messages(), context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
