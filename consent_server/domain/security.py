"""Security use cases: authenticate a call, manage API keys, erase a recipient.

Pure domain code: the store is reached through the SecurityStore port, the wire
through the api layer. Raises ConsentError subclasses only.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import validation as val
from .auth import (
    OPERATOR_TENANT,
    ApiKeyNotFound,
    ApiKeyRecord,
    Caller,
    PermissionDenied,
    RateLimited,
    Role,
    Unauthenticated,
    authorize,
    bearer_token,
    hash_secret,
    new_key,
    parse_key,
    verify,
)
from .errors import TenantNotFound
from .model import Recipient, TenantSettings
from .validation import RawRecipient, Violations

MAX_DESCRIPTION = 256
MAX_KEY_RATE = 100_000
#: A batch call costs one rate-limit token per this many items (BatchCheckConsent
#: recipients), so a 10,000-recipient batch weighs like 100 single checks, not one.
BATCH_ITEMS_PER_TOKEN = 100


def call_cost(items: int) -> int:
    """Rate-limit tokens a call with ``items`` batch items costs (at least one)."""
    return max(1, -(-items // BATCH_ITEMS_PER_TOKEN))


@dataclass(frozen=True, slots=True)
class AuthLookup:
    """What the store knows about a presented key: its record and whether a token was left."""

    record: ApiKeyRecord | None
    allowed: bool
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class ErasureCounts:
    """What an erasure removed, and which scopes its tombstone keeps suppressed."""

    records_removed: int
    events_removed: int
    idempotency_entries_removed: int
    messages_cancelled: int
    messages_erased: int
    other_records_removed: int = 0
    suppressed_topics: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ErasureResult:
    """An erasure: its id, the normalised recipient and the counts."""

    erasure_id: str
    recipient: Recipient
    counts: ErasureCounts


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: its record and the token, shown once."""

    record: ApiKeyRecord
    api_key: str


class SecurityStore(Protocol):
    """Storage of keys, buckets and erasures. Raises StoreUnavailable when unreachable."""

    async def authenticate(
        self, key_id: str, secret_hash: str, default_rate: int, burst: int, cost: int = 1
    ) -> AuthLookup:
        """The key's record; takes ``cost`` rate-limit tokens when the hash matches a live
        key. ``default_rate``/``burst`` are a ceiling: a key's own rate may only be lower."""
        ...

    async def put_key(self, record: ApiKeyRecord) -> bool:
        """Store a new key; False when the id exists."""
        ...

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """A key's record."""
        ...

    async def list_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        """A tenant's keys, oldest first."""
        ...

    async def revoke_key(self, key_id: str, at_ms: int) -> bool:
        """Revoke; False when already revoked."""
        ...

    async def forget(
        self, tenant_id: str, recipient: Recipient, erasure_id: str, principal: str
    ) -> ErasureCounts:
        """Erase a recipient, keeping the suppression tombstone."""
        ...


