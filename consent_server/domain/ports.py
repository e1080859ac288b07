"""What the domain needs from a store. The Redis repository implements it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from .delivery import ReceiptOutcome, ReceiptStatus
from .imports import RecipientView
from .model import (
    ChangeOutcome,
    Channel,
    ConfirmedChange,
    ConsentEvent,
    ConsentEventInput,
    ConsentRecord,
    EventPage,
    ExportPage,
    ExportQuery,
    MessageStatusInfo,
    OutboundMessage,
    Policy,
    Recipient,
    SendAccepted,
    SendBlocked,
    SendInput,
    TenantSettings,
)
from .outbox import OutboxEntry

if TYPE_CHECKING:  # feed imports this module
    from .feed import FeedEntry

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

    async def read_batch(
        self, tenant_id: str, recipients: Sequence[tuple[Channel, str]], topic: str
    ) -> list[RecordPair | None]:
        """read_records for (channel, normalised address) pairs; None where a recipient
        has no record of either scope (the policy decides), in one round trip per node."""
        ...

    async def record_event(self, event: ConsentEventInput) -> ChangeOutcome:
        """Apply an opt-out/opt-in atomically and append it to history."""
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


class ConsentHistory(Protocol):
    """What point-in-time checks read besides the records (CheckConsent ``at``)."""

    async def histories(
        self, tenant_id: str, recipients: Sequence[Recipient]
    ) -> list[list[ConsentEvent]]:
        """Each recipient's whole history (any order), in bounded round trips."""
        ...

    async def tombstone_records(
        self, tenant_id: str, recipients: Sequence[Recipient], topic: str
    ) -> list[RecordPair]:
        """Each recipient's erasure tombstone records (topic, all topics); (None, None)
        for a recipient never erased. The first is None for topic ""."""
        ...


class BulkConsentStore(Protocol):
    """Bulk import and export (ImportConsent, ExportConsent)."""

    async def views(
        self, tenant_id: str, wanted: Sequence[tuple[Recipient, Sequence[str]]]
    ) -> list[RecipientView]:
        """For each (recipient, event ids): its scope records, tombstone and which of the
        event ids it knows; one round trip per partition."""
        ...

    async def apply(
        self, events: Sequence[ConsentEventInput], *, queued: Callable[[], None] | None = None
    ) -> list[str]:
        """Record the events in order with the OptOut/OptIn script, pipelined (one round
        trip per batch). Per event an imports.Outcome value (APPLIED, CHANGED,
        IGNORED_OLDER, IGNORED_ERASED, DUPLICATE) or "reused" (the id was used for
        another change of the recipient; nothing written).

        ``queued``: called once the writes are queued ahead of any apply started later
        (which is then applied after them), or, when the store cannot promise that, once
        they are done; always called, also when the apply fails."""
        ...

    def export(self, tenant_id: str, query: ExportQuery) -> AsyncIterator[ExportPage]:
        """The tenant's current records matching ``query``, in pages; each recipient's
        records are read atomically and come in one page."""
        ...


class ChangeFeedStore(Protocol):
    """The tenant's change feed (WatchConsentEvents): one bounded stream per partition.
    A position is one stream entry id per partition ("0-0" = before every entry)."""

    @property
    def partitions(self) -> int:
        """How many partitions (positions per token)."""
        ...

    async def latest(self, tenant_id: str) -> list[str]:
        """Positions after every entry stored now."""
        ...

    async def oldest(self, tenant_id: str) -> list[str]:
        """Positions before the oldest entry still retained."""
        ...

    async def trimmed_parts(self, tenant_id: str, positions: Sequence[str]) -> list[int]:
        """The partitions whose entries after ``positions`` were (partly) trimmed away."""
        ...

    async def read(
        self, tenant_id: str, positions: Sequence[str], count: int
    ) -> list[tuple[int, list[FeedEntry]]]:
        """Up to ``count`` entries after each partition's position, per partition in
        stream order; feed.FeedTrimmed when some of them were trimmed away."""
        ...


# -- delivery ---------------------------------------------------------------------------
# The delivery worker's side of the store (outbox, claims, outcomes, retries) and the
# receipts' side (message states). Provider settings are domain.delivery's
# ProviderConfigStore. Each raises StoreUnavailable when the store is unreachable.


class ClaimVerdict(Protocol):
    """The claim's verdict on an entry: ``kind`` go / cancelled / expired / final / gone;
    ``attempts`` counts this try (go), ``reason`` why cancelled, ``state`` if final."""

    @property
    def kind(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def state(self) -> str: ...


class DeliveryOutbox(Protocol):
    """The outbox consumer group and per-message delivery bookkeeping."""

    async def ensure_groups(self) -> None:
        """Create the consumer group where it is missing."""
        ...

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[OutboxEntry]:
        """New entries for ``consumer`` (they become its pending ones)."""
        ...

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[OutboxEntry]:
        """Entries another consumer left pending for ``min_idle_ms``."""
        ...

    async def touch(self, consumer: str, entries: Sequence[OutboxEntry]) -> None:
        """Reset the idle time of entries still being worked on (a heartbeat)."""
        ...

    async def retire(self, consumer: str) -> None:
        """Leave the group where nothing is pending (a clean stop)."""
        ...

    async def drop(self, entry: OutboxEntry) -> None:
        """Acknowledge and delete an entry that cannot be acted on."""
        ...

    async def claim(self, entry: OutboxEntry, policy: Policy) -> ClaimVerdict:
        """Re-check consent and claim the entry for one provider attempt."""
        ...

    async def finish(
        self,
        entry: OutboxEntry,
        outcome: str,
        *,
        error: str = "",
        provider_message_id: str = "",
        provider: str = "",
        retry_due_ms: int = 0,
    ) -> str:
        """Record a provider outcome: ``done``, ``retry`` or ``stale``."""
        ...

    async def requeue_due(self, now_ms: int, limit: int = 100) -> int:
        """Move due retries back onto their outbox; how many moved."""
        ...

    async def backlog(self) -> tuple[int, int | None]:
        """(messages waiting, acceptance ms of the oldest)."""
        ...


class ReceiptStore(Protocol):
    """Applies provider receipts to message states."""

    async def apply_receipt(
        self,
        tenant_id: str,
        receipt: ReceiptStatus,
        *,
        message_id: str = "",
        provider_message_id: str = "",
        error: str = "",
    ) -> tuple[ReceiptOutcome, str]:
        """Apply a receipt found by our id or the provider's; (outcome, our id or "")."""
        ...


class DeploymentProbe(Protocol):
    """Read-only facts about how the store keeps consent (``consentctl doctor``)."""

    #: "embedded", "redis" or "redis_cluster".
    store_kind: str

    async def durability_problems(self) -> list[str] | None:
        """What in the store's configuration can lose consent (empty: nothing); None
        when its configuration cannot be read. StoreUnavailable while it is down."""
        ...
