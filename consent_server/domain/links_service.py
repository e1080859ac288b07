"""Consent links: signed opt-out and re-subscribe links and what submitting
one records.

A submitted link records consent through ConsentAuthority.change, the same path as
OptOut/OptIn, so validation, idempotency by event id and out-of-order handling are
shared. Nothing here knows about HTTP; consent_server.http maps outcomes to responses.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from . import page_messages
from . import validation as val
from .errors import InvalidArgument, NotConfigured
from .links import (
    DEFAULT_TTL_S,
    MAX_TTL_S,
    SUBMIT_NONCE_RE,
    LinkClaims,
    LinkCodec,
    LinkError,
    LinkInvalid,
    fill_resubscribe_url,
    link_event_id,
    new_token_id,
)
from .model import Action, Recipient, Source
from .ports import ConsentStore
from .service import ChangeResult, ConsentAuthority
from .validation import RawRecipient, Violations

LINK_PRINCIPAL = "link"
ONE_CLICK_BODY = "List-Unsubscribe=One-Click"

Keyring = Callable[[], Awaitable[LinkCodec]]

# A short code: secrets.token_urlsafe(9) = 12 URL-safe characters, 72 random bits.
# Guessing one live code among a billion takes ~2^42 tries, and the edge limits tries.
SHORT_CODE_BYTES = 9
SHORT_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{12}$")
SHORT_PATH = "l"


class ShortLinkNotFound(LinkError):
    """No live short link has this code (never issued, expired, or the person was erased)."""


@dataclass(frozen=True, slots=True)
class ShortLink:
    """What a short code stands for: the tenant and the signed token it abbreviates."""

    tenant_id: str
    token: str


class ShortLinkStore(Protocol):
    """Where short codes live (raises StoreUnavailable). The token is the signed link
    itself (encrypted claims), so the store holds no readable address under a code."""

    async def put_short_link(
        self, code: str, link: ShortLink, recipient: Recipient, expires_at_s: int
    ) -> None:
        """Store ``code`` -> ``link`` until ``expires_at_s``, and index the code under the
        recipient so that erasing the recipient voids it."""
        ...

    async def short_link(self, code: str) -> ShortLink | None:
        """The link behind ``code``, or None when unknown or expired."""
        ...

    async def short_link_indexed(self, code: str, tenant_id: str, recipient: Recipient) -> bool:
        """True while ``code`` is in the recipient's index (erasure removes the index)."""
        ...

    async def erased(self, tenant_id: str, recipient: Recipient) -> bool:
        """True when the recipient was erased (ForgetRecipient left its tombstone)."""
        ...


def new_short_code() -> str:
    """A fresh random short code (12 characters)."""
    return secrets.token_urlsafe(SHORT_CODE_BYTES)


class LinkSecretStore(Protocol):
    """Where the deployment's generated link secret lives (raises StoreUnavailable)."""

    async def link_secret(self) -> bytes:
        """The deployment's link secret, generated and stored once when absent."""
        ...


def static_keyring(secrets_: tuple[bytes, ...]) -> Keyring:
    """A keyring of configured secrets (CONSENT_LINK_SECRET)."""
    codec = LinkCodec(secrets_)

    async def keyring() -> LinkCodec:
        return codec

    return keyring


def stored_keyring(store: LinkSecretStore) -> Keyring:
    """A keyring whose one secret is generated once and kept in the store.

    Read on first use (the server may start while Redis is down) and then cached;
    StoreUnavailable until the store answers.
    """
    cached: list[LinkCodec] = []

    async def keyring() -> LinkCodec:
        if not cached:
            cached.append(LinkCodec([await store.link_secret()]))
        return cached[0]

    return keyring


# -- consent links -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkSet:
    """Minted links for one recipient and scope, and the e-mail headers that carry them."""

    recipient: Recipient
    topic: str
    opt_out_url: str
    resubscribe_url: str
    opt_out_token_id: str
    resubscribe_token_id: str
    issued_at_s: int
    expires_at_s: int
    short_opt_out_url: str = ""
    short_resubscribe_url: str = ""

    @property
    def list_unsubscribe(self) -> str:
        """The RFC 2369 ``List-Unsubscribe`` header value (the opt-out URL)."""
        return f"<{self.opt_out_url}>"

    @property
    def list_unsubscribe_post(self) -> str:
        """The RFC 8058 ``List-Unsubscribe-Post`` header value."""
        return ONE_CLICK_BODY


