"""The HTTP edge's observer: counts what the WhatsApp webhook could not apply (the
counters live with every other metric in ``consent_server.metrics``)."""

from __future__ import annotations

from consent_server import metrics as m


class PrometheusEdgeObserver:
    """The EdgeObserver that counts in Prometheus."""

    def unapplied(self, reason: str, count: int) -> None:
        """Count items not applied."""
        m.WHATSAPP_UNAPPLIED.labels(reason).inc(count)

    def evicted(self, count: int) -> None:
        """Count dead letters pushed out of a full list."""
        m.WHATSAPP_DEAD_LETTERS_EVICTED.inc(count)
