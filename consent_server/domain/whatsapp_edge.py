"""The WhatsApp webhook use case: verify, bind to a tenant, apply, keep the rest.

A notification is applied only to the tenant that owns it: each ``changes[]`` element
names the business phone number it is about (``metadata.phone_number_id``), and a
tenant registers its numbers with SetWhatsAppWebhook (a number belongs to one tenant
only). On a tenant's own URL an entry for another number changes nothing (counted);
on the app-level URL each entry is routed to the tenant that owns its number and
checked with that tenant's app secret. A body that binds to nobody is refused (not
2xx), so Meta redelivers it once the number is registered.

Consent changes go through ConsentAuthority (the same validation, idempotency and
ordering as OptOut/OptIn); replies go to the HandleInboundMessage use case. What
cannot be applied is never dropped silently: it is counted and, when it belongs to a
tenant, kept in the tenant's bounded dead-letter list for an operator to read, replay
or discard. A store outage is raised (the edge answers 503, Meta redelivers, every
item is idempotent).

A 131050 failure ("the user stopped marketing messages") is a claim about a message:
it opts the recipient out only when this tenant sent that message (its wamid maps to
one of the tenant's messages), and then the opt-out is for the recipient we sent it
to. For a wamid the tenant never sent it changes nothing: a party holding the shared
app secret could claim it for anyone. It is kept as ``unknown_message`` so that an
operator who knows the message was the tenant's (sent outside this service) can
replay it, which records the opt-out.

Nothing here knows about HTTP: refusals are WebhookRefused subclasses, mapped to
status codes by consent_server.http.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from . import page_tokens
from . import validation as val
from .errors import ConsentError, InvalidArgument, NotFound, StoreUnavailable, TenantNotFound
from .masking import mask_address, mask_text
from .model import Recipient, Source
from .service import ConsentAuthority
from .validation import RawRecipient, Violations
from .whatsapp import (
    PHONE_NUMBER_ID_RE,
    InboundHandler,
    InboundReply,
    ProviderConsentChange,
    StatusHandler,
    StatusReceipt,
    Unapplied,
    UnappliedItem,
    WebhookBatch,
    WebhookMalformed,
    body_digest,
    parse_item,
    parse_webhook,
    verify_signature,
)

log = logging.getLogger("consent_server.edge")

WEBHOOK_PRINCIPAL = "whatsapp-webhook"
REPLAY_PRINCIPAL = "whatsapp-webhook-replay"
MAX_VERIFY_TOKEN = 256
MAX_APP_SECRET = 256
MAX_PHONE_NUMBER_IDS = 20
MAX_DEAD_LETTERS = 1000
MAX_DEAD_LETTER_PAGE = 100
MAX_ROUTED_NUMBERS = 50  # distinct phone number ids looked up per app-level notification
_SECRETISH_RE = re.compile(r"^[\x21-\x7e]+$")

# Why an item was not applied (the ``reason`` of a dead letter and of the metric).
REASON_MALFORMED = "malformed"  # a part we must read but cannot (no sender, not an object)
REASON_UNSUPPORTED = "unsupported"  # a message type we cannot read words from
REASON_REFUSED = "refused"  # the domain refused it (e.g. an opt-in dated far ahead)
REASON_FAILED = "failed"  # applying it failed unexpectedly
REASON_UNKNOWN_MESSAGE = "unknown_message"  # a 131050 for a wamid this tenant never sent
REASON_UNBOUND = "unbound"  # no phone_number_id to bind it by (kept for the URL's tenant)
# Counted only, never stored: they belong to no tenant we may show them to.
REASON_FOREIGN_NUMBER = "foreign_number"  # a number that is not the URL's tenant's
REASON_UNROUTED = "unrouted"  # app-level URL: no tenant owns the number
REASON_BAD_SIGNATURE = "bad_signature"  # app-level URL: not signed by the owner's secret


# -- refusals (the HTTP edge maps each to a status code) ---------------------------------


class WebhookRefused(ConsentError):
    """A webhook request refused before anything was recorded."""


class WebhookNotConfigured(WebhookRefused):
    """No webhook is configured for the tenant (or no tenant owns the numbers)."""


class WebhookVerificationFailed(WebhookRefused):
    """The subscription handshake named a wrong mode or verify token."""


class WebhookBadRequest(WebhookRefused):
    """The request is not a webhook notification or handshake at all."""


class WebhookSignatureInvalid(WebhookRefused):
    """X-Hub-Signature-256 is missing or does not match the app secret."""


class WebhookNotBound(WebhookRefused):
    """No entry of the notification is about one of the tenant's phone numbers."""


