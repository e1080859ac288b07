"""Security errors -> gRPC statuses with google.rpc details (used by errors.to_status)."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from consent_server.domain.auth import (
    ApiKeyNotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)

DOMAIN = "consent.v1"


def _pack(*details: object) -> list[any_pb2.Any]:
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)  # type: ignore[arg-type]
        packed.append(a)
    return packed


def security_status(exc: Exception) -> status_pb2.Status | None:
    """The status for an authentication, authorization or rate-limit error; else None.

    Messages are fixed texts plus what the caller itself sent (role, tenant asked for):
    never the key, never anything about another tenant.
    """
    if isinstance(exc, Unauthenticated):
        info = error_details_pb2.ErrorInfo(reason="UNAUTHENTICATED", domain=DOMAIN)
        return status_pb2.Status(
            code=code_pb2.UNAUTHENTICATED, message=str(exc), details=_pack(info)
        )
    if isinstance(exc, PermissionDenied):
        info = error_details_pb2.ErrorInfo(
            reason=exc.reason, domain=DOMAIN, metadata={"missing": exc.missing}
        )
        return status_pb2.Status(
            code=code_pb2.PERMISSION_DENIED, message=str(exc), details=_pack(info)
        )
    if isinstance(exc, RateLimited):
        seconds, ms = divmod(exc.retry_after_ms, 1000)
        retry = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=seconds, nanos=ms * 1_000_000)
        )
        info = error_details_pb2.ErrorInfo(
            reason="RATE_LIMITED",
            domain=DOMAIN,
            metadata={"retry_after_ms": str(exc.retry_after_ms)},
        )
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject="api_key", description="requests per second of this API key"
                )
            ]
        )
        return status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED, message=str(exc), details=_pack(info, retry, quota)
        )
    if isinstance(exc, ApiKeyNotFound):
        info = error_details_pb2.ErrorInfo(reason="API_KEY_NOT_FOUND", domain=DOMAIN)
        return status_pb2.Status(code=code_pb2.NOT_FOUND, message=str(exc), details=_pack(info))
    return None
