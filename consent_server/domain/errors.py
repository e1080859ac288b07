"""Domain errors. The api layer maps each to a gRPC status with rich details
(consent_server/api/errors.py; an error outside its table answers INTERNAL).

Hierarchy::

    ConsentError
    ├── InvalidArgument      bad input; carries one FieldViolation per bad field
    ├── SendBlocked          consent does not allow the send (decision attached)
    ├── IdConflict           an event_id / idempotency_key reused for a different request
    ├── NotFound             unknown id (or another tenant's)
    │   └── TenantNotFound   the request names a tenant that was never created
    ├── StoreUnavailable     Redis unreachable: fail closed
    │   └── ReplicationNotAcknowledged  applied on the primary, not confirmed by replicas
    ├── SettingsConflict     tenant settings written concurrently (retried, then ABORTED)
    │   └── SettingsVersionMismatch  the update's version is not the stored one
    └── NotConfigured        a feature the call needs is not set up (FAILED_PRECONDITION)
        └── TenantNotEmpty   DeleteTenant refused: the tenant still holds consent data

Errors with a ``reason`` attribute name their ErrorInfo reason (consent.v1.ErrorReason).
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Decision, Recipient


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: its path in the request (``recipient.address``) and why."""

    field: str
    description: str


class ConsentError(Exception):
    """Base of every error the domain reports to callers."""


class InvalidArgument(ConsentError):
    """One or more request fields are invalid; nothing was written."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        """An error for one bad field."""
        return cls([FieldViolation(field, description)])


class SendBlocked(ConsentError):
    """The recipient's consent does not allow a message about the topic."""

    def __init__(self, recipient: Recipient, topic: str, decision: Decision) -> None:
        self.recipient = recipient
        self.topic = topic
        self.decision = decision
        super().__init__(decision.block_reason.value if decision.block_reason else "blocked")


class IdConflict(ConsentError):
    """An idempotency id was already used for a different request; nothing was written."""

    def __init__(self, field: str, reason: str, description: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(description)


class NotFound(ConsentError):
    """The named thing does not exist for this tenant."""

    reason = "MESSAGE_NOT_FOUND"


class TenantNotFound(NotFound):
    """The request names a tenant that does not exist; nothing was read or written."""

    reason = "TENANT_NOT_FOUND"

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        super().__init__(
            f"no tenant '{tenant_id}': create it first (ConsentAdminService.CreateTenant, "
            "consentctl tenants create)"
        )


class StoreUnavailable(ConsentError):
    """The consent store could not be reached or did not answer in time: nothing was
    allowed or accepted, but a change sent to a slow store may still be recorded."""


class ReplicationNotAcknowledged(StoreUnavailable):
    """The change was applied on the Redis primary but fewer replicas than required
    confirmed it in time (CONSENT_REDIS_MIN_REPLICAS_ACK): not acknowledged, because a
    failover now could lose it. Safe to retry with the same event_id / idempotency_key."""


class SettingsConflict(ConsentError):
    """The tenant's settings changed between read and write; nothing was written."""

    reason = "SETTINGS_CONFLICT"


class SettingsVersionMismatch(SettingsConflict):
    """UpdateTenantSettings named a version that is no longer the stored one."""

    reason = "SETTINGS_VERSION_MISMATCH"

    def __init__(self, expected: int, current: int) -> None:
        self.expected = expected
        self.current = current
        super().__init__(
            f"tenant settings are at version {current}, not {expected}: someone changed them "
            "since they were read"
        )


class NotConfigured(ConsentError):
    """A feature the call needs is not configured on this server or tenant."""

    reason = "NOT_CONFIGURED"


class TenantNotEmpty(NotConfigured):
    """DeleteTenant refused: the tenant still holds consent data; nothing changed."""

    reason = "TENANT_NOT_EMPTY"
