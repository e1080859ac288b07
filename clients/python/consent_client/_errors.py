"""Typed exceptions built from gRPC statuses and their google.rpc rich details.

Our exception hierarchy::

    ConsentError                  any failed call; .code .message .reason .metadata .details
    ├── InvalidArgument           INVALID_ARGUMENT; .field_violations [(field, description)]
    │   └── ClientValidationError the client refused an argument before sending (also a
    │                             ValueError); nothing was sent
    ├── FailedPrecondition        FAILED_PRECONDITION (reason not one of the below)
    │   └── SendBlocked           the send was not accepted; .topic .scope .since .source .channel
    │       ├── RecipientOptedOut reason RECIPIENT_OPTED_OUT: the recipient opted out
    │       └── OptInRequired     reason OPT_IN_REQUIRED: REQUIRE_OPT_IN and no opt-in
    ├── AlreadyExists             ALREADY_EXISTS (EVENT_ID_REUSED, IDEMPOTENCY_KEY_REUSED)
    ├── NotFound                  NOT_FOUND (e.g. MESSAGE_NOT_FOUND)
    ├── Unauthenticated           UNAUTHENTICATED: missing or unknown API key
    ├── PermissionDenied          PERMISSION_DENIED: the key's role may not do this
    ├── ResourceExhausted         RESOURCE_EXHAUSTED; .retry_delay
    ├── Unavailable               UNAVAILABLE (server or its store unreachable); .retry_delay
    ├── DeadlineExceeded          DEADLINE_EXCEEDED: the call's deadline passed
    ├── Unimplemented             UNIMPLEMENTED: the server does not serve this RPC (yet)
    ├── InternalError             INTERNAL / DATA_LOSS: a server bug; nothing was sent
    └── OtherError                any other status code (CANCELLED, ABORTED, UNKNOWN...)

Every exception raised for a failed call chains the original ``grpc.RpcError`` as
``__cause__``. ``reason`` and ``metadata`` come from the ``google.rpc.ErrorInfo``
detail (empty when the server sent none); ``details`` holds every unpacked detail
message (ErrorInfo, BadRequest, RetryInfo, ...) in the order the server sent them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import ClassVar, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from ._types import Channel, Scope, Source
from .v1 import consent_pb2 as pb

STATUS_DETAILS_KEY = "grpc-status-details-bin"

_M = TypeVar("_M", bound=Message)
_E = TypeVar("_E", bound=enum.StrEnum)

_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)


class ConsentError(Exception):
    """A call to the consent authority failed.

    Attributes:
        code: the gRPC status code.
        message: the server's human-readable message.
        reason: ``ErrorInfo.reason`` (e.g. ``"RECIPIENT_OPTED_OUT"``), "" if none.
        metadata: ``ErrorInfo.metadata`` (empty if none).
        details: every rich detail message of the status, unpacked.
        retry_delay: seconds from ``RetryInfo.retry_delay``, None if the server sent none.
        status: the ``google.rpc.Status`` the error was built from, if the server sent one.
    """

    grpc_code: ClassVar[grpc.StatusCode | None] = None

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        details: Sequence[Message] = (),
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: Mapping[str, str] = dict(metadata or {})
        self.details: tuple[Message, ...] = tuple(details)
        self.status = status
        self.retry_delay: float | None = None
        for d in self.details:
            if isinstance(d, error_details_pb2.RetryInfo) and d.HasField("retry_delay"):
                self.retry_delay = d.retry_delay.ToTimedelta().total_seconds()

    def __reduce__(self) -> tuple[type[ConsentError], tuple[object, ...]]:
        args = (
            self.code,
            self.message,
            self.reason,
            dict(self.metadata),
            self.details,
            self.status,
        )
        return (type(self), args)

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(code={self.code.name}, reason={self.reason!r}, message={self.message!r})"

    def detail(self, cls: type[_M]) -> _M | None:
        """The first rich detail of type ``cls`` (e.g. ``ErrorInfo``), or None."""
        for d in self.details:
            if isinstance(d, cls):
                return d
        return None


class InvalidArgument(ConsentError):
    """INVALID_ARGUMENT: the request broke a documented limit; nothing was written.

    ``field_violations`` lists ``(field, description)`` from the ``BadRequest`` detail,
    e.g. ``[("recipient.address", "not a possible phone number")]``.
    """

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT

    @property
    def field_violations(self) -> list[tuple[str, str]]:
        """``(field, description)`` for each field the server named."""
        out: list[tuple[str, str]] = []
        for d in self.details:
            if isinstance(d, error_details_pb2.BadRequest):
                out.extend((v.field, v.description) for v in d.field_violations)
        return out

    @property
    def fields(self) -> list[str]:
        """The names of the bad fields."""
        return [f for f, _ in self.field_violations]


class ClientValidationError(InvalidArgument, ValueError):
    """An argument the client refused before sending anything: nothing reached the server.

    It is an :class:`InvalidArgument` (so one ``except`` handles the client's and the
    server's refusals alike, and ``field_violations`` names the field when known) and a
    ``ValueError``. ``code`` is INVALID_ARGUMENT; ``reason`` is empty (the server set none).
    """

    def __str__(self) -> str:
        # The message alone, as the ValueError it also is (no server status to name).
        return self.message


def client_validation_error(message: str, field: str = "") -> ClientValidationError:
    """The error for an argument refused locally; ``field`` as the server would name it."""
    details: tuple[Message, ...] = ()
    if field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        details = (error_details_pb2.BadRequest(field_violations=[violation]),)
    return ClientValidationError(grpc.StatusCode.INVALID_ARGUMENT, message, details=details)


class FailedPrecondition(ConsentError):
    """FAILED_PRECONDITION: the system is not in a state where the call can succeed."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class SendBlocked(FailedPrecondition):
    """The message was not accepted because consent does not allow it.

    Attributes (from the ``ErrorInfo`` metadata):
        topic: the topic of the send.
        scope: :class:`Scope` that decided (``ALL``, ``TOPIC`` or ``DEFAULT_POLICY``).
        since: when the recipient opted out (tz-aware UTC), None when not sent.
        source: :class:`Source` of the opt-out, None when not sent.
        channel: :class:`Channel` of the recipient, None when not sent.
    """

    @property
    def topic(self) -> str:
        """The topic the send was about."""
        return self.metadata.get("topic", "")

    @property
    def scope(self) -> Scope | None:
        """Which record blocked the send."""
        return _parse_enum(Scope, self.metadata.get("scope", ""), "SCOPE_")

    @property
    def since(self) -> datetime | None:
        """When the recipient opted out (tz-aware UTC)."""
        raw = self.metadata.get("since", "")
        if not raw:
            return None
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            return None

    @property
    def source(self) -> Source | None:
        """Where the blocking opt-out came from."""
        return _parse_enum(Source, self.metadata.get("source", ""), "SOURCE_")

    @property
    def channel(self) -> Channel | None:
        """The recipient's channel."""
        return _parse_enum(Channel, self.metadata.get("channel", ""), "CHANNEL_")


class RecipientOptedOut(SendBlocked):
    """The recipient opted out of the topic or of all topics; only they can opt back in."""


class OptInRequired(SendBlocked):
    """The topic requires an explicit opt-in and the recipient has none."""


class AlreadyExists(ConsentError):
    """An event_id or idempotency_key was reused for a different request (reason
    ``EVENT_ID_REUSED`` / ``IDEMPOTENCY_KEY_REUSED``); nothing was written."""

    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class NotFound(ConsentError):
    """NOT_FOUND: e.g. no message with that id exists for the tenant."""

    grpc_code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(ConsentError):
    """UNAUTHENTICATED: the API key is missing, unknown or revoked."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ConsentError):
    """PERMISSION_DENIED: the API key may not do this (role or tenant)."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ConsentError):
    """RESOURCE_EXHAUSTED: a rate limit or size limit; see ``retry_delay``."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ConsentError):
    """UNAVAILABLE: the server or its store cannot be reached; nothing was allowed or
    accepted. A change sent to a slow store may still be recorded: retry with the same
    event_id / idempotency_key. Raised after the client's retries ran out;
    ``retry_delay`` is the server's hint (RetryInfo), if any."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ConsentError):
    """DEADLINE_EXCEEDED: the call did not finish within its timeout. For writes the
    outcome is unknown; repeat them with the same event_id / idempotency_key."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(ConsentError):
    """UNIMPLEMENTED: the server does not serve this RPC (yet)."""

    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(ConsentError):
    """INTERNAL or DATA_LOSS: a fault inside the server; the message names an incident id."""

    grpc_code = grpc.StatusCode.INTERNAL


class OtherError(ConsentError):
    """Any status code without a class of its own (CANCELLED, ABORTED, UNKNOWN...)."""


# Each class names its own code (grpc_code); DATA_LOSS is a server fault too.
_BY_CODE: dict[grpc.StatusCode, type[ConsentError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        FailedPrecondition,
        NotFound,
        AlreadyExists,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
        InternalError,
    )
    if cls.grpc_code is not None
}
_BY_CODE[grpc.StatusCode.DATA_LOSS] = InternalError

_BY_REASON: dict[str, type[ConsentError]] = {
    pb.ErrorReason.Name(pb.RECIPIENT_OPTED_OUT): RecipientOptedOut,
    pb.ErrorReason.Name(pb.OPT_IN_REQUIRED): OptInRequired,
}


def _parse_enum(cls: type[_E], raw: str, prefix: str) -> _E | None:
    key = raw.strip().upper().removeprefix(prefix).lower()
    if not key:
        return None
    try:
        return cls(key)
    except ValueError:
        return None


def _code_from_number(number: int) -> grpc.StatusCode:
    for c in grpc.StatusCode:
        if c.value[0] == number:
            return c
    return grpc.StatusCode.UNKNOWN


def _unpack(details: Iterable[any_pb2.Any]) -> list[Message]:
    out: list[Message] = []
    for any_ in details:
        for cls in _DETAIL_TYPES:
            if any_.Is(cast(Descriptor, cls.DESCRIPTOR)):
                msg = cls()
                if any_.Unpack(msg):
                    out.append(msg)
                break
        else:
            out.append(any_)
    return out


def error_from_status(
    status: status_pb2.Status, *, code: grpc.StatusCode | None = None, message: str | None = None
) -> ConsentError:
    """The typed exception for a ``google.rpc.Status`` (e.g. a batch item's error)."""
    code = code or _code_from_number(status.code)
    details = _unpack(status.details)
    reason = ""
    metadata: dict[str, str] = {}
    for d in details:
        if isinstance(d, error_details_pb2.ErrorInfo):
            reason, metadata = d.reason, dict(d.metadata)
            break
    cls = _BY_CODE.get(code, OtherError)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        cls = _BY_REASON.get(reason, cls)
    return cls(
        code,
        message if message is not None else status.message,
        reason=reason,
        metadata=metadata,
        details=details,
        status=status,
    )


def error_from_rpc(err: grpc.RpcError) -> ConsentError:
    """The typed exception for a failed call (sync ``grpc.RpcError`` or ``AioRpcError``)."""
    code_fn = getattr(err, "code", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details_fn = getattr(err, "details", None)
    message = (details_fn() if callable(details_fn) else None) or str(code.name)
    status = status_pb2.Status(code=code.value[0], message=message)
    trailer_fn = getattr(err, "trailing_metadata", None)
    trailers = trailer_fn() if callable(trailer_fn) else None
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                parsed = status_pb2.Status.FromString(value)
            except DecodeError:
                break
            if parsed.code == code.value[0]:
                status = parsed
            break
    return error_from_status(status, code=code, message=message)
