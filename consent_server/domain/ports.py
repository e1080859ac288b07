"""What the domain needs from a store. The Redis repository implements it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .model import (
    ChangeOutcome,
    ConfirmedChange,
    ConsentEventInput,
    ConsentRecord,
    EventPage,
    MessageStatusInfo,
    OutboundMessage,
    Policy,
    Recipient,
    SendAccepted,
    SendBlocked,
    SendInput,
    TenantSettings,
)

# (record for the topic, record for all topics); the first is None for topic "".
RecordPair = tuple[ConsentRecord | None, ConsentRecord | None]


class ConsentStore(Protocol):
    """Consent storage. Every method raises StoreUnavailable when the store is unreachable."""

    async def tenant_settings(self, tenant_id: str) -> TenantSettings:
        """The tenant's settings (defaults when none are stored)."""
        ...

    async def tenant_lookup(self, tenant_id: str) -> TenantSettings | None:
        """The tenant's settings, or None when the tenant was never created; as cheap as
        tenant_settings (the same cached read)."""
        ...

    async def read_records(
        self, tenant_id: str, recipients: Sequence[Recipient], topic: str
    ) -> list[RecordPair]:
        """The topic and all-topics records of each recipient, in order, in bounded round trips."""
        ...

    async def record_event(self, event: ConsentEventInput) -> ChangeOutcome:
        """Apply an opt-out/opt-in atomically (SPEC §4) and append it to history."""
        ...

    async def record_inbound(
        self, event: ConsentEventInput, confirmation: OutboundMessage
    ) -> ConfirmedChange:
        """Like record_event; when the scope's status changes, also queue
        ``confirmation`` for delivery in the same atomic step (docs/outbox.md)."""
        ...

    async def fresh_tenant_settings(self, tenant_id: str) -> TenantSettings:
        """The tenant's settings read from the store now, bypassing any cache."""
        ...

    async def put_tenant_settings(self, tenant_id: str, settings: TenantSettings) -> None:
        """Replace the tenant's settings if still at ``settings.version`` (else raise
        SettingsConflict); the next read in this process sees them."""
        ...

    async def send(self, request: SendInput, policy: Policy) -> SendAccepted | SendBlocked:
        """Decide and, if allowed, enqueue in one atomic step."""
        ...

    async def list_events(
        self, tenant_id: str, recipient: Recipient, limit: int, before_revision: int | None
    ) -> EventPage:
        """History newest first, starting below ``before_revision`` when given."""
        ...

    async def message_status(self, tenant_id: str, message_id: str) -> MessageStatusInfo | None:
        """The stored status of a message, or None when unknown for this tenant."""
        ...
