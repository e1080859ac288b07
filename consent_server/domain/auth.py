"""API keys, roles and the authorization table (pure: no grpc, no redis).

A key is ``ck_<key_id>_<secret>``: ``key_id`` is 16 lower-case hex characters (it is
the principal recorded on consent events and is safe to show), ``secret`` is 43
url-safe base64 characters (256 random bits). Only SHA-256(secret) is stored;
because the secret is high-entropy, a plain hash is as strong as a slow one and
lets every call be checked in microseconds. Comparisons use ``hmac.compare_digest``.

Authorization is a table: which role may call which RPC (by full method name,
``/consent.v1.ConsentService/OptOut``), plus one rule for the admin service:
every ``/consent.v1.ConsentAdminService/*`` method needs the admin role, so admin
RPCs added later are covered without being listed. Anything not in the table is
denied (default deny). A key acts for its own tenant only; an operator key (tenant
``*``) acts for every tenant.

Error hierarchy (all are ConsentError)::

    AuthError
    ├── Unauthenticated   no key, a malformed key, an unknown or revoked key
    ├── PermissionDenied  the key's role or tenant does not allow the call
    └── RateLimited       the key's request budget is spent; retry after a delay
    ApiKeyNotFound (a NotFound)  no such key for this tenant (same for another tenant's)
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from .errors import ConsentError, NotFound
from .masking import mask_text

OPERATOR_TENANT = "*"
KEY_PREFIX = "ck_"
_KEY_RE = re.compile(r"^ck_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")

CONSENT_SERVICE = "consent.v1.ConsentService"
ADMIN_SERVICE = "consent.v1.ConsentAdminService"
# Services every caller may use without a key: liveness and discovery only.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


class Role(enum.Enum):
    """What a key may do; the value is the name used on the command line and in the store."""

    ADMIN = "admin"
    WRITER = "writer"
    SENDER = "sender"
    READER = "reader"


def _m(name: str) -> str:
    return f"/{CONSENT_SERVICE}/{name}"


CHECK = _m("CheckConsent")
BATCH_CHECK = _m("BatchCheckConsent")
OPT_OUT = _m("OptOut")
OPT_IN = _m("OptIn")
SEND = _m("SendIfAllowed")
INBOUND = _m("HandleInboundMessage")
HISTORY = _m("ListConsentEvents")
MESSAGE_STATUS = _m("GetMessageStatus")
# A link is a bearer capability to opt the customer out or back in, so minting one needs
# the roles that may record those changes themselves (not sender or reader).
LINK = _m("CreateConsentLink")
# The change feed reads what ListConsentEvents reads, for every recipient of the tenant.
WATCH = _m("WatchConsentEvents")

#: Every ConsentService method; the table below must say who may call each.
CONSENT_METHODS = frozenset(
    {CHECK, BATCH_CHECK, OPT_OUT, OPT_IN, SEND, INBOUND, HISTORY, MESSAGE_STATUS, LINK, WATCH}
)

#: Admin methods only an operator key (tenant ``*``) may call, whatever tenant_id they
#: name: a tenant's own admin key must not create or delete tenants.
OPERATOR_METHODS = frozenset(
    f"/{ADMIN_SERVICE}/{name}"
    for name in ("CreateTenant", "GetTenant", "ListTenants", "DeleteTenant")
)

#: Which ConsentService methods each role may call (the README's roles table).
ROLE_METHODS: dict[Role, frozenset[str]] = {
    Role.ADMIN: CONSENT_METHODS,
    Role.WRITER: frozenset(
        {OPT_OUT, OPT_IN, INBOUND, SEND, CHECK, BATCH_CHECK, HISTORY, LINK, WATCH}
    ),
    Role.SENDER: frozenset({CHECK, BATCH_CHECK, SEND, MESSAGE_STATUS}),
    Role.READER: frozenset({CHECK, BATCH_CHECK, HISTORY, MESSAGE_STATUS, WATCH}),
}


class AuthError(ConsentError):
    """Base of authentication and authorization failures."""


class Unauthenticated(AuthError):
    """No usable key: missing, malformed, unknown or revoked (one message for all)."""


class PermissionDenied(AuthError):
    """The key is valid but may not make this call; ``missing`` names what it lacks."""

    def __init__(self, message: str, *, reason: str, missing: str) -> None:
        self.reason = reason
        self.missing = missing
        super().__init__(message)


class RateLimited(AuthError):
    """The key's rate limit is spent; ``retry_after_ms`` says when a token is back."""

    def __init__(self, retry_after_ms: int) -> None:
        self.retry_after_ms = max(1, retry_after_ms)
        super().__init__(f"rate limit of this API key exceeded; retry in {self.retry_after_ms} ms")


