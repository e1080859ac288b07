"""Helpers for the security tests: keys, metadata, rich error details, TLS-aware servers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc, consent_pb2_grpc

from .support import ServerProcess

ROLES = {
    "admin": apb.API_KEY_ROLE_ADMIN,
    "writer": apb.API_KEY_ROLE_WRITER,
    "sender": apb.API_KEY_ROLE_SENDER,
    "reader": apb.API_KEY_ROLE_READER,
}


def md(key: str | None) -> tuple[tuple[str, str], ...]:
    """The authorization metadata for a key (none for None)."""
    return (("authorization", f"Bearer {key}"),) if key else ()


def details(err: grpc.RpcError) -> dict[str, Any]:
    """The unpacked google.rpc details of a failed call, by type name."""
    trailing = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    raw = trailing.get("grpc-status-details-bin")
    return {} if raw is None else _unpacked(status_pb2.Status.FromString(raw))


def rich(err: grpc.RpcError) -> tuple[status_pb2.Status, dict[str, Any]]:
    """The google.rpc.Status of a failed call (it must carry one) and its unpacked
    details by type name."""
    trailing = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    st = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    return st, _unpacked(st)


def _unpacked(st: status_pb2.Status) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for any_ in st.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.QuotaFailure,
        ):
            if any_.Is(cls.DESCRIPTOR):
                msg = cls()
                any_.Unpack(msg)
                out[cls.DESCRIPTOR.name] = msg
    return out


def status_fields(st: status_pb2.Status) -> list[str]:
    """The fields a google.rpc.Status's BadRequest detail names, in its order ([] without
    one): a failed call's, or a batch item's error."""
    return _fields(_unpacked(st))


def bad_fields(err: grpc.RpcError) -> list[str]:
    """The fields a failed call's BadRequest detail names, in its order ([] without one)."""
    return _fields(details(err))


def _fields(unpacked: dict[str, Any]) -> list[str]:
    bad = unpacked.get("BadRequest")
    return [v.field for v in bad.field_violations] if bad is not None else []


def code_of(fn: Callable[..., Any], request: Any, key: str | None) -> grpc.StatusCode:
    """The status code of one call (OK when it succeeds)."""
    try:
        fn(request, metadata=md(key), timeout=10)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


class Stubs:
    """Both services' stubs on one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.consent = consent_pb2_grpc.ConsentServiceStub(channel)
        self.admin = admin_pb2_grpc.ConsentAdminServiceStub(channel)

    def create_key(
        self, admin_key: str, tenant: str, role: str, **kw: Any
    ) -> apb.CreateApiKeyResponse:
        resp: apb.CreateApiKeyResponse = self.admin.CreateApiKey(
            apb.CreateApiKeyRequest(tenant_id=tenant, role=ROLES[role], **kw),
            metadata=md(admin_key),
            timeout=10,
        )
        return resp


class TlsServerProcess(ServerProcess):
    """A server process whose readiness is probed over TLS (optionally with a client cert)."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        ca: bytes,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
    ) -> None:
        super().__init__(env)
        self.credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=client_key, certificate_chain=client_cert
        )

    def health_channel(self) -> grpc.Channel:
        return grpc.secure_channel(self.target, self.credentials)


def failure(fn: Callable[..., Any], request: Any, key: str | None, **kw: Any) -> grpc.RpcError:
    """The error of a call that must fail (AssertionError when it succeeds)."""
    metadata = kw.pop("metadata", None)
    timeout = kw.pop("timeout", 10 if "wait_for_ready" not in kw else 1)
    try:
        fn(request, metadata=md(key) if metadata is None else metadata, timeout=timeout, **kw)
    except grpc.RpcError as err:
        return err
    raise AssertionError(f"call succeeded: {request!r}")