def link_path(action: Action) -> str:
    """``u`` for opt-out links, ``s`` for (re-)subscribe links."""
    return "u" if action is Action.OPT_OUT else "s"


class ConsentLinks:
    """Mints signed links and records the change when a customer submits one."""

    def __init__(
        self,
        authority: ConsentAuthority,
        store: ConsentStore,
        keyring: Keyring,
        public_url: str | None,
        *,
        default_region: str | None = None,
        short_links: ShortLinkStore | None = None,
    ) -> None:
        self._short = short_links
        self._a = authority
        self._store = store
        self._keyring = keyring
        self._base = public_url.rstrip("/") if public_url else None
        self._default_region = default_region

    def _url(self, action: Action, token: str) -> str:
        assert self._base is not None
        return f"{self._base}/{link_path(action)}/{quote(token, safe='')}"

    async def _mint(
        self,
        codec: LinkCodec,
        tenant_id: str,
        rcpt: Recipient,
        topic: str,
        action: Action,
        ttl: int,
    ) -> tuple[str, LinkClaims]:
        now = codec.now_s()
        claims = LinkClaims(tenant_id, rcpt, topic, action, now, now + ttl, new_token_id())
        return codec.mint(claims), claims

    async def create(
        self,
        tenant_id: str,
        recipient: RawRecipient | None,
        topic: str,
        ttl_s: int,
        *,
        short: bool = False,
    ) -> LinkSet:
        """CreateConsentLink: an opt-out and a re-subscribe link, valid ``ttl_s`` (0 = 90 d).

        ``short`` also stores a short code for each (see short_link); none is stored for
        a recipient who was erased (the short URLs are then empty), so no request can
        re-create data about an erased person."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        settings = await self._store.tenant_settings(tenant) if tenant else None
        region = (settings.default_region if settings else None) or self._default_region
        rcpt = val.recipient(v, recipient, region)
        norm_topic = val.topic(v, topic)
        if ttl_s < 0 or ttl_s > MAX_TTL_S:
            v.add("ttl", f"must be between 0 and {MAX_TTL_S} seconds (0 = {DEFAULT_TTL_S})")
        v.raise_if_any()
        assert rcpt is not None
        if self._base is None:
            raise NotConfigured(
                "consent links need CONSENT_PUBLIC_URL (or CONSENT_HTTP_LISTEN) on the server"
            )
        codec = await self._keyring()
        ttl = ttl_s or DEFAULT_TTL_S
        out_token, out = await self._mint(codec, tenant, rcpt, norm_topic, Action.OPT_OUT, ttl)
        in_token, inn = await self._mint(codec, tenant, rcpt, norm_topic, Action.OPT_IN, ttl)
        short_out = short_in = ""
        if short:
            if self._short is None:
                raise NotConfigured("short links need the server's Redis store")
            if not await self._short.erased(tenant, rcpt):
                short_out = await self._put_short(tenant, rcpt, out_token, out.expires_at_s)
                short_in = await self._put_short(tenant, rcpt, in_token, inn.expires_at_s)
        return LinkSet(
            recipient=rcpt,
            topic=norm_topic,
            opt_out_url=self._url(Action.OPT_OUT, out_token),
            resubscribe_url=self._url(Action.OPT_IN, in_token),
            opt_out_token_id=out.token_id,
            resubscribe_token_id=inn.token_id,
            issued_at_s=out.issued_at_s,
            expires_at_s=out.expires_at_s,
            short_opt_out_url=short_out,
            short_resubscribe_url=short_in,
        )

    async def _put_short(
        self, tenant_id: str, recipient: Recipient, token: str, expires_at_s: int
    ) -> str:
        assert self._short is not None and self._base is not None
        code = new_short_code()
        await self._short.put_short_link(code, ShortLink(tenant_id, token), recipient, expires_at_s)
        return f"{self._base}/{SHORT_PATH}/{code}"

    async def open_short(self, code: str) -> tuple[str, LinkClaims]:
        """The signed token behind a short code and its claims (read-only).

        ShortLinkNotFound, one answer for every reason (malformed, never issued,
        expired, its person erased), so the page reveals nothing about the code;
        LinkExpired / TenantNotFound as for the signed link.
        """
        if self._short is None or not SHORT_CODE_RE.fullmatch(code):
            raise ShortLinkNotFound("no such link")
        link = await self._short.short_link(code)
        if link is None:
            raise ShortLinkNotFound("no such link")
        claims = (await self._keyring()).open(link.token)
        if claims.tenant_id != link.tenant_id:  # never act for another tenant
            raise ShortLinkNotFound("no such link")
        if not await self._short.short_link_indexed(code, claims.tenant_id, claims.recipient):
            raise ShortLinkNotFound("no such link")  # erased since it was issued
        await self._a.require_tenant(claims.tenant_id)
        return link.token, claims

    async def page_settings(self, tenant_id: str) -> tuple[str, list[str]]:
        """The business name (the tenant id when unset) and page languages (first =
        default; see page_messages.supported_languages) of a tenant's link pages."""
        settings = await self._store.tenant_settings(tenant_id)
        return (
            settings.business_name or tenant_id,
            page_messages.supported_languages(settings.page_languages, settings.default_language),
        )

    async def resubscribe_url(self, tenant_id: str, recipient: Recipient, topic: str) -> str:
        """A fresh signed re-subscribe link for an already normalised recipient.

        The confirmation rendering fills ``{resubscribe_url}`` with this (see
        links.fill_resubscribe_url); "" when links are not configured, so a template
        still renders.
        """
        if self._base is None:
            return ""
        codec = await self._keyring()
        token, _ = await self._mint(
            codec, tenant_id, recipient, topic, Action.OPT_IN, DEFAULT_TTL_S
        )
        return self._url(Action.OPT_IN, token)

    async def render_confirmation(
        self, template: str, tenant_id: str, recipient: Recipient, topic: str
    ) -> str:
        """``template`` with ``{resubscribe_url}`` filled by a fresh signed link.

        For the inbound flow's confirmation rendering: call it on the tenant's
        confirmation template after an opt-out (``recipient`` normalised, ``topic`` the
        scope that was opted out of). A link is minted only when the placeholder is
        there; it becomes "" when links are not configured.
        """
        if "{resubscribe_url}" not in template:
            return template
        return fill_resubscribe_url(
            template, await self.resubscribe_url(tenant_id, recipient, topic)
        )

    async def open(self, token: str, action: Action) -> LinkClaims:
        """The claims of a token presented on the ``action`` path (read-only).

        Raises LinkInvalid / LinkExpired; an opt-out token on the re-subscribe path
        (or the reverse) is invalid.
        """
        claims = (await self._keyring()).open(token)
        if claims.action is not action:
            raise LinkInvalid("this link is not valid here")
        await self._a.require_tenant(claims.tenant_id)  # TenantNotFound: 404, no change
        return claims

    async def submit(
        self, token: str, action: Action, submit_nonce: str = ""
    ) -> tuple[LinkClaims, ChangeResult]:
        """Record the change a link asks for (SOURCE_LINK, evidence = token id).

        ``submit_nonce`` comes from the confirmation page's form (see
        links.link_event_id); empty for RFC 8058 one-click. Returns the token's claims
        and the change's outcome.
        """
        claims = await self.open(token, action)
        if submit_nonce and not SUBMIT_NONCE_RE.match(submit_nonce):
            raise InvalidArgument.single("nonce", "is not a nonce from the confirmation page")
        recipient = RawRecipient(claims.recipient.channel, claims.recipient.address)

        async def record(event_id: str) -> ChangeResult:
            return await self._a.change(
                claims.action,
                tenant_id=claims.tenant_id,
                recipient=recipient,
                topic=claims.topic,
                source=Source.LINK,
                evidence=claims.token_id,
                occurred_at=None,
                event_id=event_id,
                principal=LINK_PRINCIPAL,
            )

        result = await record(link_event_id(claims.token_id, submit_nonce))
        if result.outcome.duplicate and not submit_nonce and claims.action is Action.OPT_OUT:
            # A one-click POST has no form nonce, so its event id is the token's: mail
            # providers' retries are one event. But if the customer re-subscribed since,
            # the same unsubscribe link must work again.
            now = await self._a.scope_check(claims.tenant_id, recipient, claims.topic)
            if now.decision.allowed:
                result = await record(link_event_id(claims.token_id, secrets.token_hex(8)))
        return claims, result
