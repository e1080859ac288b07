"""The consent.v1.ConsentService servicer: decode, call the domain, encode."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pb_grpc
from consent_server.domain.errors import ConsentError, NotConfigured, SendBlocked
from consent_server.domain.feed import ChangeFeed
from consent_server.domain.links_service import ConsentLinks
from consent_server.domain.model import Action, Decision
from consent_server.domain.service import BatchItemError, ChangeResult, ConsentAuthority
from consent_server.domain.validation import RawRecipient
from consent_server.metrics import ACCEPTED, DECISIONS

from . import batch_encoding
from . import convert as cv
from .auth import current_principal
from .errors import abort, item_status
from .feed_service import FeedHandlers

Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Any, Ctx], Awaitable[Resp]]


def rpc(fn: Handler[Resp]) -> Handler[Resp]:
    """Map every exception to a rich gRPC status; nothing escapes as a bare string."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Ctx) -> Resp:
        try:
            return await fn(self, request, context)
        except Exception as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from exc  # abort always raises

    return wrapper


# consent_decisions_total's children by (rpc, allowed, reason, scope): labels() costs
# more than the increment, and a batch counts every item.
_DECISION_CHILDREN: dict[tuple[str, bool, str, str], Any] = {}


_SEND_ALLOWED_RECORD = DECISIONS.labels("SendIfAllowed", "allowed", "none", "record")
_SEND_ALLOWED_DEFAULT = DECISIONS.labels("SendIfAllowed", "allowed", "none", "default_policy")


def _decision_child(rpc_name: str, decision: Decision) -> Any:
    """The ``consent_decisions_total`` child of ``rpc_name``'s answers like ``decision``."""
    reason = decision.block_reason.value if decision.block_reason else "none"
    key = (rpc_name, decision.allowed, reason, decision.decided_by.value)
    child = _DECISION_CHILDREN.get(key)
    if child is None:
        child = _DECISION_CHILDREN[key] = DECISIONS.labels(
            rpc_name, "allowed" if decision.allowed else "blocked", reason, key[3]
        )
    return child


def count_decision(rpc_name: str, decision: Decision) -> None:
    """One ``consent_decisions_total`` increment for an answered decision."""
    _decision_child(rpc_name, decision).inc()


def _count_batch(decision: Decision, n: int) -> None:
    """``n`` BatchCheckConsent decisions like ``decision`` in consent_decisions_total."""
    _decision_child("BatchCheckConsent", decision).inc(n)


def _recipient(request: Any) -> RawRecipient | None:
    """The request's ``recipient`` field, None when it is not set."""
    return cv.optional_recipient(request.HasField("recipient"), request.recipient)


