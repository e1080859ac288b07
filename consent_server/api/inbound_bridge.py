"""Feeds WhatsApp replies to the HandleInboundMessage servicer, in process.

Interim wiring: the webhook's ``on_inbound`` goes through the very servicer method
gRPC callers reach (decode, validation, error mapping), without a network hop.
When the handle-inbound use case lands in the domain, app.py passes that instead
and this module goes away.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.rpc import status_pb2

from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.errors import ConsentError, StoreUnavailable
from consent_server.domain.whatsapp import InboundReply

from . import convert as cv
from .consent_service import ConsentServicer


class InboundRefused(ConsentError):
    """HandleInboundMessage refused the reply for good (logged; the webhook answers 200)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        super().__init__(f"HandleInboundMessage: {code.name}: {message}")


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details


class _LocalContext:
    """The part of grpc.aio.ServicerContext the servicer uses: abort."""

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Any = (),
    ) -> NoReturn:
        for key, value in trailing_metadata or ():
            if key == "grpc-status-details-bin":  # prefer the rich status's message
                details = status_pb2.Status.FromString(value).message or details
        raise _Aborted(code, details)


class ServicerInbound:
    """An InboundHandler that calls ConsentServicer.HandleInboundMessage."""

    def __init__(self, servicer: ConsentServicer) -> None:
        self._servicer = servicer

    async def __call__(self, reply: InboundReply) -> None:
        """Hand one reply on; StoreUnavailable on UNAVAILABLE, InboundRefused otherwise."""
        request = pb.HandleInboundMessageRequest(
            tenant_id=reply.tenant_id,
            recipient=cv.recipient(reply.recipient),
            text=reply.text,
            button_payload=reply.button_payload,
            provider_message_id=reply.provider_message_id,
        )
        if reply.received_at_ms is not None:
            request.received_at.CopyFrom(cv.timestamp(reply.received_at_ms))
        try:
            await self._servicer.HandleInboundMessage(request, _LocalContext())  # type: ignore[arg-type]
        except _Aborted as exc:
            if exc.code is grpc.StatusCode.UNAVAILABLE:
                raise StoreUnavailable(exc.details) from None
            raise InboundRefused(exc.code, exc.details) from None
