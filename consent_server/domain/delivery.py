"""Delivery configuration and provider feedback, as pure values.

A tenant chooses a provider per channel (``"*"`` = every channel without its own);
without one the ``log`` provider is used. Secrets (webhook signing secrets, WhatsApp
access tokens) are write-only: they are stored, used, and never returned or logged.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlparse

from . import validation as val
from .egress import EgressPolicy
from .model import Channel

ALL_CHANNELS = "*"
DEFAULT_TIMEOUT_MS = 10_000
MIN_TIMEOUT_MS = 100
MAX_TIMEOUT_MS = 30_000
MAX_URL = 2048
MAX_SECRET = 512
MIN_WEBHOOK_SECRET = 16
DEFAULT_WHATSAPP_BASE_URL = "https://graph.facebook.com/v21.0"


class ProviderKind(enum.Enum):
    """Which provider delivers a channel's messages."""

    LOG = "log"
    WEBHOOK = "webhook"
    WHATSAPP_CLOUD = "whatsapp_cloud"


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One channel's provider. ``secret`` is the webhook key or the WhatsApp token."""

    kind: ProviderKind = ProviderKind.LOG
    url: str = ""  # webhook URL, or the WhatsApp Cloud API base URL
    secret: str = ""
    phone_number_id: str = ""
    timeout_ms: int = DEFAULT_TIMEOUT_MS

    def encode(self) -> str:
        """The stored JSON form."""
        return json.dumps(
            {
                "kind": self.kind.value,
                "url": self.url,
                "secret": self.secret,
                "phone_number_id": self.phone_number_id,
                "timeout_ms": self.timeout_ms,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> ProviderConfig:
        """Parse the stored JSON form."""
        raw = json.loads(text)
        return cls(
            kind=ProviderKind(raw["kind"]),
            url=str(raw.get("url", "")),
            secret=str(raw.get("secret", "")),
            phone_number_id=str(raw.get("phone_number_id", "")),
            timeout_ms=int(raw.get("timeout_ms", DEFAULT_TIMEOUT_MS)),
        )

    def __repr__(self) -> str:  # never print the secret (dataclass repr would)
        return (
            f"ProviderConfig(kind={self.kind.value}, url={self.url!r}, "
            f"phone_number_id={self.phone_number_id!r}, timeout_ms={self.timeout_ms}, "
            f"secret_set={bool(self.secret)})"
        )


@dataclass(frozen=True, slots=True)
class ChannelProvider:
    """A provider configured for a channel value (or ALL_CHANNELS)."""

    channel: str
    config: ProviderConfig


class ProviderConfigStore(Protocol):
    """Where provider configurations live. Raises StoreUnavailable when unreachable."""

    async def providers(self, tenant_id: str) -> dict[str, ProviderConfig]:
        """Channel value (or ALL_CHANNELS) -> configuration."""
        ...

    async def put_provider(self, tenant_id: str, channel: str, config: ProviderConfig) -> None:
        """Store (replace) one channel's configuration."""
        ...


def provider_for(configs: Mapping[str, ProviderConfig], channel: Channel) -> ProviderConfig:
    """The configuration that delivers ``channel``: its own, else "*", else ``log``."""
    return configs.get(channel.value) or configs.get(ALL_CHANNELS) or ProviderConfig()


def _http_url(v: val.Violations, field: str, url: str, egress: EgressPolicy) -> str:
    """An http(s) URL to a destination the egress policy allows as written; plain http
    only to a destination the operator allowed (tests, on-prem relays), never beyond.
    Names resolving to internal addresses are refused again when delivery connects."""
    if not url:
        v.add(field, "is required")
        return ""
    if len(url) > MAX_URL or any(c.isspace() for c in url):
        v.add(field, f"must be a URL of at most {MAX_URL} characters without spaces")
        return ""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        v.add(field, "must be an http:// or https:// URL with a host")
        return ""
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        v.add(field, "must have a port between 1 and 65535")
        return ""
    refused = egress.literal_refusal(parsed.hostname, port)
    if refused is not None:
        v.add(
            field,
            f"must not point at an internal destination ({refused}); only the server's "
            "operator can allow one",
        )
        return ""
    if parsed.scheme == "http" and not egress.operator_allowed(parsed.hostname, port):
        v.add(
            field,
            "must use https:// (plain http:// only to destinations the operator allowed)",
        )
        return ""
    if parsed.username or parsed.password:
        v.add(field, "must not carry credentials; use the secret field")
        return ""
    return url.rstrip("/") if field.endswith("base_url") else url


#: The providers' URL rule, for other tenant-chosen destinations (change webhooks).
http_url = _http_url


def _timeout(v: val.Violations, field: str, value: int) -> int:
    if value == 0:
        return DEFAULT_TIMEOUT_MS
    if not MIN_TIMEOUT_MS <= value <= MAX_TIMEOUT_MS:
        v.add(field, f"must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS} (0 = default)")
    return value


def _secret(v: val.Violations, field: str, value: str, kept: str, minimum: int) -> str:
    """A new secret, or the stored one when the request leaves it empty (write-only)."""
    if not value:
        if not kept:
            v.add(
                field,
                "is required when setting this provider for the first time or changing "
                "where it sends (URL or phone number id)",
            )
        return kept
    if len(value) > MAX_SECRET or not value.isprintable() or any(c.isspace() for c in value):
        v.add(field, f"must be 1-{MAX_SECRET} printable characters without spaces")
    elif len(value) < minimum:
        v.add(field, f"must be at least {minimum} characters")
    return value


@dataclass(frozen=True, slots=True)
class RawProvider:
    """A SetDeliveryProvider request as plain values (``kind`` None = none chosen)."""

    channel: str | None  # channel value, ALL_CHANNELS, or None when unknown
    kind: ProviderKind | None
    url: str = ""
    secret: str = ""
    phone_number_id: str = ""
    timeout_ms: int = 0


class DeliveryAdmin:
    """Validates and stores provider configurations (the admin RPCs' use cases)."""

    def __init__(self, store: ProviderConfigStore, egress: EgressPolicy | None = None) -> None:
        self._store = store
        self._egress = egress or EgressPolicy()

    async def set_provider(self, tenant_id: str, raw: RawProvider) -> ChannelProvider:
        """Validate and store one channel's provider; empty secrets keep the stored ones."""
        v = val.Violations()
        tenant = val.tenant_id(v, tenant_id)
        if raw.channel is None:
            v.add("provider.channel", "must be a known Channel (UNSPECIFIED = all channels)")
        if raw.kind is None:
            v.add("provider.config", "must set one of log, webhook, whatsapp_cloud")
        v.raise_if_any()
        assert raw.channel is not None and raw.kind is not None
        current = (await self._store.providers(tenant)).get(raw.channel)

        def kept(url: str, phone_number_id: str = "") -> str:
            # A stored secret is kept only for the same destination: otherwise an update
            # could send a write-only token to a URL of the caller's choosing.
            same = (
                current is not None
                and current.kind is raw.kind
                and current.url == url
                and current.phone_number_id == phone_number_id
            )
            return current.secret if same and current is not None else ""

        config = ProviderConfig(kind=raw.kind)
        if raw.kind is ProviderKind.WEBHOOK:
            url = _http_url(v, "provider.webhook.url", raw.url, self._egress)
            secret = _secret(
                v, "provider.webhook.signing_secret", raw.secret, kept(url), MIN_WEBHOOK_SECRET
            )
            timeout = _timeout(v, "provider.webhook.timeout_ms", raw.timeout_ms)
            config = replace(config, url=url, secret=secret, timeout_ms=timeout)
        elif raw.kind is ProviderKind.WHATSAPP_CLOUD:
            url = _http_url(
                v,
                "provider.whatsapp_cloud.base_url",
                raw.url or DEFAULT_WHATSAPP_BASE_URL,
                self._egress,
            )
            if not (raw.phone_number_id.isdigit() and 1 <= len(raw.phone_number_id) <= 32):
                v.add("provider.whatsapp_cloud.phone_number_id", "must be 1-32 digits")
            secret = _secret(
                v,
                "provider.whatsapp_cloud.access_token",
                raw.secret,
                kept(url, raw.phone_number_id),
                1,
            )
            timeout = _timeout(v, "provider.whatsapp_cloud.timeout_ms", raw.timeout_ms)
            config = replace(
                config,
                url=url,
                secret=secret,
                phone_number_id=raw.phone_number_id,
                timeout_ms=timeout,
            )
        v.raise_if_any()
        await self._store.put_provider(tenant, raw.channel, config)
        return ChannelProvider(raw.channel, config)

    async def providers(self, tenant_id: str) -> list[ChannelProvider]:
        """The tenant's configured providers, ordered by channel ("*" first)."""
        v = val.Violations()
        tenant = val.tenant_id(v, tenant_id)
        v.raise_if_any()
        stored = await self._store.providers(tenant)
        return [ChannelProvider(ch, stored[ch]) for ch in sorted(stored)]


class ReceiptStatus(enum.Enum):
    """What a provider's delivery receipt says about a message it accepted."""

    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class ReceiptOutcome(enum.Enum):
    """What applying a receipt did."""

    APPLIED = "applied"
    IGNORED = "ignored"  # the message is not DELIVERED (or the receipt is older news)
    UNKNOWN = "unknown"  # no such message for this tenant: ignored safely
