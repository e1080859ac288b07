"""The provider-feedback use case as delivery runs it: counted in the delivery metrics."""

from __future__ import annotations

from consent_server import metrics as m
from consent_server.domain.feedback import ProviderFeedback
from consent_server.domain.ports import ConsentStore


def provider_feedback(consent: ConsentStore) -> ProviderFeedback:
    """ProviderFeedback on ``consent`` that counts each recorded opt-out per provider."""
    return ProviderFeedback(
        consent, on_recorded=lambda provider: m.PROVIDER_OPT_OUTS.labels(provider).inc()
    )
