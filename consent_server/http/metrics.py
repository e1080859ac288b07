"""Prometheus metrics of the HTTP edge (the default registry, like the delivery metrics)."""

from __future__ import annotations

from prometheus_client import Counter

UNAPPLIED = Counter(
    "consent_whatsapp_unapplied",
    "WhatsApp notification items not applied, by reason (malformed, unsupported, refused, "
    "failed, unknown_message, unbound: kept as dead letters; foreign_number, unrouted, "
    "bad_signature: counted only)",
    ["reason"],
)
DEAD_LETTERS_EVICTED = Counter(
    "consent_whatsapp_dead_letters_evicted",
    "Dead letters dropped because a tenant's list was full (oldest first)",
)


class PrometheusEdgeObserver:
    """The EdgeObserver that counts in Prometheus."""

    def unapplied(self, reason: str, count: int) -> None:
        """Count items not applied."""
        UNAPPLIED.labels(reason).inc(count)

    def evicted(self, count: int) -> None:
        """Count dead letters pushed out of a full list."""
        DEAD_LETTERS_EVICTED.inc(count)