class TenantSettingsSource(Protocol):
    """Where the tenant's default region comes from (the consent store)."""

    async def tenant_settings(self, tenant_id: str) -> TenantSettings:
        """The tenant's settings."""
        ...

    async def tenant_lookup(self, tenant_id: str) -> TenantSettings | None:
        """The tenant's settings, or None when the tenant does not exist."""
        ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-key request budget: ``rate`` requests/s (0 = unlimited), ``burst`` tokens (0 = 2x)."""

    rate: int = 0
    burst: int = 0


def _role(v: Violations, role: Role | None) -> Role | None:
    if role is None:
        v.add("role", "must be one of ADMIN, WRITER, SENDER, READER")
    return role


def _key_tenant(v: Violations, tenant_id: str) -> str:
    if tenant_id == OPERATOR_TENANT:
        return tenant_id
    return val.tenant_id(v, tenant_id)


async def _require_tenant(source: TenantSettingsSource, tenant_id: str) -> TenantSettings | None:
    """The tenant's settings; TenantNotFound when a named tenant does not exist (the
    operator pseudo-tenant ``*`` and an invalid id, already reported, pass)."""
    if not tenant_id or tenant_id == OPERATOR_TENANT:
        return None
    settings = await source.tenant_lookup(tenant_id)
    if settings is None:
        raise TenantNotFound(tenant_id)
    return settings


class SecurityAuthority:
    """Authenticates calls, manages keys and erases recipients."""

    def __init__(
        self,
        store: SecurityStore,
        settings: TenantSettingsSource,
        *,
        limits: RateLimits | None = None,
        default_region: str | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._store = store
        self._settings = settings
        self._limits = limits or RateLimits()
        self._default_region = default_region
        self._clock_ms = clock_ms

    # -- authentication --------------------------------------------------------------

    async def authenticate(self, authorization: str | None, cost: int = 1) -> Caller:
        """The caller an ``authorization`` header proves, charging ``cost`` tokens (see
        ``call_cost``); Unauthenticated or RateLimited."""
        key_id, secret = parse_key(bearer_token(authorization))
        lookup = await self._store.authenticate(
            key_id, hash_secret(secret), self._limits.rate, self._limits.burst, max(1, cost)
        )
        caller = verify(lookup.record, secret)
        if not lookup.allowed:
            raise RateLimited(lookup.retry_after_ms)
        return caller

    @staticmethod
    def authorize(caller: Caller, method: str, request_tenant: str | None) -> None:
        """PermissionDenied unless the caller may make this call (see domain.auth)."""
        authorize(caller, method, request_tenant)

    # -- keys ------------------------------------------------------------------------

    async def create_key(
        self,
        *,
        tenant_id: str,
        role: Role | None,
        description: str,
        rate_limit_per_s: int,
        created_by: str,
        caller: Caller | None,
    ) -> CreatedKey:
        """CreateApiKey; ``caller`` None = a trusted local tool (consentctl, bootstrap)."""
        v = Violations()
        tenant = _key_tenant(v, tenant_id)
        checked_role = _role(v, role)
        val.free_text(v, description, "description", max_chars=MAX_DESCRIPTION)
        ceiling = self._limits.rate or MAX_KEY_RATE
        if not 0 <= rate_limit_per_s <= ceiling:
            # Refused rather than clamped: the caller learns the key's real rate now.
            # Authentication enforces the same ceiling for keys stored before it.
            v.add(
                "rate_limit_per_second",
                f"must be between 0 and {ceiling}"
                + (
                    f": at most {ceiling}, the server's rate limit (0 = that rate)"
                    if self._limits.rate
                    else ""
                ),
            )
        v.raise_if_any()
        assert checked_role is not None
        await _require_tenant(self._settings, tenant)
        if tenant == OPERATOR_TENANT and caller is not None and caller.tenant_id != tenant:
            raise PermissionDenied(
                "only an operator key (tenant *) may create an operator key",
                reason="TENANT_NOT_ALLOWED",
                missing="tenant:*",
            )
        for _ in range(3):  # 64 random bits: a collision is practically impossible
            key_id, token, digest = new_key()
            record = ApiKeyRecord(
                key_id=key_id,
                tenant_id=tenant,
                role=checked_role,
                secret_hash=digest,
                description=description,
                created_at_ms=self._clock_ms(),
                created_by=created_by,
                rate_limit_per_s=rate_limit_per_s,
            )
            if await self._store.put_key(record):
                return CreatedKey(record, token)
        raise RuntimeError("could not allocate a unique API key id")

    async def install_key(self, token: str, tenant_id: str, role: Role, created_by: str) -> str:
        """Store a key given in full (the bootstrap key); returns what happened.

        An existing key of that id is left untouched, so a revoked bootstrap key stays
        revoked across restarts.
        """
        key_id, secret = parse_key(token)
        existing = await self._store.get_key(key_id)
        if existing is not None:
            return "revoked" if existing.revoked else "present"
        record = ApiKeyRecord(
            key_id=key_id,
            tenant_id=tenant_id,
            role=role,
            secret_hash=hash_secret(secret),
            description="bootstrap key (CONSENT_BOOTSTRAP_ADMIN_KEY)",
            created_at_ms=self._clock_ms(),
            created_by=created_by,
        )
        return "created" if await self._store.put_key(record) else "present"

    async def list_keys(self, tenant_id: str, include_revoked: bool) -> list[ApiKeyRecord]:
        """ListApiKeys."""
        v = Violations()
        tenant = _key_tenant(v, tenant_id)
        v.raise_if_any()
        await _require_tenant(self._settings, tenant)
        records = await self._store.list_keys(tenant)
        return [r for r in records if include_revoked or not r.revoked]

    async def revoke_key(self, tenant_id: str, key_id: str) -> tuple[ApiKeyRecord, bool]:
        """RevokeApiKey: (the revoked record, whether it was already revoked)."""
        v = Violations()
        tenant = _key_tenant(v, tenant_id)
        if not key_id:
            v.add("key_id", "is required")
        elif len(key_id) != 16 or any(c not in "0123456789abcdef" for c in key_id):
            v.add("key_id", "must be the 16 hex characters ListApiKeys shows")
        v.raise_if_any()
        await _require_tenant(self._settings, tenant)
        record = await self._store.get_key(key_id)
        if record is None or record.tenant_id != tenant:
            # Same answer for "no such key" and "another tenant's key".
            raise ApiKeyNotFound("no API key with that id for this tenant")
        if record.revoked:
            return record, True
        now = self._clock_ms()
        first = await self._store.revoke_key(key_id, now)
        current = await self._store.get_key(key_id)
        return (current or record), not first

    # -- erasure ---------------------------------------------------------------------

    async def forget(
        self, tenant_id: str, recipient: RawRecipient | None, principal: str
    ) -> ErasureResult:
        """ForgetRecipient."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        region = self._default_region
        settings = await _require_tenant(self._settings, tenant)
        if settings is not None:
            region = settings.default_region or region
        rcpt = val.recipient(v, recipient, region)
        v.raise_if_any()
        assert rcpt is not None
        erasure_id = f"er_{uuid.uuid4().hex}"
        counts = await self._store.forget(tenant, rcpt, erasure_id, principal)
        return ErasureResult(erasure_id, rcpt, counts)


__all__ = [
    "AuthLookup",
    "Caller",
    "CreatedKey",
    "ErasureCounts",
    "ErasureResult",
    "RateLimited",
    "SecurityAuthority",
    "SecurityStore",
    "Unauthenticated",
]
