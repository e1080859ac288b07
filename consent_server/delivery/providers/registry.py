"""Building the provider a tenant configured for a channel."""

from __future__ import annotations

import httpx

from consent_server.domain.delivery import ProviderConfig, ProviderKind

from .base import Provider
from .log import LogProvider
from .webhook import WebhookProvider
from .whatsapp_cloud import WhatsAppCloudProvider

_LOG = LogProvider()


def build_provider(config: ProviderConfig, http: httpx.AsyncClient) -> Provider:
    """A provider for ``config``; HTTP providers share the worker's client (pooling)."""
    if config.kind is ProviderKind.WEBHOOK:
        return WebhookProvider(config, http)
    if config.kind is ProviderKind.WHATSAPP_CLOUD:
        return WhatsAppCloudProvider(config, http)
    return _LOG
