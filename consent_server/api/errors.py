"""The one error mapper: domain errors -> gRPC statuses with google.rpc rich details.

Every ErrorInfo reason comes from the generated ``ErrorReason`` enum, and every error
the server answers (a failed call or one item of a batch) is built here from the
``RULES`` table. Adding a reason is one enum value in consent.proto plus one entry
in ``RULES`` (tests/test_error_contract.py keeps the two in step).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.auth import (
    ApiKeyNotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from consent_server.domain.change_webhooks import ChangeWebhookNotFound
from consent_server.domain.errors import (
    ConsentError,
    FieldViolation,
    IdConflict,
    InvalidArgument,
    NotConfigured,
    NotFound,
    ReplicationNotAcknowledged,
    SendBlocked,
    SettingsConflict,
    SettingsVersionMismatch,
    StoreUnavailable,
    TenantNotEmpty,
    TenantNotFound,
)
from consent_server.domain.feed import FeedTokenExpired
from consent_server.domain.masking import mask_address
from consent_server.domain.model import BlockReason, Scope

DOMAIN = "consent.v1"
log = logging.getLogger("consent_server.api")

Reason: TypeAlias = pb.ErrorReason.ValueType

# The wire reason of each way a send can be blocked (also CheckConsentResponse.reason).
BLOCK_REASONS: Mapping[BlockReason, Reason] = {
    BlockReason.RECIPIENT_OPTED_OUT: pb.RECIPIENT_OPTED_OUT,
    BlockReason.OPT_IN_REQUIRED: pb.OPT_IN_REQUIRED,
}


def reason_name(reason: Reason) -> str:
    """The ErrorInfo.reason string of an ErrorReason value (its name)."""
    return pb.ErrorReason.Name(reason)


def _by_name(name: str) -> Reason:
    """An ErrorReason from a name a domain error carries (ValueError if not in the enum)."""
    return pb.ErrorReason.Value(name)


@dataclass(frozen=True, slots=True)
class Rule:
    """How one domain error class is answered.

    ``reasons`` lists every reason the rule may send; when there are several,
    ``reason`` picks the one for an instance (a pick outside ``reasons`` is a bug and
    answers INTERNAL). The other callables add the message, ErrorInfo metadata and the
    details that follow the ErrorInfo.
    """

    code: int
    reasons: tuple[Reason, ...]
    reason: Callable[[Any], Reason] | None = None
    message: Callable[[Any], str] = str
    metadata: Callable[[Any], dict[str, str]] = field(default=lambda _: {})
    details: Callable[[Any], Sequence[Message]] = field(default=lambda _: ())


def _bad_request(violations: Iterable[tuple[str, str]]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )


def _retry(ms: int) -> error_details_pb2.RetryInfo:
    seconds, rest = divmod(ms, 1000)
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=rest * 1_000_000)
    )


def _rfc3339(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _blocked_reason(exc: SendBlocked) -> Reason:
    d = exc.decision
    if d.block_reason is BlockReason.OPT_IN_REQUIRED or d.record is None:
        return pb.OPT_IN_REQUIRED
    return pb.RECIPIENT_OPTED_OUT


def _blocked_metadata(exc: SendBlocked) -> dict[str, str]:
    d = exc.decision
    meta = {"topic": exc.topic, "scope": d.decided_by.name, "channel": exc.recipient.channel.name}
    if _blocked_reason(exc) == pb.RECIPIENT_OPTED_OUT and d.record is not None:
        meta.update(
            since=_rfc3339(d.record.occurred_at_ms), source=f"SOURCE_{d.record.source.name}"
        )
    return meta


def _blocked_message(exc: SendBlocked) -> str:
    d = exc.decision
    who = f"recipient {mask_address(exc.recipient.address)} on {exc.recipient.channel.name}"
    if _blocked_reason(exc) == pb.OPT_IN_REQUIRED or d.record is None:
        return (
            f"topic '{exc.topic}' requires an explicit opt-in and {who} has none; "
            "record an OptIn with evidence of the recipient's consent before sending"
        )
    since = _rfc3339(d.record.occurred_at_ms)
    what = "all topics" if d.decided_by is Scope.ALL else f"topic '{exc.topic}'"
    return (
        f"{who} opted out of {what} at {since} (source SOURCE_{d.record.source.name}); "
        "nothing was sent. Only the recipient can lift this, by opting in again "
        "(e.g. replying START or using a re-subscribe link)"
    )


def _retry_safely(reason: Reason, what: str) -> Rule:
    """UNAVAILABLE whose change may have been recorded: ``what`` happened, then how to
    retry without applying the change twice (a RetryInfo of one second)."""
    message = (
        f"{what} retry with the same event_id / idempotency_key (a replay is never applied twice)"
    )
    return Rule(
        code_pb2.UNAVAILABLE,
        (reason,),
        message=lambda _: message,
        details=lambda _: (_retry(1000),),
    )


# Looked up along the exception's MRO, so a subclass's rule wins over its base's.
RULES: Mapping[type[Exception], Rule] = {
    Unauthenticated: Rule(code_pb2.UNAUTHENTICATED, (pb.UNAUTHENTICATED,)),
    PermissionDenied: Rule(
        code_pb2.PERMISSION_DENIED,
        (pb.ROLE_NOT_ALLOWED, pb.TENANT_NOT_ALLOWED),
        reason=lambda e: _by_name(e.reason),
        metadata=lambda e: {"missing": e.missing},
    ),
    RateLimited: Rule(
        code_pb2.RESOURCE_EXHAUSTED,
        (pb.RATE_LIMITED,),
        metadata=lambda e: {"retry_after_ms": str(e.retry_after_ms)},
        details=lambda e: (
            _retry(e.retry_after_ms),
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject="api_key", description="requests per second of this API key"
                    )
                ]
            ),
        ),
    ),
    ApiKeyNotFound: Rule(code_pb2.NOT_FOUND, (pb.API_KEY_NOT_FOUND,)),
    InvalidArgument: Rule(
        code_pb2.INVALID_ARGUMENT,
        (pb.INVALID_REQUEST,),
        message=lambda e: f"invalid request: {e}",
        details=lambda e: (_bad_request((v.field, v.description) for v in e.violations),),
    ),
    SendBlocked: Rule(
        code_pb2.FAILED_PRECONDITION,
        (pb.RECIPIENT_OPTED_OUT, pb.OPT_IN_REQUIRED),
        reason=_blocked_reason,
        message=_blocked_message,
        metadata=_blocked_metadata,
    ),
    ReplicationNotAcknowledged: _retry_safely(
        pb.REPLICATION_NOT_ACKNOWLEDGED,
        "change applied on the Redis primary but not yet confirmed by its replicas: "
        "not acknowledged;",
    ),
    # Nothing was allowed or accepted by this call. But a store that timed out rather
    # than refused may still run a change it received, so the outcome of a change is
    # unknown: say so, and say how to retry safely.
    StoreUnavailable: _retry_safely(
        pb.STORE_UNAVAILABLE,
        "consent store unavailable: nothing was allowed or accepted by this call; "
        "a change or send may still have been recorded, so",
    ),
    IdConflict: Rule(
        code_pb2.ALREADY_EXISTS,
        (pb.EVENT_ID_REUSED, pb.IDEMPOTENCY_KEY_REUSED, pb.TENANT_ALREADY_EXISTS),
        reason=lambda e: _by_name(e.reason),
        details=lambda e: (_bad_request([(e.field, str(e))]),),
    ),
    NotFound: Rule(code_pb2.NOT_FOUND, (pb.MESSAGE_NOT_FOUND,)),
    TenantNotFound: Rule(code_pb2.NOT_FOUND, (pb.TENANT_NOT_FOUND,)),
    SettingsConflict: Rule(
        code_pb2.ABORTED,
        (pb.SETTINGS_CONFLICT,),
        message=lambda e: f"{e}; nothing was written, read the settings again and retry",
    ),
    SettingsVersionMismatch: Rule(
        code_pb2.ABORTED,
        (pb.SETTINGS_VERSION_MISMATCH,),
        message=lambda e: f"{e}; nothing was written, read the settings again and retry",
    ),
    NotConfigured: Rule(code_pb2.FAILED_PRECONDITION, (pb.NOT_CONFIGURED,)),
    TenantNotEmpty: Rule(code_pb2.FAILED_PRECONDITION, (pb.TENANT_NOT_EMPTY,)),
    FeedTokenExpired: Rule(code_pb2.OUT_OF_RANGE, (pb.CHANGE_FEED_TOKEN_EXPIRED,)),
    ChangeWebhookNotFound: Rule(code_pb2.NOT_FOUND, (pb.CHANGE_WEBHOOK_NOT_FOUND,)),
}


def sent_reasons() -> set[Reason]:
    """Every ErrorReason the server can send (what the contract test checks)."""
    return {r for rule in RULES.values() for r in rule.reasons}


def _pack(details: Iterable[Message]) -> list[any_pb2.Any]:
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return packed


def _rule_for(exc: Exception) -> Rule | None:
    for cls in type(exc).__mro__:
        rule = RULES.get(cls)
        if rule is not None:
            return rule
    return None


def _internal(exc: Exception) -> status_pb2.Status:
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error", exc_info=exc, extra={"incident": incident})
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (incident {incident}); nothing was sent"
    )


def to_status(exc: Exception) -> status_pb2.Status:
    """The google.rpc.Status for an error raised by the domain (or anything else)."""
    rule = _rule_for(exc)
    if rule is None:
        return _internal(exc)
    try:
        reason = rule.reason(exc) if rule.reason else rule.reasons[0]
    except ValueError:  # a domain reason name that is not in the enum: a bug
        return _internal(exc)
    if reason not in rule.reasons:
        return _internal(exc)
    info = error_details_pb2.ErrorInfo(
        reason=reason_name(reason), domain=DOMAIN, metadata=rule.metadata(exc)
    )
    return status_pb2.Status(
        code=rule.code, message=rule.message(exc), details=_pack([info, *rule.details(exc)])
    )


def item_status(violations: Sequence[FieldViolation]) -> status_pb2.Status:
    """The status of one batch item that could not be decided (its bad fields)."""
    return to_status(InvalidArgument(list(violations)))


async def abort(context: grpc.aio.ServicerContext[object, object], exc: Exception) -> None:
    """Abort the call with the rich status for ``exc`` (details in grpc-status-details-bin)."""
    st = to_status(exc)
    await context.abort(
        grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == st.code)),
        st.message,
        trailing_metadata=(("grpc-status-details-bin", st.SerializeToString()),),
    )


__all__ = ["RULES", "ConsentError", "Rule", "abort", "item_status", "sent_reasons", "to_status"]