class PhoneNumberTaken(ConsentError):
    """A phone number id is already registered to another tenant's webhook."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"phone_number_ids[{index}] belongs to another tenant")


# -- configuration and storage -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WhatsAppWebhookConfig:
    """A tenant's WhatsApp webhook settings. ``app_secret`` is never returned or logged.

    ``phone_number_ids`` are the business numbers whose notifications are the tenant's;
    ``waba_id`` is the WhatsApp Business Account id (informational, "" = not given).
    """

    verify_token: str
    app_secret: str
    phone_number_ids: tuple[str, ...] = ()
    waba_id: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter(UnappliedItem):
    """A notification item kept because it could not be applied.

    ``raw`` is the item as received (JSON); ``body_digest`` and ``path`` identify it
    in the signed body, so a replay derives the same event ids as the first delivery.
    """

    id: str
    tenant_id: str
    received_at_ms: int
    body_digest: str
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """A page of a tenant's dead letters, newest first."""

    items: list[DeadLetter]
    next_page_token: str
    total: int


class WhatsAppStore(Protocol):
    """Storage of the WhatsApp edge (every method raises StoreUnavailable)."""

    async def whatsapp_webhook(self, tenant_id: str) -> WhatsAppWebhookConfig | None:
        """The tenant's webhook settings, or None when none are stored."""
        ...

    async def set_whatsapp_webhook(self, tenant_id: str, config: WhatsAppWebhookConfig) -> None:
        """Store the tenant's settings and claim its phone number ids (PhoneNumberTaken
        when one is another tenant's: then nothing changes)."""
        ...

    async def delete_whatsapp_webhook(self, tenant_id: str) -> bool:
        """Remove the tenant's settings and release its numbers; True when there were some."""
        ...

    async def tenant_for_phone_number(self, phone_number_id: str) -> str | None:
        """The tenant that registered ``phone_number_id``, if any."""
        ...

    async def verify_token_known(self, verify_token: str) -> bool:
        """True when some tenant's webhook uses ``verify_token`` (app-level handshake)."""
        ...

    async def sent_message_recipient(self, tenant_id: str, wamid: str) -> Recipient | None:
        """The recipient of the tenant's message the provider named ``wamid``, if any."""
        ...

    async def add_dead_letters(self, items: Sequence[DeadLetter], limit: int) -> int:
        """Keep ``items`` (an id already kept stays as it is), each tenant's list cut to
        its newest ``limit``; the number of older items pushed out."""
        ...

    async def put_dead_letter(self, item: DeadLetter) -> None:
        """Replace a kept item (after a replay that failed again)."""
        ...

    async def dead_letters(self, tenant_id: str, offset: int, limit: int) -> DeadLetterPage:
        """Up to ``limit`` items newest first from ``offset``; the token is left empty."""
        ...

    async def dead_letter(self, tenant_id: str, item_id: str) -> DeadLetter | None:
        """One kept item, or None."""
        ...

    async def delete_dead_letter(self, tenant_id: str, item_id: str) -> bool:
        """Remove one kept item; True when it was there."""
        ...


class EdgeObserver(Protocol):
    """Where the edge reports what it could not apply (the metrics)."""

    def unapplied(self, reason: str, count: int) -> None:
        """``count`` items were not applied for ``reason``."""
        ...

    def evicted(self, count: int) -> None:
        """``count`` kept items were pushed out of a full dead-letter list."""
        ...