class _Recorder:
    """Takes the method handlers a generated ``add_*_to_server`` registers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_to_server(servicer: ConsentServicer, server: grpc.aio.Server) -> None:
    """pb_grpc.add_ConsentServiceServicer_to_server, except that BatchCheckConsent is
    served by BatchCheckConsentBytes, whose bytes go out with no response serializer."""
    recorder = _Recorder()
    pb_grpc.add_ConsentServiceServicer_to_server(servicer, cast(Any, recorder))
    handlers = recorder.handlers
    handlers["BatchCheckConsent"] = grpc.unary_unary_rpc_method_handler(
        servicer.BatchCheckConsentBytes,
        request_deserializer=pb.BatchCheckConsentRequest.FromString,
        response_serializer=None,  # the handler returns the serialized response
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(recorder.service, handlers),)
    )
    cast(Any, server).add_registered_method_handlers(recorder.service, handlers)


def principal_of(context: Ctx) -> str:
    """The calling principal: the API key id set by the auth interceptor, or "anonymous"."""
    return current_principal()


class ConsentServicer(FeedHandlers, pb_grpc.ConsentServiceServicer):
    """Serves consent.v1.ConsentService on a ConsentAuthority (and the change feed)."""

    def __init__(
        self,
        authority: ConsentAuthority,
        links: ConsentLinks | None = None,
        feed: ChangeFeed | None = None,
    ) -> None:
        self._a = authority
        self._links = links
        self._feed = feed

    @rpc
    async def CheckConsent(
        self, request: pb.CheckConsentRequest, context: Ctx
    ) -> pb.CheckConsentResponse:
        result = await self._a.check(
            request.tenant_id,
            _recipient(request),
            request.topic,
            cv.raw_timestamp(request.HasField("at"), request.at),
        )
        count_decision("CheckConsent", result.decision)
        response = cv.check_response(result.recipient, result.topic, result.decision)
        if result.deciding_event is not None:
            response.deciding_event.CopyFrom(cv.event(result.deciding_event))
        return response

    @rpc
    async def BatchCheckConsentBytes(
        self, request: pb.BatchCheckConsentRequest, context: Ctx
    ) -> bytes:
        """BatchCheckConsent as served: the response's bytes (api/batch_encoding.py), the
        same bytes as BatchCheckConsent's message serialized. ``at`` keeps its own path."""
        if request.HasField("at"):
            return (await self._batch_reference(request)).SerializeToString()
        answers = await self._a.batch_decide(
            request.tenant_id, request.topic, cv.raw_recipients(request.recipients)
        )
        return batch_encoding.encode(answers, _count_batch)

    @rpc
    async def BatchCheckConsent(
        self, request: pb.BatchCheckConsentRequest, context: Ctx
    ) -> pb.BatchCheckConsentResponse:
        """The reference: one message per item (the point-in-time path serves it)."""
        return await self._batch_reference(request)

    async def _batch_reference(
        self, request: pb.BatchCheckConsentRequest
    ) -> pb.BatchCheckConsentResponse:
        results = await self._a.batch_check(
            request.tenant_id,
            request.topic,
            [cv.raw_recipient(r) for r in request.recipients],
            cv.raw_timestamp(request.HasField("at"), request.at),
        )
        out = pb.BatchCheckConsentResponse()
        for item in results:
            if isinstance(item, BatchItemError):
                out.results.add(error=item_status(item.violations))
            else:
                count_decision("BatchCheckConsent", item.decision)
                decision = out.results.add().decision
                cv.fill_check_response(decision, item.recipient, item.topic, item.decision)
                if item.deciding_event is not None:
                    decision.deciding_event.CopyFrom(cv.event(item.deciding_event))
        return out

    async def _change(self, action: Action, request: Any, context: Ctx) -> ChangeResult:
        return await self._a.change(
            action,
            tenant_id=request.tenant_id,
            recipient=_recipient(request),
            topic=request.topic,
            source=cv.source(request.source),
            evidence=request.evidence,
            occurred_at=cv.raw_timestamp(request.HasField("occurred_at"), request.occurred_at),
            event_id=request.event_id,
            principal=principal_of(context),
        )

    @staticmethod
    def _change_fields(result: ChangeResult) -> dict[str, Any]:
        o = result.outcome
        return {
            "applied": o.applied,
            "changed": o.changed,
            "status": cv.status(o.status),
            "revision": o.revision,
            "event_id": o.event_id,
            "duplicate": o.duplicate,
            "recipient": cv.recipient(result.recipient),
            "topic": result.topic,
            "recorded_at": cv.timestamp(o.recorded_at_ms),
        }

    @rpc
    async def OptOut(self, request: pb.OptOutRequest, context: Ctx) -> pb.OptOutResponse:
        result = await self._change(Action.OPT_OUT, request, context)
        return pb.OptOutResponse(**self._change_fields(result))

    @rpc
    async def OptIn(self, request: pb.OptInRequest, context: Ctx) -> pb.OptInResponse:
        result = await self._change(Action.OPT_IN, request, context)
        return pb.OptInResponse(**self._change_fields(result))

    @rpc
    async def SendIfAllowed(
        self, request: pb.SendIfAllowedRequest, context: Ctx
    ) -> pb.SendIfAllowedResponse:
        try:
            result = await self._a.send(
                tenant_id=request.tenant_id,
                recipient=_recipient(request),
                topic=request.topic,
                message=cv.raw_message(request.HasField("message"), request.message),
                idempotency_key=request.idempotency_key,
                not_after=cv.raw_timestamp(request.HasField("not_after"), request.not_after),
                metadata=dict(request.metadata),
            )
        except SendBlocked as exc:
            count_decision("SendIfAllowed", exc.decision)
            raise
        acc = result.accepted
        # The send script answers the revision, not which record allowed it.
        (_SEND_ALLOWED_RECORD if acc.consent_revision else _SEND_ALLOWED_DEFAULT).inc()
        if not acc.duplicate:
            ACCEPTED.inc()
        return pb.SendIfAllowedResponse(
            message_id=acc.message_id,
            accepted_at=cv.timestamp(acc.accepted_at_ms),
            consent_revision=acc.consent_revision,
            duplicate=acc.duplicate,
            recipient=cv.recipient(result.recipient),
        )

    @rpc
    async def HandleInboundMessage(
        self, request: pb.HandleInboundMessageRequest, context: Ctx
    ) -> pb.HandleInboundMessageResponse:
        result = await self._a.inbound(
            tenant_id=request.tenant_id,
            recipient=_recipient(request),
            text=request.text,
            button_payload=request.button_payload,
            provider_message_id=request.provider_message_id,
            received_at=cv.raw_timestamp(request.HasField("received_at"), request.received_at),
            principal=principal_of(context),
        )
        return pb.HandleInboundMessageResponse(
            action=cv.inbound_action(result.action),
            matched_keyword=result.matched_keyword,
            reply_text=result.reply_text,
            reply_message_id=result.reply_message_id,
            revision=result.revision,
        )

    @rpc
    async def ListConsentEvents(
        self, request: pb.ListConsentEventsRequest, context: Ctx
    ) -> pb.ListConsentEventsResponse:
        page = await self._a.history(
            request.tenant_id,
            _recipient(request),
            request.page_size,
            request.page_token,
        )
        return pb.ListConsentEventsResponse(
            events=[cv.event(e) for e in page.events],
            next_page_token=page.next_page_token,
            recipient=cv.recipient(page.recipient),
        )

    @rpc
    async def GetMessageStatus(
        self, request: pb.GetMessageStatusRequest, context: Ctx
    ) -> pb.GetMessageStatusResponse:
        info = await self._a.message_status(request.tenant_id, request.message_id)
        return pb.GetMessageStatusResponse(
            message_id=info.message_id,
            status=cv.message_state(info.state),
            attempts=info.attempts,
            last_error=info.last_error,
            provider_message_id=info.provider_message_id,
            accepted_at=cv.timestamp(info.accepted_at_ms),
            updated_at=cv.timestamp(info.updated_at_ms),
            recipient=cv.recipient(info.recipient),
            topic=info.topic,
        )

    @rpc
    async def CreateConsentLink(
        self, request: pb.CreateConsentLinkRequest, context: Ctx
    ) -> pb.CreateConsentLinkResponse:
        if self._links is None:
            raise NotConfigured("consent links are not configured on this server")
        links = await self._links.create(
            request.tenant_id,
            _recipient(request),
            request.topic,
            request.ttl_seconds,
            short=request.short_links,
        )
        return pb.CreateConsentLinkResponse(
            opt_out_url=links.opt_out_url,
            resubscribe_url=links.resubscribe_url,
            list_unsubscribe=links.list_unsubscribe,
            list_unsubscribe_post=links.list_unsubscribe_post,
            opt_out_token_id=links.opt_out_token_id,
            resubscribe_token_id=links.resubscribe_token_id,
            expires_at=cv.timestamp(links.expires_at_s * 1000),
            recipient=cv.recipient(links.recipient),
            topic=links.topic,
            short_opt_out_url=links.short_opt_out_url,
            short_resubscribe_url=links.short_resubscribe_url,
        )


__all__ = ["ConsentError", "ConsentServicer"]
