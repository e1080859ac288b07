"""An in-process fake ConsentService (and ConsentAdminService) for the client tests.

It records every call (method, request, invocation metadata) and plays a per-method
script of actions; without an action it forwards the call to a real server
(``upstream``) or fails with UNIMPLEMENTED. It runs on a thread pool, so both the
sync and the asyncio client can talk to it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from consent_client import Backoff
from consent_client.v1 import admin_pb2_grpc as apb_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pb_grpc

from .support import free_port

# Shared by the sync and asyncio client tests, so that both test the same calls.
WA = "+91 98765 43210"
"""A WhatsApp number as a caller writes it (the server normalises it)."""
FAST = Backoff(initial=0.01, maximum=0.05)
"""Retries a few milliseconds apart: the retry tests stay quick."""

Forward = Callable[[Message], Message]
Action = Callable[[Message, grpc.ServicerContext, Forward], Message]


@dataclass
class Seen:
    method: str
    request: Any
    metadata: dict[str, str]


def rich_status(code: grpc.StatusCode, message: str, *details: Message) -> status_pb2.Status:
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)


def fail(code: grpc.StatusCode, message: str = "injected", *details: Message) -> Action:
    """Fail the call without forwarding it."""

    def act(request: Message, context: grpc.ServicerContext, forward: Forward) -> Message:
        context.abort_with_status(rpc_status.to_status(rich_status(code, message, *details)))
        raise AssertionError("unreachable")

    return act


def unavailable(retry_after: float | None = None) -> Action:
    """UNAVAILABLE (optionally with RetryInfo), without forwarding."""
    details: list[Message] = [
        error_details_pb2.ErrorInfo(reason="STORE_UNAVAILABLE", domain="consent.v1")
    ]
    if retry_after is not None:
        d = duration_pb2.Duration()
        d.FromNanoseconds(int(retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=d))
    return fail(grpc.StatusCode.UNAVAILABLE, "store unavailable", *details)


def forward_then_unavailable() -> Action:
    """Apply the call upstream, then lose the answer: the client sees UNAVAILABLE."""

    def act(request: Message, context: grpc.ServicerContext, forward: Forward) -> Message:
        forward(request)
        context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset after the write")
        raise AssertionError("unreachable")

    return act


def sleep_then_forward(seconds: float) -> Action:
    """Answer late (after the client's deadline, if it is shorter)."""

    def act(request: Message, context: grpc.ServicerContext, forward: Forward) -> Message:
        time.sleep(seconds)
        return forward(request)

    return act


CONSENT_METHODS = (
    "CheckConsent",
    "BatchCheckConsent",
    "OptOut",
    "OptIn",
    "SendIfAllowed",
    "HandleInboundMessage",
    "ListConsentEvents",
    "GetMessageStatus",
)


class FakeConsentService(pb_grpc.ConsentServiceServicer):
    def __init__(self, upstream: str | None = None, upstream_api_key: str | None = None) -> None:
        # As FakeAdminService does: every RPC goes through _handle under its own name
        # (instance attributes shadow the servicer's UNIMPLEMENTED methods).
        for name in CONSENT_METHODS:
            setattr(self, name, functools.partial(self._handle, name))
        self.calls: list[Seen] = []
        self.script: dict[str, list[Action]] = defaultdict(list)
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(upstream) if upstream else None
        # The fake's own key for an upstream that requires one (callers' keys are not
        # passed on: tests send made-up keys through the fake).
        self._upstream_md = (
            (("authorization", f"Bearer {upstream_api_key}"),) if upstream_api_key else ()
        )
        self._stub = pb_grpc.ConsentServiceStub(self._channel) if self._channel else None
        self._admin_stub = (
            apb_grpc.ConsentAdminServiceStub(self._channel) if self._channel else None
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pb_grpc.add_ConsentServiceServicer_to_server(self, self.server)
        apb_grpc.add_ConsentAdminServiceServicer_to_server(FakeAdminService(self), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{port}"

    def start(self) -> FakeConsentService:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(0).wait(5)
        if self._channel:
            self._channel.close()

    def on(self, method: str, *actions: Action) -> FakeConsentService:
        """Queue actions for the next calls of ``method`` (then back to forwarding)."""
        self.script[method].extend(actions)
        return self

    def seen(self, method: str) -> list[Seen]:
        return [c for c in self.calls if c.method == method]

    def _forward(self, method: str, context: grpc.ServicerContext) -> Forward:
        stub = self._admin_stub if method in ADMIN_METHODS else self._stub

        def forward(request: Message) -> Message:
            if stub is None:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake has no upstream")
            try:
                response: Message = getattr(stub, method)(
                    request, timeout=10, metadata=self._upstream_md
                )
                return response
            except grpc.RpcError as err:
                context.set_trailing_metadata(err.trailing_metadata())  # type: ignore[arg-type]
                context.abort(err.code(), err.details() or "")
            raise AssertionError("unreachable")

        return forward

    def _handle(self, method: str, request: Message, context: grpc.ServicerContext) -> Any:
        with self._lock:
            md = {k: str(v) for k, v in context.invocation_metadata()}
            self.calls.append(Seen(method, request, md))
            queue = self.script.get(method)
            action = queue.pop(0) if queue else None
        forward = self._forward(method, context)
        if action is None:
            return forward(request)
        return action(request, context, forward)


ADMIN_METHODS = (
    "GetTenantSettings",
    "UpdateTenantSettings",
    "CreateApiKey",
    "ListApiKeys",
    "RevokeApiKey",
    "ForgetRecipient",
    "SetDeliveryProvider",
    "GetDeliveryProviders",
    "SetWhatsAppWebhook",
    "GetWhatsAppWebhook",
    "DeleteWhatsAppWebhook",
)


class FakeAdminService(apb_grpc.ConsentAdminServiceServicer):
    """The ConsentAdminService side of a FakeConsentService: the same call log and
    script (keyed by method name), forwarded to the upstream's admin service."""

    def __init__(self, fake: FakeConsentService) -> None:
        # Instance attributes shadow the servicer's UNIMPLEMENTED methods: every admin RPC
        # goes through the fake's _handle under its own name.
        for name in ADMIN_METHODS:
            setattr(self, name, functools.partial(fake._handle, name))


def opted_out_info(topic: str = "marketing") -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(
        reason="RECIPIENT_OPTED_OUT",
        domain="consent.v1",
        metadata={
            "topic": topic,
            "scope": "ALL",
            "since": "2024-05-01T10:00:00.000Z",
            "source": "SOURCE_KEYWORD",
            "channel": "WHATSAPP",
        },
    )


def bad_request(field: str, description: str) -> list[Message]:
    return [
        error_details_pb2.ErrorInfo(reason="INVALID_REQUEST", domain="consent.v1"),
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            ]
        ),
    ]


class _Allow(pb_grpc.ConsentServiceServicer):
    """CheckConsent answers allowed; nothing else is served."""

    def CheckConsent(
        self, request: pb.CheckConsentRequest, context: Any
    ) -> pb.CheckConsentResponse:
        return pb.CheckConsentResponse(allowed=True, topic=request.topic)


def allowing_server(port: int) -> grpc.Server:
    """A started server on ``port`` whose CheckConsent allows: a server to restart."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ConsentServiceServicer_to_server(_Allow(), server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    server.start()
    return server


@dataclass(frozen=True)
class RestartOnFirstRetry(Backoff):
    """A backoff that restarts the server (``restart``) when the first attempt has
    failed, then retries after 0.1, 0.2 and 0.3 s: every retry lands after the server
    is back and before gRPC's own reconnect backoff (0.8-1.2 s) would have ended."""

    restart: Callable[[], None] = lambda: None

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Restart on the first retry; 0.1 s more per retry."""
        if attempt == 0:
            self.restart()
        return 0.1 * (attempt + 1)


@contextlib.contextmanager
def restarting_server() -> Iterator[tuple[str, Callable[[], None], Backoff]]:
    """(target, stop, backoff): ``stop()`` stops the allowing server; a client retrying
    with ``backoff`` brings it back on the same port once its first attempt failed (a
    restart, a deploy), synchronously, so the test does not race a timer."""
    port = free_port()
    servers = [allowing_server(port)]

    def stop() -> None:
        servers[0].stop(0).wait()

    def restart() -> None:
        servers.append(allowing_server(port))

    try:
        yield f"127.0.0.1:{port}", stop, RestartOnFirstRetry(restart=restart)
    finally:
        for s in servers:
            s.stop(0)
