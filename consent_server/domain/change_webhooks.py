"""Outbound change webhooks: a tenant's endpoints that receive every change of its feed.

Pure values and the admin use case (SetChangeWebhook and friends); the dispatcher that
POSTs the changes lives in ``consent_server.delivery.change_webhooks``. An endpoint is
named within its tenant; its URL obeys the providers' rule (https, no internal address
as written; the dispatcher's connections are checked again at connect time). Its
signing secret is write-only: generated and returned once when the caller gives none,
never returned or logged afterwards (only a masked hint).

The endpoint's cursor (one feed position per partition) starts at the feed's newest
entries when the endpoint is created, so it receives every later change; updating the
URL or the secret keeps the cursor. The delivery log and dead letters name feed event
ids, never a recipient, so an erasure leaves no address behind in them.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from . import validation as val
from .delivery import MAX_SECRET, MIN_WEBHOOK_SECRET, http_url
from .egress import EgressPolicy
from .errors import InvalidArgument, NotFound
from .feed import FeedEntry, feed_event_id, split_event_id
from .ports import ChangeFeedStore

MAX_ENDPOINTS = 10
LOG_KEEP = 200
DEAD_KEEP = 1000
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class ChangeWebhookNotFound(NotFound):
    """No change webhook of that name for the tenant (also for another tenant's)."""

    reason = "CHANGE_WEBHOOK_NOT_FOUND"


@dataclass(frozen=True, slots=True)
class ChangeWebhook:
    """One registered endpoint. ``secret`` never leaves the server after creation."""

    tenant_id: str
    name: str
    url: str
    secret: str
    created_at_ms: int
    updated_at_ms: int
    status_changes_only: bool = False

    def wants(self, entry: FeedEntry) -> bool:
        """True when the endpoint's filter lets ``entry`` through."""
        return not self.status_changes_only or entry.kind == "erasure" or entry.status_changed

    def encode(self) -> str:
        """The stored JSON form."""
        return json.dumps(
            {
                "url": self.url,
                "secret": self.secret,
                "created": self.created_at_ms,
                "updated": self.updated_at_ms,
                "sco": self.status_changes_only,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, tenant_id: str, name: str, text: str) -> ChangeWebhook:
        """Parse the stored JSON form."""
        raw = json.loads(text)
        return cls(
            tenant_id,
            name,
            str(raw["url"]),
            str(raw["secret"]),
            int(raw.get("created", 0)),
            int(raw.get("updated", 0)),
            bool(raw.get("sco", False)),
        )

    @property
    def secret_hint(self) -> str:
        """The secret masked: its prefix and last four characters."""
        if not self.secret:
            return ""
        head = SECRET_PREFIX if self.secret.startswith(SECRET_PREFIX) else ""
        return f"{head}…{self.secret[-4:]}"

    def __repr__(self) -> str:  # never print the secret
        return f"ChangeWebhook({self.tenant_id}/{self.name}, url={self.url!r}, secret=***)"


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One finished delivery of a change to an endpoint (the bounded delivery log), or
    one dead letter (``status`` "dead_letter"). Names the feed event, never a recipient."""

    event_id: str
    status: str  # "delivered" | "dead_letter"
    attempts: int
    last_error: str
    http_status: int
    latency_ms: int
    finished_at_ms: int

    def encode(self) -> str:
        """The stored JSON form."""
        return json.dumps(
            {
                "e": self.event_id,
                "s": self.status,
                "a": self.attempts,
                "err": self.last_error,
                "h": self.http_status,
                "l": self.latency_ms,
                "t": self.finished_at_ms,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> DeliveryRecord:
        """Parse the stored JSON form."""
        r = json.loads(text)
        return cls(
            str(r["e"]),
            str(r["s"]),
            int(r["a"]),
            str(r.get("err", "")),
            int(r.get("h", 0)),
            int(r.get("l", 0)),
            int(r.get("t", 0)),
        )


class ChangeWebhookStore(Protocol):
    """Where endpoints, their cursors, delivery logs and dead letters are kept."""

    async def get(self, tenant_id: str, name: str) -> ChangeWebhook | None:
        """One endpoint, or None."""
        ...

    async def endpoints(self, tenant_id: str) -> list[ChangeWebhook]:
        """The tenant's endpoints by name."""
        ...

    async def put(self, hook: ChangeWebhook, cursor: Sequence[str] | None) -> None:
        """Store an endpoint; ``cursor`` (one position per partition) only when it is new."""
        ...

    async def delete(self, tenant_id: str, name: str) -> bool:
        """Remove an endpoint with its cursor, log and dead letters; False when absent."""
        ...

    async def all_endpoints(self) -> list[tuple[str, str]]:
        """Every (tenant, name) registered, for the dispatcher."""
        ...

    async def cursor(self, tenant_id: str, name: str) -> list[str]:
        """The endpoint's positions (one per partition)."""
        ...

    async def advance(self, tenant_id: str, name: str, part: int, entry_id: str) -> None:
        """Store the position of one partition (after an entry was delivered or given up)."""
        ...

    async def record(self, tenant_id: str, name: str, item: DeliveryRecord) -> None:
        """Append to the bounded delivery log (and the dead letters for a dead letter)."""
        ...

    async def deliveries(
        self, tenant_id: str, name: str, limit: int
    ) -> tuple[list[DeliveryRecord], list[DeliveryRecord]]:
        """The newest delivery log items and dead letters, newest first."""
        ...

    async def redrive(self, tenant_id: str, name: str, event_id: str) -> bool:
        """Move a dead letter to the endpoint's redrive queue; False when there is no
        dead letter (or pending redrive) with that event id."""
        ...

    async def redrives(self, tenant_id: str, name: str) -> list[str]:
        """The event ids waiting to be sent again, oldest first."""
        ...

    async def redriven(self, tenant_id: str, name: str, event_id: str) -> None:
        """Take an event id off the redrive queue (it was sent, or given up again)."""
        ...

    async def lease(self, tenant_id: str, name: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew the endpoint's dispatch lease (one dispatcher per endpoint);
        ``ttl_ms`` 0 releases it when ``owner`` holds it."""
        ...


def new_secret() -> str:
    """A fresh signing secret (256 random bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def endpoint_name(v: val.Violations, value: str, field: str = "name") -> str:
    """An endpoint name (the tenant-id form), or "" after recording a violation."""
    return val.slug(v, value, field)


def _secret(v: val.Violations, value: str) -> str:
    if len(value) > MAX_SECRET or not value.isprintable() or any(c.isspace() for c in value):
        v.add(
            "signing_secret",
            f"must be {MIN_WEBHOOK_SECRET}-{MAX_SECRET} printable characters without spaces",
        )
    elif len(value) < MIN_WEBHOOK_SECRET:
        v.add("signing_secret", f"must be at least {MIN_WEBHOOK_SECRET} characters")
    return value


@dataclass(frozen=True, slots=True)
class SetResult:
    """What SetChangeWebhook answers: the endpoint, whether it is new, and the secret
    only when the server generated it (shown once)."""

    hook: ChangeWebhook
    created: bool
    generated_secret: str


class ChangeWebhookAdmin:
    """The admin RPCs' use cases on a ChangeWebhookStore."""

    def __init__(
        self,
        store: ChangeWebhookStore,
        feed: ChangeFeedStore,
        egress: EgressPolicy | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        self._feed = feed
        self._egress = egress or EgressPolicy()
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def _ids(self, tenant_id: str, name: str) -> tuple[str, str]:
        v = val.Violations()
        tenant = val.tenant_id(v, tenant_id)
        hook = endpoint_name(v, name)
        v.raise_if_any()
        return tenant, hook

    async def set(
        self,
        tenant_id: str,
        name: str,
        url: str,
        secret: str,
        *,
        status_changes_only: bool = False,
    ) -> SetResult:
        """Create or replace an endpoint. Without a secret the stored one is kept for the
        same URL; otherwise (new endpoint, or a new URL) one is generated and returned."""
        v = val.Violations()
        tenant = val.tenant_id(v, tenant_id)
        hook_name = endpoint_name(v, name)
        checked = http_url(v, "url", url, self._egress)
        if secret:
            _secret(v, secret)
        v.raise_if_any()
        current = await self._store.get(tenant, hook_name)
        if current is None and len(await self._store.endpoints(tenant)) >= MAX_ENDPOINTS:
            raise InvalidArgument.single(
                "name", f"a tenant has at most {MAX_ENDPOINTS} change webhooks"
            )
        generated = ""
        if not secret:
            if current is not None and current.url == checked:
                secret = current.secret
            else:
                # A stored secret never follows the endpoint to a new URL.
                secret = generated = new_secret()
        now = self._clock_ms()
        hook = ChangeWebhook(
            tenant,
            hook_name,
            checked,
            secret,
            current.created_at_ms if current is not None else now,
            now,
            status_changes_only,
        )
        cursor = None if current is not None else await self._feed.latest(tenant)
        await self._store.put(hook, cursor)
        return SetResult(hook, current is None, generated)

    async def get(self, tenant_id: str, name: str) -> ChangeWebhook:
        """One endpoint; ChangeWebhookNotFound when the tenant has none of that name."""
        tenant, hook_name = self._ids(tenant_id, name)
        hook = await self._store.get(tenant, hook_name)
        if hook is None:
            raise ChangeWebhookNotFound(f"no change webhook '{hook_name}' for this tenant")
        return hook

    async def endpoints(self, tenant_id: str) -> list[ChangeWebhook]:
        """The tenant's endpoints, by name."""
        v = val.Violations()
        tenant = val.tenant_id(v, tenant_id)
        v.raise_if_any()
        return await self._store.endpoints(tenant)

    async def delete(self, tenant_id: str, name: str) -> bool:
        """Remove an endpoint (idempotent: False when there was none)."""
        tenant, hook_name = self._ids(tenant_id, name)
        return await self._store.delete(tenant, hook_name)

    async def deliveries(
        self, tenant_id: str, name: str, limit: int
    ) -> tuple[list[DeliveryRecord], list[DeliveryRecord]]:
        """The endpoint's newest delivery log items and dead letters."""
        tenant, hook_name = self._ids(tenant_id, name)
        if limit < 0 or limit > DEAD_KEEP:
            raise InvalidArgument.single("limit", f"must be 0-{DEAD_KEEP} (0 = 50)")
        await self.get(tenant, hook_name)
        return await self._store.deliveries(tenant, hook_name, limit or 50)

    async def redrive(self, tenant_id: str, name: str, event_id: str) -> bool:
        """Queue a dead letter to be sent again; ChangeWebhookNotFound when the
        endpoint or the dead letter is unknown."""
        tenant, hook_name = self._ids(tenant_id, name)
        parts = self._feed.partitions
        if split_event_id(event_id, parts) is None:
            example = feed_event_id(7 % parts, "1796320123990-0", parts)
            raise InvalidArgument.single(
                "event_id", f"must be a change feed event id such as {example}"
            )
        await self.get(tenant, hook_name)
        if not await self._store.redrive(tenant, hook_name, event_id):
            raise ChangeWebhookNotFound(
                f"no dead letter {event_id} for change webhook '{hook_name}'"
            )
        return True


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def change_payload(tenant_id: str, event_id: str, e: FeedEntry) -> dict[str, object]:
    """The JSON body POSTed for one feed entry: the change as WatchConsentEvents gives it.
    An erasure carries no recipient (the feed holds no address for it)."""
    out: dict[str, object] = {
        "event_id": event_id,
        "tenant_id": tenant_id,
        "recorded_at": _iso(e.recorded_at_ms),
        "source_event_id": e.source_event_id,
        "principal": e.principal,
    }
    if e.kind == "erasure":
        out["kind"] = "erasure"
        out["erased_channel"] = e.channel.value if e.channel is not None else ""
        return out
    out.update(
        kind="consent",
        recipient={"channel": e.channel.value if e.channel else "", "address": e.address},
        topic=e.topic,
        action=f"opt_{e.action.value}" if e.action is not None else "",
        source=e.source.value if e.source is not None else "",
        occurred_at=_iso(e.occurred_at_ms),
        revision=e.revision,
        status_changed=e.status_changed,
    )
    return out


__all__ = [
    "ChangeWebhook",
    "ChangeWebhookAdmin",
    "ChangeWebhookNotFound",
    "ChangeWebhookStore",
    "DeliveryRecord",
    "SetResult",
    "change_payload",
    "endpoint_name",
    "new_secret",
    "split_event_id",
]