class _NoObserver:
    def unapplied(self, reason: str, count: int) -> None:
        pass

    def evicted(self, count: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class WebhookReport:
    """What one notification did (for logs and tests)."""

    replies: int
    statuses: int
    changes: int
    ignored: int
    failed: int
    kept: int = 0
    not_bound: int = 0


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What replaying a dead letter did: ``applied`` (and removed), else kept again."""

    applied: bool
    item: DeadLetter


def validate_webhook_config(
    verify_token: str,
    app_secret: str,
    phone_number_ids: Sequence[str] = (),
    waba_id: str = "",
) -> WhatsAppWebhookConfig:
    """Check admin input for SetWhatsAppWebhook; InvalidArgument names bad fields."""
    v = Violations()
    for name, value, limit in (
        ("verify_token", verify_token, MAX_VERIFY_TOKEN),
        ("app_secret", app_secret, MAX_APP_SECRET),
    ):
        if not value:
            v.add(name, "is required")
        elif len(value) > limit or not _SECRETISH_RE.match(value):
            v.add(name, f"must be 1-{limit} printable ASCII characters without spaces")
    if not phone_number_ids:
        v.add(
            "phone_number_ids",
            "is required: the WhatsApp phone number ids whose notifications are this "
            "tenant's (WhatsApp Manager > phone numbers)",
        )
    elif len(phone_number_ids) > MAX_PHONE_NUMBER_IDS:
        v.add("phone_number_ids", f"must name at most {MAX_PHONE_NUMBER_IDS} numbers")
    seen: set[str] = set()
    for i, pnid in enumerate(phone_number_ids):
        if not PHONE_NUMBER_ID_RE.fullmatch(pnid):
            v.add(f"phone_number_ids[{i}]", "must be 1-32 digits")
        elif pnid in seen:
            v.add(f"phone_number_ids[{i}]", "is listed twice")
        seen.add(pnid)
    if waba_id and not PHONE_NUMBER_ID_RE.fullmatch(waba_id):
        v.add("waba_id", "must be 1-32 digits")
    v.raise_if_any()
    return WhatsAppWebhookConfig(verify_token, app_secret, tuple(phone_number_ids), waba_id)


def dead_letter_id(tenant_id: str, digest: str, path: str) -> str:
    """A kept item's id: the same for every redelivery of the same body."""
    return "dl_" + hashlib.sha256(f"{tenant_id}|{digest}|{path}".encode()).hexdigest()[:24]


def encode_page_token(offset: int) -> str:
    """The opaque token of a dead-letter page."""
    return page_tokens.encode("dl1", str(offset))


def decode_page_token(token: str) -> int:
    """The offset a page token continues at; ValueError when it is not ours."""
    return page_tokens.decode_number("dl1", token, 9)


def _pnid_hint(pnid: str) -> str:
    """A phone number id for logs: its last four digits."""
    return f"…{pnid[-4:]}" if pnid else "(none)"


@dataclass(slots=True)
class _Outcome:
    kept: list[Unapplied] = field(default_factory=list)
    failed: int = 0


class WhatsAppEdge:
    """Verifies, binds and translates WhatsApp webhooks, then records or hands on items."""

    def __init__(
        self,
        authority: ConsentAuthority,
        store: WhatsAppStore,
        on_inbound: InboundHandler,
        on_status: StatusHandler,
        *,
        observer: EdgeObserver | None = None,
        clock_ms: Callable[[], int] | None = None,
        dead_letter_limit: int = MAX_DEAD_LETTERS,
    ) -> None:
        self._a = authority
        self._store = store
        self._on_inbound = on_inbound
        self._on_status = on_status
        self._observer: EdgeObserver = observer or _NoObserver()
        self._clock_ms = clock_ms or val_now_ms
        self._limit = dead_letter_limit

    # -- handshakes --

    async def _config(self, tenant_id: str) -> WhatsAppWebhookConfig:
        if not val.TENANT_RE.match(tenant_id):
            raise WebhookNotConfigured("no WhatsApp webhook here")
        try:
            await self._a.require_tenant(tenant_id)
        except TenantNotFound:
            # The same answer as an unconfigured tenant: the path is public.
            raise WebhookNotConfigured(
                "no WhatsApp webhook is configured for this tenant"
            ) from None
        config = await self._store.whatsapp_webhook(tenant_id)
        if config is None:
            raise WebhookNotConfigured("no WhatsApp webhook is configured for this tenant")
        return config

    @staticmethod
    def _challenge(challenge: str) -> str:
        if not challenge or len(challenge) > 1024:
            raise WebhookBadRequest("hub.challenge is missing or too long")
        return challenge

    async def handshake(self, tenant_id: str, mode: str, verify_token: str, challenge: str) -> str:
        """The GET verification: the challenge to echo, or a WebhookRefused."""
        config = await self._config(tenant_id)
        # Constant-time comparison: the verify token is a shared secret.
        if mode != "subscribe" or not hmac.compare_digest(
            verify_token.encode("utf-8", "replace"), config.verify_token.encode()
        ):
            raise WebhookVerificationFailed(
                "verification failed: wrong hub.mode or hub.verify_token"
            )
        return self._challenge(challenge)

    async def app_handshake(self, mode: str, verify_token: str, challenge: str) -> str:
        """The app-level URL's GET verification: any tenant's verify token passes."""
        if (
            mode != "subscribe"
            or not verify_token
            or len(verify_token) > MAX_VERIFY_TOKEN
            or not await self._store.verify_token_known(verify_token)
        ):
            raise WebhookVerificationFailed(
                "verification failed: wrong hub.mode or hub.verify_token"
            )
        return self._challenge(challenge)

    # -- notifications --

    @staticmethod
    def _parse(tenant_id: str, body: bytes) -> WebhookBatch:
        try:
            return parse_webhook(tenant_id, body)
        except WebhookMalformed as exc:
            raise WebhookBadRequest(str(exc)) from None

    async def receive(self, tenant_id: str, body: bytes, signature: str | None) -> WebhookReport:
        """A notification POSTed to the tenant's own URL.

        WebhookRefused before anything is recorded; StoreUnavailable when the store is
        down. Entries for numbers that are not the tenant's change nothing; when no
        entry is the tenant's, WebhookNotBound (Meta redelivers once registered).
        """
        config = await self._config(tenant_id)
        if not verify_signature(config.app_secret, body, signature):
            raise WebhookSignatureInvalid("missing or bad X-Hub-Signature-256")
        batch = self._parse(tenant_id, body)
        own = set(config.phone_number_ids)
        if not own:
            # Settings stored before phone numbers were required bind nothing: refuse
            # (Meta keeps redelivering) until SetWhatsAppWebhook names the numbers.
            log.error(
                "whatsapp webhook has no registered phone number ids: call "
                "SetWhatsAppWebhook with phone_number_ids",
                extra={"tenant": tenant_id},
            )
        mine = _select(batch, lambda pnid: pnid in own or pnid == "")
        foreign = _size(batch) - _size(mine)
        if foreign:
            self._count(REASON_FOREIGN_NUMBER, foreign)
            log.warning(
                "whatsapp notification for numbers this tenant did not register: ignored",
                extra={
                    "tenant": tenant_id,
                    "items": foreign,
                    "phone_number_ids": ",".join(
                        sorted({_pnid_hint(p) for p in _pnids(batch) - own})
                    ),
                },
            )
            if not _size(mine):
                raise WebhookNotBound(
                    "no entry is about one of this tenant's phone numbers "
                    "(register them with SetWhatsAppWebhook)"
                )
        return await self._process(tenant_id, _unbound(mine), body_digest(body), foreign)

    async def receive_app(self, body: bytes, signature: str | None) -> WebhookReport:
        """A notification POSTed to the app-level URL: each entry goes to the tenant that
        registered its phone number, checked with that tenant's app secret.

        WebhookNotConfigured when no tenant owns any of its numbers, WebhookSignatureInvalid
        when no owner's secret signs it; otherwise the owners' entries are applied and the
        rest counted.
        """
        batch = self._parse("", body)
        owners: dict[str, str] = {}
        # The body is not authenticated yet: look up a bounded number of numbers.
        for pnid in sorted(_pnids(batch) - {""})[:MAX_ROUTED_NUMBERS]:
            tenant = await self._store.tenant_for_phone_number(pnid)
            if tenant is not None:
                owners[pnid] = tenant
        configs = {t: await self._store.whatsapp_webhook(t) for t in set(owners.values())}
        # The tenant's settings are the truth; the index only finds them.
        owners = {
            p: t
            for p, t in owners.items()
            if (c := configs[t]) is not None and p in c.phone_number_ids
        }
        verified: dict[str, bool] = {}
        for tenant in set(owners.values()):
            config = configs[tenant]
            verified[tenant] = config is not None and verify_signature(
                config.app_secret, body, signature
            )
        routed = _select(batch, lambda pnid: pnid in owners)
        unrouted = _size(batch) - _size(routed)
        if not owners:
            self._count(REASON_UNROUTED, unrouted)
            raise WebhookNotConfigured("no tenant registered these phone number ids")
        if not any(verified.values()):
            raise WebhookSignatureInvalid("missing or bad X-Hub-Signature-256")
        if unrouted:
            self._count(REASON_UNROUTED, unrouted)
            log.warning("whatsapp entries no tenant registered: ignored", extra={"items": unrouted})
        digest = body_digest(body)
        reports: list[WebhookReport] = []
        not_bound = unrouted
        for tenant, ok in sorted(verified.items()):
            part = _select(batch, functools.partial(_owned_by, owners, tenant))
            if not ok:
                not_bound += _size(part)
                self._count(REASON_BAD_SIGNATURE, _size(part))
                log.warning(
                    "whatsapp entries not signed by their owner's app secret: ignored",
                    extra={"tenant": tenant, "items": _size(part)},
                )
                continue
            reports.append(await self._process(tenant, _for_tenant(part, tenant), digest, 0))
        return WebhookReport(
            replies=sum(r.replies for r in reports),
            statuses=sum(r.statuses for r in reports),
            changes=sum(r.changes for r in reports),
            ignored=batch.ignored,
            failed=sum(r.failed for r in reports),
            kept=sum(r.kept for r in reports),
            not_bound=not_bound,
        )

    async def _process(
        self,
        tenant_id: str,
        batch: WebhookBatch,
        digest: str,
        not_bound: int,
        *,
        vouched: bool = False,
    ) -> WebhookReport:
        outcome = await self._apply(tenant_id, batch, vouched=vouched)
        kept = [*batch.unapplied, *outcome.kept]
        await self._keep(tenant_id, digest, kept)
        report = WebhookReport(
            len(batch.replies),
            len(batch.statuses),
            len(batch.changes),
            batch.ignored,
            outcome.failed + len(batch.unapplied),
            len(kept),
            not_bound,
        )
        log.info(
            "whatsapp webhook processed",
            extra={
                "tenant": tenant_id,
                "replies": report.replies,
                "statuses": report.statuses,
                "changes": report.changes,
                "ignored": report.ignored,
                "failed": report.failed,
                "kept": report.kept,
            },
        )
        return report

    async def _keep(self, tenant_id: str, digest: str, items: Sequence[Unapplied]) -> None:
        if not items:
            return
        now = self._clock_ms()
        letters = [
            DeadLetter(
                id=dead_letter_id(tenant_id, digest, u.path),
                tenant_id=tenant_id,
                received_at_ms=now,
                reason=u.reason,
                detail=u.detail,
                kind=u.kind,
                path=u.path,
                phone_number_id=u.phone_number_id,
                raw=u.raw,
                body_digest=digest,
            )
            for u in items
        ]
        evicted = await self._store.add_dead_letters(letters, self._limit)
        for u in items:
            self._count(u.reason, 1)
        log.warning(
            "whatsapp notification items kept as dead letters",
            extra={
                "tenant": tenant_id,
                "items": len(letters),
                "reasons": ",".join(sorted({u.reason for u in items})),
            },
        )
        if evicted:
            self._observer.evicted(evicted)
            log.warning(
                "whatsapp dead-letter list full: oldest items dropped",
                extra={"tenant": tenant_id, "dropped": evicted},
            )

    def _count(self, reason: str, count: int) -> None:
        if count:
            self._observer.unapplied(reason, count)

    async def _apply(self, tenant_id: str, batch: WebhookBatch, *, vouched: bool) -> _Outcome:
        out = _Outcome()
        for change in batch.changes:
            await self._change(tenant_id, change, out, vouched=vouched)
        for reply in batch.replies:
            await self._hand_on(self._on_inbound, reply, "messages", out)
        for receipt in batch.statuses:
            await self._hand_on(self._on_status, receipt, "statuses", out)
        return out

    async def _change(
        self, tenant_id: str, change: ProviderConsentChange, out: _Outcome, *, vouched: bool
    ) -> None:
        recipient: Recipient | None = change.recipient
        if change.sent_message_id and not vouched:
            recipient = await self._store.sent_message_recipient(tenant_id, change.sent_message_id)
            if recipient is None:
                out.kept.append(
                    Unapplied(
                        REASON_UNKNOWN_MESSAGE,
                        "131050 for a message this tenant did not send",
                        "statuses",
                        change.path,
                        change.phone_number_id,
                        change.raw,
                        "statuses",
                    )
                )
                return
        assert recipient is not None
        try:
            await self._a.change(
                change.action,
                tenant_id=tenant_id,
                recipient=RawRecipient(recipient.channel, recipient.address),
                topic=change.topic,
                source=Source.PROVIDER,
                evidence=change.evidence,
                occurred_at=(
                    val.RawTimestamp(change.occurred_at_ms // 1000, 0)
                    if change.occurred_at_ms is not None
                    else None
                ),
                event_id=change.event_id,
                principal=REPLAY_PRINCIPAL if vouched else WEBHOOK_PRINCIPAL,
            )
        except StoreUnavailable:
            raise
        except Exception as exc:
            out.failed += 1
            out.kept.append(
                _failure(
                    exc,
                    change.path,
                    change.phone_number_id,
                    change.raw,
                    "user_preferences" if not change.sent_message_id else "statuses",
                )
            )
            log.warning(
                "whatsapp consent change not applied",
                extra={
                    "tenant": tenant_id,
                    "recipient": mask_address(recipient.address),
                    "event_id": change.event_id,
                    "error": f"{type(exc).__name__}: {mask_text(str(exc))}",
                },
            )

    @staticmethod
    async def _hand_on(
        handler: Callable[[Any], Awaitable[None]],
        item: InboundReply | StatusReceipt,
        kind: str,
        out: _Outcome,
    ) -> None:
        try:
            await handler(item)
        except StoreUnavailable:
            raise
        except Exception as exc:
            out.failed += 1
            out.kept.append(_failure(exc, item.path, item.phone_number_id, _item_json(item), kind))
            log.warning(
                f"whatsapp {kind} not handled",
                extra={
                    "recipient": mask_address(item.recipient.address) if item.recipient else "",
                    "error": f"{type(exc).__name__}: {mask_text(str(exc))}",
                },
            )

    # -- dead letters --

    async def list_unapplied(
        self, tenant_id: str, page_size: int, page_token: str
    ) -> DeadLetterPage:
        """ListUnappliedNotifications: the tenant's kept items, newest first."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        size, start = page_tokens.check_page(
            v,
            page_size,
            page_token,
            decode_page_token,
            rpc="ListUnappliedNotifications",
            max_size=MAX_DEAD_LETTER_PAGE,
            default_size=50,
        )
        v.raise_if_any()
        offset = start or 0
        page = await self._store.dead_letters(tenant, offset, size)
        more = offset + len(page.items) < page.total and len(page.items) == size
        return DeadLetterPage(
            page.items, encode_page_token(offset + size) if more else "", page.total
        )

    async def _kept(self, tenant_id: str, item_id: str) -> DeadLetter:
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        ident = val.identifier(v, item_id, "id", required=True)
        v.raise_if_any()
        item = await self._store.dead_letter(tenant, ident)
        if item is None:
            raise NotFound("no unapplied notification with that id for this tenant")
        return item

    async def replay(self, tenant_id: str, item_id: str) -> ReplayResult:
        """ReplayUnappliedNotification: apply a kept item now, as the operator vouches.

        Applied (and removed) when nothing refuses it now; otherwise it stays, with the
        new reason and one more attempt. Event ids are the first delivery's, so an item
        that was in fact applied meanwhile is a duplicate, not a second change. A 131050
        for a message the tenant did not send is applied (the operator vouches for it).
        """
        item = await self._kept(tenant_id, item_id)
        try:
            raw: object = json.loads(item.raw)
        except ValueError:
            raw = None
        batch = WebhookBatch()
        if item.kind in ("messages", "statuses", "user_preferences") and isinstance(raw, dict):
            parse_item(
                item.tenant_id,
                item.kind,
                raw,
                batch,
                item.phone_number_id,
                item.path,
                item.body_digest,
            )
        else:
            batch.unapplied.append(
                Unapplied(
                    item.reason,
                    item.detail,
                    item.kind,
                    item.path,
                    item.phone_number_id,
                    item.raw,
                    item.kind,
                )
            )
        outcome = await self._apply(item.tenant_id, batch, vouched=True)
        again = [*batch.unapplied, *outcome.kept]
        if not again:
            await self._store.delete_dead_letter(item.tenant_id, item.id)
            log.info(
                "whatsapp dead letter replayed", extra={"tenant": item.tenant_id, "id": item.id}
            )
            return ReplayResult(True, item)
        kept = replace(
            item, reason=again[0].reason, detail=again[0].detail, attempts=item.attempts + 1
        )
        await self._store.put_dead_letter(kept)
        return ReplayResult(False, kept)

    async def discard(self, tenant_id: str, item_id: str) -> bool:
        """DiscardUnappliedNotification: drop a kept item (NotFound when there is none)."""
        item = await self._kept(tenant_id, item_id)
        return await self._store.delete_dead_letter(item.tenant_id, item.id)


def val_now_ms() -> int:
    """Wall-clock Unix milliseconds."""
    return time.time_ns() // 1_000_000


def _failure(exc: Exception, path: str, pnid: str, raw: str, kind: str) -> Unapplied:
    reason = REASON_REFUSED if isinstance(exc, ConsentError) else REASON_FAILED
    detail = str(exc) if isinstance(exc, InvalidArgument) else type(exc).__name__
    return Unapplied(reason, mask_text(detail)[:512], kind, path, pnid, raw, kind)


def _item_json(item: InboundReply | StatusReceipt) -> str:
    """A handed-on item back as the JSON Meta sent (what replay parses)."""
    if isinstance(item, InboundReply):
        msg: dict[str, Any] = {
            "from": item.recipient.address.lstrip("+"),
            "id": item.provider_message_id,
        }
        if item.received_at_ms is not None:
            msg["timestamp"] = str(item.received_at_ms // 1000)
        if item.button_payload or item.tapped:
            msg.update(type="button", button={"payload": item.button_payload, "text": item.text})
        else:
            msg.update(type="text", text={"body": item.text})
        return json.dumps(msg)
    st: dict[str, Any] = {"id": item.provider_message_id, "status": item.status}
    if item.recipient is not None:
        st["recipient_id"] = item.recipient.address.lstrip("+")
    if item.timestamp_ms is not None:
        st["timestamp"] = str(item.timestamp_ms // 1000)
    if item.error_codes:
        st["errors"] = [{"code": c} for c in item.error_codes]
    return json.dumps(st)


def _pnids(batch: WebhookBatch) -> set[str]:
    return {
        *(r.phone_number_id for r in batch.replies),
        *(s.phone_number_id for s in batch.statuses),
        *(c.phone_number_id for c in batch.changes),
        *(u.phone_number_id for u in batch.unapplied),
    }


def _size(batch: WebhookBatch) -> int:
    # A 131050 status is one item: its receipt and its opt-out share a path.
    paths = {
        *(r.path for r in batch.replies),
        *(s.path for s in batch.statuses),
        *(c.path for c in batch.changes),
        *(u.path for u in batch.unapplied),
    }
    return len(paths)


def _owned_by(owners: Mapping[str, str], tenant: str, pnid: str) -> bool:
    """True when the phone number id ``pnid`` is registered to ``tenant``."""
    return owners.get(pnid) == tenant


def _select(batch: WebhookBatch, keep: Callable[[str], bool]) -> WebhookBatch:
    """The items of ``batch`` whose phone number id ``keep`` accepts."""
    return WebhookBatch(
        replies=[r for r in batch.replies if keep(r.phone_number_id)],
        statuses=[s for s in batch.statuses if keep(s.phone_number_id)],
        changes=[c for c in batch.changes if keep(c.phone_number_id)],
        unapplied=[u for u in batch.unapplied if keep(u.phone_number_id)],
        ignored=batch.ignored,
    )


def _unbound(batch: WebhookBatch) -> WebhookBatch:
    """``batch`` with the items that name no phone number id turned into dead letters:
    signed with the tenant's secret but not bindable, so kept, never applied."""
    loose: dict[str, Unapplied] = {}
    items: list[tuple[str, str, InboundReply | StatusReceipt]] = [
        *((r.path, "messages", r) for r in batch.replies if not r.phone_number_id),
        *((s.path, "statuses", s) for s in batch.statuses if not s.phone_number_id),
    ]
    for path, kind, item in items:
        loose.setdefault(
            path,
            Unapplied(
                REASON_UNBOUND,
                "no metadata.phone_number_id",
                kind,
                path,
                "",
                _item_json(item),
                kind,
            ),
        )
    for c in batch.changes:
        if not c.phone_number_id:
            kind = "statuses" if c.sent_message_id else "user_preferences"
            loose.setdefault(
                c.path,
                Unapplied(
                    REASON_UNBOUND, "no metadata.phone_number_id", kind, c.path, "", c.raw, kind
                ),
            )
    if not loose:
        return batch
    return WebhookBatch(
        replies=[r for r in batch.replies if r.phone_number_id],
        statuses=[s for s in batch.statuses if s.phone_number_id],
        changes=[c for c in batch.changes if c.phone_number_id],
        unapplied=[*batch.unapplied, *loose.values()],
        ignored=batch.ignored,
    )


def _for_tenant(batch: WebhookBatch, tenant_id: str) -> WebhookBatch:
    return WebhookBatch(
        replies=[replace(r, tenant_id=tenant_id) for r in batch.replies],
        statuses=[replace(s, tenant_id=tenant_id) for s in batch.statuses],
        changes=batch.changes,
        unapplied=batch.unapplied,
        ignored=batch.ignored,
    )


def inbound_use_case(authority: ConsentAuthority) -> InboundHandler:
    """The InboundHandler that runs HandleInboundMessage's use case for a webhook reply.

    The same code path as the gRPC RPC (validation, keyword and button matching, event
    times, the one confirmation), with the webhook as the recorded principal; the wamid
    (or the id derived from the signed body) is the event id, so redeliveries change
    nothing.
    """

    async def handle(reply: InboundReply) -> None:
        ms = reply.received_at_ms
        await authority.inbound(
            tenant_id=reply.tenant_id,
            recipient=RawRecipient(reply.recipient.channel, reply.recipient.address),
            text=reply.text,
            button_payload=reply.button_payload,
            provider_message_id=reply.provider_message_id,
            received_at=val.RawTimestamp(ms // 1000, (ms % 1000) * 1_000_000)
            if ms is not None
            else None,
            principal=WEBHOOK_PRINCIPAL,
            button_tapped=reply.tapped,
        )

    return handle
