"""An outbox entry as the delivery worker sees it (docs/outbox.md is the stream contract).

A pure value: the store reads it off a partition's stream and says which partition the
message id itself names (``id_partition``), so ``valid`` needs no key schema.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Channel, Recipient


def lenient_int(text: str | None) -> int:
    """A stored number, 0 when it is missing or not one (an entry never fails to parse)."""
    try:
        return int(text or 0)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox stream entry, as docs/outbox.md describes it."""

    partition: int
    entry_id: str
    fields: dict[str, str]
    id_partition: int | None = None  # the partition the message id names; None = not ours

    @property
    def message_id(self) -> str:
        """Our message id."""
        return self.fields.get("id", "")

    @property
    def tenant_id(self) -> str:
        """The sending tenant."""
        return self.fields.get("tenant", "")

    @property
    def recipient(self) -> Recipient | None:
        """The normalised recipient, or None when the entry is malformed."""
        try:
            return Recipient(Channel(self.fields.get("ch", "")), self.fields.get("addr", ""))
        except ValueError:
            return None

    @property
    def topic(self) -> str:
        """The message's topic ("" for confirmations)."""
        return self.fields.get("topic", "")

    @property
    def purpose(self) -> str:
        """``send`` (also when absent) or ``confirmation``."""
        return self.fields.get("purpose") or "send"

    @property
    def not_after_ms(self) -> int:
        """Expiry in ms since the epoch; 0 = never."""
        return lenient_int(self.fields.get("not_after"))

    @property
    def accepted_at_ms(self) -> int:
        """When the message was accepted."""
        return lenient_int(self.fields.get("at"))

    @property
    def valid(self) -> bool:
        """True when the entry names a message, tenant and recipient we can act on."""
        return (
            self.id_partition == self.partition
            and bool(self.tenant_id)
            and self.recipient is not None
        )
