"""WatchConsentEvents (server-streaming): the tenant's change feed on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.feed import ChangeEvent, ChangeFeed

from . import convert as cv
from .errors import abort

Ctx = grpc.aio.ServicerContext[Any, Any]


def change_event(value: ChangeEvent) -> pb.ChangeEvent:
    """A feed event on the wire: an erasure carries no recipient (no address)."""
    e = value.entry
    out = pb.ChangeEvent(
        event_id=value.event_id,
        recorded_at=cv.timestamp(e.recorded_at_ms),
        source_event_id=e.source_event_id,
        principal=e.principal,
    )
    if e.kind == "erasure":
        out.kind = pb.CHANGE_KIND_ERASURE
        if e.channel is not None:
            out.erased_channel = cv.channel_to_pb(e.channel)
        return out
    out.kind = pb.CHANGE_KIND_CONSENT
    rcpt = value.recipient
    if rcpt is not None:
        out.recipient.CopyFrom(cv.recipient(rcpt))
    out.topic = e.topic
    if e.action is not None:
        out.action = cv.action_to_pb(e.action)
    if e.source is not None:
        out.source = cv.source_to_pb(e.source)
    out.occurred_at.CopyFrom(cv.timestamp(e.occurred_at_ms))
    out.revision = e.revision
    out.status_changed = e.status_changed
    return out


class FeedHandlers:
    """WatchConsentEvents of ConsentService (mixed into its servicer)."""

    _feed: ChangeFeed | None

    async def WatchConsentEvents(
        self, request: pb.WatchConsentEventsRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchConsentEventsResponse]:
        """The first message carries the starting token; then one event per message."""
        try:
            if self._feed is None:
                raise RuntimeError("the change feed is not wired")
            positions = await self._feed.start(
                request.tenant_id, request.resume_token, request.from_oldest
            )
            yield pb.WatchConsentEventsResponse(
                resume_token=self._feed.token(request.tenant_id, positions)
            )
            async for ev in self._feed.watch(request.tenant_id, positions):
                yield pb.WatchConsentEventsResponse(
                    event=change_event(ev), resume_token=ev.resume_token
                )
        except Exception as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from exc


__all__ = ["FeedHandlers", "change_event"]