class ApiKeyNotFound(NotFound):
    """No key with that id for this tenant (the same answer for another tenant's key)."""


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored key (never the secret itself)."""

    key_id: str
    tenant_id: str
    role: Role
    secret_hash: str
    description: str = ""
    created_at_ms: int = 0
    created_by: str = ""
    revoked_at_ms: int = 0
    rate_limit_per_s: int = 0

    @property
    def revoked(self) -> bool:
        """True once the key was revoked: it no longer authenticates."""
        return self.revoked_at_ms > 0


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: who (the principal recorded on events) and what it may do."""

    key_id: str
    tenant_id: str
    role: Role

    @property
    def principal(self) -> str:
        """The principal recorded on consent events: the key id."""
        return self.key_id


def new_key() -> tuple[str, str, str]:
    """A fresh key: (key_id, the full ``ck_`` token to show once, the hash to store)."""
    key_id = secrets.token_hex(8)
    # An id with a long digit run would look like a phone number to the log masking
    # and be shown mangled; draw again (about one id in six).
    while re.search(r"\d{8}", key_id):
        key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", hash_secret(secret)


def parse_key(token: str) -> tuple[str, str]:
    """(key_id, secret) of a ``ck_`` token; Unauthenticated when it is not one."""
    match = _KEY_RE.fullmatch(token)
    if not match:
        raise Unauthenticated("the API key is not valid (unknown, revoked or malformed)")
    return match.group(1), match.group(2)


def is_key_token(token: str) -> bool:
    """True when ``token`` has the shape of an API key."""
    return _KEY_RE.fullmatch(token) is not None


def hash_secret(secret: str) -> str:
    """The stored form of a secret: SHA-256, hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def bearer_token(header: str | None) -> str:
    """The key in an ``authorization: Bearer <key>`` header; Unauthenticated if absent."""
    if not header:
        raise Unauthenticated(
            "this call needs an API key: send the metadata 'authorization: Bearer ck_...'"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization metadata must be 'Bearer <API key>'")
    return token.strip()


def verify(record: ApiKeyRecord | None, secret: str) -> Caller:
    """The caller a presented secret proves, or Unauthenticated (same message for every cause)."""
    presented = hash_secret(secret)
    # Compare even when the record is missing, so timing does not tell unknown from wrong.
    expected = record.secret_hash if record is not None else "0" * 64
    ok = hmac.compare_digest(presented.encode(), expected.encode())
    if record is None or not ok or record.revoked:
        raise Unauthenticated("the API key is not valid (unknown, revoked or malformed)")
    return Caller(record.key_id, record.tenant_id, record.role)


def service_of(method: str) -> str:
    """``/pkg.Service/Method`` -> ``pkg.Service``."""
    return method.lstrip("/").split("/", 1)[0]


def is_open(method: str) -> bool:
    """True for methods anyone may call without a key (health, reflection)."""
    return service_of(method) in OPEN_SERVICES


def roles_allowed(method: str) -> frozenset[Role]:
    """The roles that may call ``method`` (empty: nobody, e.g. an unknown method)."""
    if service_of(method) == ADMIN_SERVICE:
        return frozenset({Role.ADMIN})
    return frozenset(role for role, methods in ROLE_METHODS.items() if method in methods)


def authorize(caller: Caller, method: str, request_tenant: str | None) -> None:
    """Raise PermissionDenied unless ``caller`` may call ``method`` for ``request_tenant``.

    ``request_tenant`` is the request's ``tenant_id`` (None when the request has no such
    field: then only an operator key may call it). The message names the role or the
    tenant that was missing and says nothing about whether any tenant exists.
    """
    allowed = roles_allowed(method)
    if caller.role not in allowed:
        needed = ", ".join(sorted(r.value for r in allowed)) or "none (not callable with a key)"
        raise PermissionDenied(
            f"API key role '{caller.role.value}' may not call {method.lstrip('/')}; "
            f"it needs one of these roles: {needed}",
            reason="ROLE_NOT_ALLOWED",
            missing=f"role:{'|'.join(sorted(r.value for r in allowed))}",
        )
    if caller.tenant_id == OPERATOR_TENANT:
        return
    if method in OPERATOR_METHODS:
        raise PermissionDenied(
            f"{method.lstrip('/')} manages tenants; it needs an operator key (tenant *)",
            reason="TENANT_NOT_ALLOWED",
            missing="tenant:*",
        )
    if request_tenant is None:
        raise PermissionDenied(
            f"{method.lstrip('/')} is not scoped to a tenant; it needs an operator key (tenant *)",
            reason="TENANT_NOT_ALLOWED",
            missing="tenant:*",
        )
    if request_tenant != caller.tenant_id:
        # Name the tenant the caller asked for (it knows it already), never any other.
        named = mask_text(request_tenant[:64])
        raise PermissionDenied(
            f"this API key may not act for tenant_id '{named}'; use a key issued for that tenant",
            reason="TENANT_NOT_ALLOWED",
            missing=f"tenant:{named}",
        )
