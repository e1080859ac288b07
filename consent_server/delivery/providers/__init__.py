"""Delivery providers: ``log`` (default), ``webhook`` and ``whatsapp_cloud``.

Every provider answers a ``send`` with one of the result types in ``base``; the
worker turns them into statuses, retries and provider-reported opt-outs.
"""

from .base import (
    Delivered,
    DeliveryMessage,
    OptedOut,
    PermanentFailure,
    Provider,
    ProviderResult,
    TransientFailure,
)
from .registry import build_provider

__all__ = [
    "Delivered",
    "DeliveryMessage",
    "OptedOut",
    "PermanentFailure",
    "Provider",
    "ProviderResult",
    "TransientFailure",
    "build_provider",
]
