"""Domain errors -> gRPC status codes with google.rpc rich details (SPEC §6)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from consent_server.domain.errors import (
    ConsentError,
    IdConflict,
    InvalidArgument,
    NotConfigured,
    NotFound,
    NotImplementedYet,
    ReplicationNotAcknowledged,
    SendBlocked,
    SettingsConflict,
    StoreUnavailable,
)
from consent_server.domain.masking import mask_address
from consent_server.domain.model import BlockReason, Scope

from .security_errors import security_status

DOMAIN = "consent.v1"
log = logging.getLogger("consent_server.api")


def _pack(*details: object) -> list[any_pb2.Any]:
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)  # type: ignore[arg-type]
        packed.append(a)
    return packed


def _info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)


def _rfc3339(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def to_status(exc: Exception) -> status_pb2.Status:
    """The google.rpc.Status for an error raised by the domain (or anything else)."""
    secured = security_status(exc)
    if secured is not None:
        return secured
    if isinstance(exc, InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in exc.violations
            ]
        )
        return status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message=f"invalid request: {exc}",
            details=_pack(_info("INVALID_REQUEST"), bad),
        )
    if isinstance(exc, SendBlocked):
        return _blocked_status(exc)
    if isinstance(exc, ReplicationNotAcknowledged):
        return status_pb2.Status(
            code=code_pb2.UNAVAILABLE,
            message=(
                "change applied on the Redis primary but not yet confirmed by its replicas: "
                "not acknowledged; retry with the same event_id / idempotency_key (a replay "
                "is never applied twice)"
            ),
            details=_pack(
                _info("REPLICATION_NOT_ACKNOWLEDGED"),
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)),
            ),
        )
    if isinstance(exc, StoreUnavailable):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))
        return status_pb2.Status(
            code=code_pb2.UNAVAILABLE,
            # Nothing was allowed or accepted by this call. But a store that timed out
            # rather than refused may still run a change it received, so the outcome of a
            # change is unknown: say so, and say how to retry safely.
            message=(
                "consent store unavailable: nothing was allowed or accepted by this call; "
                "a change or send may still have been recorded, so retry with the same "
                "event_id / idempotency_key (a replay is never applied twice)"
            ),
            details=_pack(_info("STORE_UNAVAILABLE"), retry),
        )
    if isinstance(exc, IdConflict):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=str(exc))
            ]
        )
        return status_pb2.Status(
            code=code_pb2.ALREADY_EXISTS, message=str(exc), details=_pack(_info(exc.reason), bad)
        )
    if isinstance(exc, NotFound):
        return status_pb2.Status(
            code=code_pb2.NOT_FOUND, message=str(exc), details=_pack(_info("MESSAGE_NOT_FOUND"))
        )
    if isinstance(exc, SettingsConflict):
        return status_pb2.Status(
            code=code_pb2.ABORTED,
            message=f"{exc}; nothing was written, read the settings again and retry",
            details=_pack(_info("SETTINGS_CONFLICT")),
        )
    if isinstance(exc, NotConfigured):
        return status_pb2.Status(
            code=code_pb2.FAILED_PRECONDITION,
            message=str(exc),
            details=_pack(_info("NOT_CONFIGURED")),
        )
    if isinstance(exc, NotImplementedYet):
        return status_pb2.Status(
            code=code_pb2.UNIMPLEMENTED, message=str(exc), details=_pack(_info("NOT_IMPLEMENTED"))
        )
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error", exc_info=exc, extra={"incident": incident})
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (incident {incident}); nothing was sent"
    )


def _blocked_status(exc: SendBlocked) -> status_pb2.Status:
    d = exc.decision
    who = f"recipient {mask_address(exc.recipient.address)} on {exc.recipient.channel.name}"
    meta = {"topic": exc.topic, "scope": d.decided_by.name, "channel": exc.recipient.channel.name}
    if d.block_reason is BlockReason.OPT_IN_REQUIRED or d.record is None:
        message = (
            f"topic '{exc.topic}' requires an explicit opt-in and {who} has none; "
            "record an OptIn with evidence of the recipient's consent before sending"
        )
        return status_pb2.Status(
            code=code_pb2.FAILED_PRECONDITION,
            message=message,
            details=_pack(_info(BlockReason.OPT_IN_REQUIRED.value, **meta)),
        )
    since = _rfc3339(d.record.occurred_at_ms)
    what = "all topics" if d.decided_by is Scope.ALL else f"topic '{exc.topic}'"
    meta.update(since=since, source=f"SOURCE_{d.record.source.name}")
    message = (
        f"{who} opted out of {what} at {since} (source SOURCE_{d.record.source.name}); "
        "nothing was sent. Only the recipient can lift this, by opting in again "
        "(e.g. replying START or using a re-subscribe link)"
    )
    return status_pb2.Status(
        code=code_pb2.FAILED_PRECONDITION,
        message=message,
        details=_pack(_info(BlockReason.RECIPIENT_OPTED_OUT.value, **meta)),
    )


async def abort(context: grpc.aio.ServicerContext[object, object], exc: Exception) -> None:
    """Abort the call with the rich status for ``exc`` (details in grpc-status-details-bin)."""
    st = to_status(exc)
    await context.abort(
        grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == st.code)),
        st.message,
        trailing_metadata=(("grpc-status-details-bin", st.SerializeToString()),),
    )


__all__ = ["ConsentError", "abort", "to_status"]
