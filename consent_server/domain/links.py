"""Signed, expiring opt-out and re-subscribe links.

A link token is a Fernet token (``cryptography``): the claims are encrypted with
AES-128-CBC and the whole token is signed with HMAC-SHA256, then URL-safe base64
encoded. So a token is verified without any database lookup, cannot be altered
without the signature failing, and shows nothing readable (no address) in the URL.

The claims: tenant, channel, normalised address, topic, action, issued_at,
expires_at and a random token id. The token id is the evidence recorded with the
change and the root of its event id, so a double-submitted form is one event.

Keys come from one or more secrets (the first mints, all verify: rotate by
prepending a new secret and dropping the old one after the longest link lifetime).
Each secret is stretched with HKDF-SHA256 into a Fernet key, so any high-entropy
string works as a secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .model import Action, Channel, Recipient

CLAIMS_VERSION = 1
DEFAULT_TTL_S = 90 * 24 * 3600
MAX_TTL_S = 400 * 24 * 3600
MIN_SECRET_BYTES = 32
# Fernet tokens are URL-safe base64 with "=" padding; we strip the padding so the
# path segment needs no escaping, and put it back before verifying.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{40,2048}$")
SUBMIT_NONCE_RE = re.compile(r"^[0-9a-f]{16,64}$")
# Clocks of the minting and the verifying process may differ a little.
CLOCK_SKEW_S = 300


class LinkError(Exception):
    """A link token could not be accepted; the message is safe to show."""


class LinkInvalid(LinkError):
    """The token was altered, is not ours, or was minted with a retired secret."""


class LinkExpired(LinkError):
    """The token is authentic but past its expiry."""


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a link token says. Times are Unix seconds."""

    tenant_id: str
    recipient: Recipient
    topic: str
    action: Action
    issued_at_s: int
    expires_at_s: int
    token_id: str


def new_token_id() -> str:
    """A fresh random token id (96 bits)."""
    return "lk_" + secrets.token_hex(12)


def fernet_key(secret: bytes) -> bytes:
    """The Fernet key derived from one secret (HKDF-SHA256, fixed context label)."""
    okm = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"consent-authority link tokens v1"
    ).derive(secret)
    return base64.urlsafe_b64encode(okm)


class LinkCodec:
    """Mints and opens link tokens with a keyring of secrets (first one mints)."""

    def __init__(
        self, secrets_: Sequence[bytes], *, clock_s: Callable[[], float] = time.time
    ) -> None:
        if not secrets_:
            raise ValueError("at least one link secret is needed")
        for s in secrets_:
            if len(s) < MIN_SECRET_BYTES:
                raise ValueError(f"a link secret must be at least {MIN_SECRET_BYTES} bytes")
        self._fernet = MultiFernet([Fernet(fernet_key(s)) for s in secrets_])
        self._clock_s = clock_s

    def now_s(self) -> int:
        """The codec's clock, in whole seconds."""
        return int(self._clock_s())

    def mint(self, claims: LinkClaims) -> str:
        """The URL-safe token for ``claims``."""
        body = json.dumps(
            [
                CLAIMS_VERSION,
                claims.tenant_id,
                claims.recipient.channel.value,
                claims.recipient.address,
                claims.topic,
                claims.action.value,
                claims.issued_at_s,
                claims.expires_at_s,
                claims.token_id,
            ],
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        token = self._fernet.encrypt_at_time(body, claims.issued_at_s)
        return token.decode("ascii").rstrip("=")

    def open(self, token: str) -> LinkClaims:
        """The claims of an authentic, unexpired token; LinkInvalid / LinkExpired otherwise."""
        if not TOKEN_RE.match(token):
            raise LinkInvalid("this link is not valid: it may have been cut short or altered")
        padded = token + "=" * (-len(token) % 4)
        try:
            body = self._fernet.decrypt(padded.encode("ascii"))
        except (InvalidToken, ValueError):
            raise LinkInvalid(
                "this link is not valid: it may have been cut short or altered"
            ) from None
        claims = _parse_claims(body)
        if claims.expires_at_s < self.now_s():
            raise LinkExpired("this link has expired")
        if claims.issued_at_s > self.now_s() + CLOCK_SKEW_S:
            raise LinkInvalid("this link is not valid yet")
        return claims


def _parse_claims(body: bytes) -> LinkClaims:
    # The signature already proved we minted this; the checks only guard against
    # a future format or a bug, so any surprise is "invalid", never a crash.
    try:
        data = json.loads(body)
        if not isinstance(data, list) or len(data) != 9 or data[0] != CLAIMS_VERSION:
            raise ValueError("unknown claims format")
        _, tenant, channel, address, topic, action, issued, expires, token_id = data
        if not all(isinstance(x, str) for x in (tenant, channel, address, topic, action, token_id)):
            raise ValueError("bad claim types")
        if not isinstance(issued, int) or not isinstance(expires, int):
            raise ValueError("bad claim times")
        return LinkClaims(
            tenant_id=tenant,
            recipient=Recipient(Channel(channel), address),
            topic=topic,
            action=Action(action),
            issued_at_s=issued,
            expires_at_s=expires,
            token_id=token_id,
        )
    except (ValueError, TypeError):
        raise LinkInvalid("this link is not valid") from None


def link_event_id(token_id: str, submit_nonce: str = "") -> str:
    """The event id of a link submission: one event per (token, form) however often sent.

    The confirmation page carries a random ``submit_nonce`` in its form, so a
    double-click is one event, while opening the link again later (say after
    re-subscribing elsewhere) is a new decision. RFC 8058 one-click POSTs carry no
    nonce: one event per token.
    """
    if submit_nonce:
        digest = hashlib.sha256(f"{token_id}:{submit_nonce}".encode()).hexdigest()[:24]
        return f"{token_id}.{digest}"
    return f"{token_id}.oneclick"


def fill_resubscribe_url(template: str, resubscribe_url: str) -> str:
    """Replace ``{resubscribe_url}`` in a confirmation template with a fresh signed link.

    Only that placeholder is touched (other braces are left alone), so templates
    with other placeholders can be filled before or after this call. The merge of
    the confirmation rendering calls this with ``ConsentLinks.resubscribe_url``.
    """
    return template.replace("{resubscribe_url}", resubscribe_url)
