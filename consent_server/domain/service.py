"""The consent authority's use cases: validate and normalise, then one store call.

Inputs are raw wire values converted to plain Python by the api layer; outputs
are domain values. Raises ConsentError subclasses only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from . import audit_log, page_tokens
from . import settings as tenant_settings
from . import validation as val
from .decision import decide
from .errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    SendBlocked,
    SettingsConflict,
    SettingsVersionMismatch,
    TenantNotFound,
)
from .keywords import Match, match_inbound
from .model import (
    Action,
    ChangeOutcome,
    Channel,
    ConsentEvent,
    ConsentEventInput,
    Decision,
    InboundAction,
    KeywordKind,
    MessageStatusInfo,
    OutboundMessage,
    Recipient,
    SendAccepted,
    SendInput,
    Source,
    TenantSettings,
)
from .pointintime import decide_at
from .ports import ConsentHistory, ConsentStore
from .recipients import AddressError, normalise_address
from .templates import reply_text
from .validation import RawMessage, RawRecipient, RawTimestamp, Violations

# (tenant, normalised recipient, topic) -> a signed re-subscribe URL ("" when none).
LinkMinter = Callable[[str, Recipient, str], Awaitable[str]]
# Told what each inbound message did, by channel (the metrics count it).
InboundObserver = Callable[[Channel, InboundAction], None]

MAX_BATCH = 10_000
MAX_BATCH_AT = 1000  # a point-in-time batch reads each recipient's whole history
MAX_PAGE_SIZE = 1000
MAX_BUTTON_PAYLOAD = 256
SETTINGS_WRITE_ATTEMPTS = 5
DEFAULT_PAGE_SIZE = 100
ANONYMOUS = "anonymous"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits; operators may lower them (CONSENT_MAX_*), never past the contract."""

    max_batch: int = MAX_BATCH
    max_page_size: int = MAX_PAGE_SIZE
    max_evidence_bytes: int = val.MAX_EVIDENCE_BYTES
    max_metadata_entries: int = val.MAX_METADATA_ENTRIES
    max_metadata_value: int = val.MAX_METADATA_VALUE


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A decision about one normalised recipient and topic."""

    recipient: Recipient
    topic: str
    decision: Decision
    # Point-in-time checks only: the history event that decided (None: the policy or
    # an erasure tombstone decided, or the check was about now).
    deciding_event: ConsentEvent | None = None


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The outcome of an opt-out/opt-in about a normalised recipient."""

    recipient: Recipient
    topic: str
    outcome: ChangeOutcome


@dataclass(frozen=True, slots=True)
class SendResult:
    """An accepted send."""

    recipient: Recipient
    accepted: SendAccepted


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of a recipient's history."""

    recipient: Recipient
    events: list[ConsentEvent]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class InboundResult:
    """What an inbound reply or button tap did (HandleInboundMessage)."""

    recipient: Recipient
    action: InboundAction
    matched_keyword: str
    reply_text: str
    reply_message_id: str
    revision: int


@dataclass(frozen=True, slots=True)
class BatchItemError:
    """Why one batch item could not be decided."""

    violations: list[FieldViolation]


@dataclass(slots=True)
class BatchAnswers:
    """BatchCheckConsent's answers without an object per item (batch_decide).

    ``outcomes[i]`` is the i-th item's Decision (one shared Decision object for every
    recipient the policy alone decides) or its BatchItemError; ``recipients[i]`` its
    normalised (channel, address), None for an error."""

    topic: str
    recipients: list[tuple[Channel, str] | None]
    outcomes: list[Decision | BatchItemError]


_CHANNEL_ERROR = "must be one of WHATSAPP, SMS, EMAIL, RCS, VOICE"
# region -> channel -> address as sent -> normalised address: BatchCheckConsent's cache,
# bounded per (region, channel); a dict lookup instead of lru_cache's argument tuple and
# bookkeeping. Room for a 100,000-recipient working set with headroom (~15 MB full).
_NORMALISED: dict[str | None, dict[Channel, dict[str, str]]] = {}
NORMALISED_CACHE = 131_072


def encode_page_token(before_revision: int) -> str:
    """Opaque page token: history continues below this revision."""
    return page_tokens.encode("v1", str(before_revision))


def decode_page_token(token: str) -> int:
    """The revision a page token continues below; ValueError when it is not ours."""
    return page_tokens.decode_number("v1", token, 19)


class ConsentAuthority:
    """Validates requests and runs them against a ConsentStore."""

    def __init__(
        self,
        store: ConsentStore,
        *,
        default_region: str | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        limits: Limits | None = None,
        history: ConsentHistory | None = None,
        on_inbound: InboundObserver | None = None,
    ) -> None:
        self._store = store
        self._history = history
        self._on_inbound = on_inbound
        self._default_region = default_region
        self._clock_ms = clock_ms
        self._limits = limits or Limits()
        self._signed_links: LinkMinter | None = None

    def use_signed_links(self, mint: LinkMinter) -> None:
        """Fill ``{resubscribe_url}`` of opt-out confirmations with fresh signed links.

        The HTTP edge mints them (it is wired after this object exists, hence a setter);
        a tenant's own ``resubscribe_url`` setting still wins.
        """
        self._signed_links = mint

    async def _settings(self, tenant_id: str) -> TenantSettings:
        """The settings of a tenant every use case names; TenantNotFound (nothing read
        or written) when it was never created. The existence check rides on the
        cached settings read the call needs anyway: no extra round trip."""
        if not tenant_id:  # invalid id: validate the rest with server defaults, no store call
            return TenantSettings()
        settings = await self._store.tenant_lookup(tenant_id)
        if settings is None:
            raise TenantNotFound(tenant_id)
        return settings

    async def require_tenant(self, tenant_id: str) -> None:
        """TenantNotFound unless ``tenant_id`` names an existing tenant (for callers
        outside the use cases: the HTTP edge's webhook, link and receipt paths)."""
        if not val.TENANT_RE.fullmatch(tenant_id):
            raise TenantNotFound(tenant_id[:64])
        await self._settings(tenant_id)

    def _region(self, settings: TenantSettings) -> str | None:
        return settings.default_region or self._default_region

    async def _addressed(
        self, v: Violations, tenant_id: str, raw: RawRecipient | None
    ) -> tuple[str, TenantSettings, Recipient | None]:
        """The tenant id, its settings and the recipient read in the tenant's region,
        as every single-recipient use case starts (None: a violation is recorded)."""
        tenant = val.tenant_id(v, tenant_id)
        settings = await self._settings(tenant)
        return tenant, settings, val.recipient(v, raw, self._region(settings))

    async def check(
        self,
        tenant_id: str,
        raw: RawRecipient | None,
        topic: str,
        at: RawTimestamp | None = None,
    ) -> CheckResult:
        """CheckConsent: the topic is required, as for a send (an unnamed one would slip
        past a topic-only opt-out). ``at``: decide for that instant (domain.pointintime)."""
        if at is None:
            return await self._check(tenant_id, raw, topic, topic_required=True)
        v = Violations()
        tenant, settings, rcpt = await self._addressed(v, tenant_id, raw)
        norm_topic = val.topic(v, topic, required=True)
        at_ms = self._at_ms(v, at)
        v.raise_if_any()
        assert rcpt is not None and at_ms is not None
        [result] = await self._checks_at(tenant, [rcpt], norm_topic, at_ms, settings)
        return result

    def _at_ms(self, v: Violations, at: RawTimestamp) -> int | None:
        at_ms = val.timestamp_ms(v, at, "at")
        if at_ms is not None and at_ms > self._clock_ms() + val.MAX_FUTURE_MS:
            v.add("at", "is in the future: a point-in-time check answers for the past")
            return None
        if self._history is None:
            v.add("at", "point-in-time checks are not available on this server")
        return at_ms

    async def _checks_at(
        self,
        tenant: str,
        rcpts: Sequence[Recipient],
        topic: str,
        at_ms: int,
        settings: TenantSettings,
    ) -> list[CheckResult]:
        assert self._history is not None
        # Independent reads: one round trip for both, not one after the other.
        histories, tombs = await asyncio.gather(
            self._history.histories(tenant, rcpts),
            self._history.tombstone_records(tenant, rcpts, topic),
        )
        policy = settings.policy_for(topic)
        out = []
        for rcpt, events, tomb in zip(rcpts, histories, tombs, strict=True):
            found = decide_at(events, topic, at_ms, policy, tombstone=tomb)
            out.append(CheckResult(rcpt, topic, found.decision, found.event))
        return out

    async def scope_check(
        self, tenant_id: str, raw: RawRecipient | None, topic: str
    ) -> CheckResult:
        """The decision for a consent *scope* ("" = the all-topics record and the default
        policy): for the service's own use (links), never a sender's check."""
        return await self._check(tenant_id, raw, topic, topic_required=False)

    async def _check(
        self, tenant_id: str, raw: RawRecipient | None, topic: str, *, topic_required: bool
    ) -> CheckResult:
        v = Violations()
        tenant, settings, rcpt = await self._addressed(v, tenant_id, raw)
        norm_topic = val.topic(v, topic, required=topic_required)
        v.raise_if_any()
        assert rcpt is not None
        [(topic_record, all_record)] = await self._store.read_records(tenant, [rcpt], norm_topic)
        decision = decide(topic_record, all_record, settings.policy_for(norm_topic))
        return CheckResult(rcpt, norm_topic, decision)

    async def batch_check(
        self,
        tenant_id: str,
        topic: str,
        raws: Sequence[RawRecipient],
        at: RawTimestamp | None = None,
    ) -> list[CheckResult | BatchItemError]:
        """BatchCheckConsent: results in request order, bad items as per-item errors.
        ``at``: decide every recipient for that instant (at most MAX_BATCH_AT of them)."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        norm_topic = val.topic(v, topic, required=True)
        limit = self._limits.max_batch if at is None else min(self._limits.max_batch, MAX_BATCH_AT)
        if not raws:
            v.add("recipients", "must name at least one recipient")
        elif len(raws) > limit:
            v.add(
                "recipients", f"must name at most {limit} recipients" + (" with at" if at else "")
            )
        at_ms = self._at_ms(v, at) if at is not None else None
        settings = await self._settings(tenant)
        v.raise_if_any()
        region = self._region(settings)
        items: list[Recipient | BatchItemError] = []
        for i, raw in enumerate(raws):
            if raw.channel is None:
                items.append(
                    BatchItemError(
                        [
                            FieldViolation(
                                f"recipients[{i}].channel",
                                "must be one of WHATSAPP, SMS, EMAIL, RCS, VOICE",
                            )
                        ]
                    )
                )
                continue
            try:
                items.append(
                    Recipient(raw.channel, normalise_address(raw.channel, raw.address, region))
                )
            except AddressError as exc:
                items.append(BatchItemError([FieldViolation(f"recipients[{i}].address", str(exc))]))
        good = [item for item in items if isinstance(item, Recipient)]
        if at_ms is not None:
            answers = iter(
                await self._checks_at(tenant, good, norm_topic, at_ms, settings) if good else []
            )
            return [item if isinstance(item, BatchItemError) else next(answers) for item in items]
        pairs = iter(await self._store.read_records(tenant, good, norm_topic) if good else [])
        policy = settings.policy_for(norm_topic)
        results: list[CheckResult | BatchItemError] = []
        for item in items:
            if isinstance(item, BatchItemError):
                results.append(item)
            else:
                topic_record, all_record = next(pairs)
                results.append(
                    CheckResult(item, norm_topic, decide(topic_record, all_record, policy))
                )
        return results

    async def batch_decide(
        self,
        tenant_id: str,
        topic: str,
        raws: Sequence[tuple[Channel | None, str]],
    ) -> BatchAnswers:
        """batch_check about now with the same answers, errors and order, without a
        CheckResult per item: what BatchCheckConsent serves when ``at`` is unset (a
        point-in-time batch keeps batch_check: each recipient's history). Reads through
        store.read_batch; tests/test_batch_lean.py checks both agree."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        norm_topic = val.topic(v, topic, required=True)
        limit = self._limits.max_batch
        if not raws:
            v.add("recipients", "must name at least one recipient")
        elif len(raws) > limit:
            v.add("recipients", f"must name at most {limit} recipients")
        settings = await self._settings(tenant)
        v.raise_if_any()
        region = self._region(settings)
        if len(_NORMALISED) >= 8 and region not in _NORMALISED:
            _NORMALISED.clear()  # bounded over regions too
        by_channel = _NORMALISED.setdefault(region, {})
        last_channel: Channel | None = None
        cache: dict[str, str] = {}
        recipients: list[tuple[Channel, str] | None] = []
        outcomes: list[Decision | BatchItemError] = []
        good: list[tuple[Channel, str]] = []
        for i, (channel, address) in enumerate(raws):
            if channel is None:
                recipients.append(None)
                outcomes.append(
                    BatchItemError([FieldViolation(f"recipients[{i}].channel", _CHANNEL_ERROR)])
                )
                continue
            if channel is not last_channel:  # Enum hashing is Python code: once a run
                last_channel = channel
                cache = by_channel.setdefault(channel, {})
            norm = cache.get(address)
            if norm is None:
                try:
                    norm = normalise_address(channel, address, region)
                except AddressError as exc:
                    recipients.append(None)
                    outcomes.append(
                        BatchItemError([FieldViolation(f"recipients[{i}].address", str(exc))])
                    )
                    continue
                if len(cache) >= NORMALISED_CACHE:
                    cache.clear()
                cache[address] = norm
            pair = (channel, norm)
            recipients.append(pair)
            good.append(pair)
        policy = settings.policy_for(norm_topic)
        by_policy = decide(None, None, policy)
        pairs = await self._store.read_batch(tenant, good, norm_topic) if good else []
        if len(good) == len(outcomes) + len(good) and not outcomes:
            # No item failed: the answers line up with the reads.
            outcomes = [by_policy if p is None else decide(p[0], p[1], policy) for p in pairs]
        else:
            answers = iter(pairs)
            merged: list[Decision | BatchItemError] = []
            errors = iter(outcomes)
            for rcpt in recipients:
                if rcpt is None:
                    merged.append(next(errors))
                else:
                    p = next(answers)
                    merged.append(by_policy if p is None else decide(p[0], p[1], policy))
            outcomes = merged
        return BatchAnswers(norm_topic, recipients, outcomes)

    async def change(
        self,
        action: Action,
        *,
        tenant_id: str,
        recipient: RawRecipient | None,
        topic: str,
        source: Source | None,
        evidence: str,
        occurred_at: RawTimestamp | None,
        event_id: str,
        principal: str = ANONYMOUS,
    ) -> ChangeResult:
        """OptOut / OptIn."""
        v = Violations()
        tenant, _, rcpt = await self._addressed(v, tenant_id, recipient)
        norm_topic = val.topic(v, topic)
        if source is None:
            v.add("source", "is not a known Source")
        text = val.evidence(v, evidence, max_bytes=self._limits.max_evidence_bytes)
        given = val.timestamp_ms(v, occurred_at, "occurred_at")
        when = val.event_time(
            v, given, self._clock_ms(), "occurred_at", opt_out=action is Action.OPT_OUT
        )
        ident = val.identifier(v, event_id, "event_id") or f"ev_{uuid.uuid4().hex}"
        v.raise_if_any()
        assert rcpt is not None and source is not None
        event = ConsentEventInput(
            tenant_id=tenant,
            recipient=rcpt,
            topic=norm_topic,
            action=action,
            source=source,
            evidence=when.evidence(text, "occurred_at", self._limits.max_evidence_bytes),
            occurred_at_ms=when.ms,
            event_id=ident,
            principal=principal,
        )
        outcome = await self._store.record_event(event)
        audit_log.consent_changed(event, outcome)
        return ChangeResult(rcpt, norm_topic, outcome)

    async def send(
        self,
        *,
        tenant_id: str,
        recipient: RawRecipient | None,
        topic: str,
        message: RawMessage | None,
        idempotency_key: str,
        not_after: RawTimestamp | None,
        metadata: Mapping[str, str],
    ) -> SendResult:
        """SendIfAllowed: raises SendBlocked when consent does not allow it."""
        v = Violations()
        tenant, settings, rcpt = await self._addressed(v, tenant_id, recipient)
        norm_topic = val.topic(v, topic, required=True)
        body = val.message(v, message)
        key = val.identifier(v, idempotency_key, "idempotency_key")
        expires = val.timestamp_ms(v, not_after, "not_after")
        if expires is not None and expires <= self._clock_ms():
            v.add("not_after", "is in the past: the message would expire before delivery")
        meta = val.metadata(
            v,
            metadata,
            max_entries=self._limits.max_metadata_entries,
            max_value=self._limits.max_metadata_value,
        )
        v.raise_if_any()
        assert rcpt is not None
        result = await self._store.send(
            SendInput(
                tenant_id=tenant,
                recipient=rcpt,
                topic=norm_topic,
                message=body,
                idempotency_key=key,
                not_after_ms=expires or 0,
                metadata=meta,
            ),
            settings.policy_for(norm_topic),
        )
        if isinstance(result, SendAccepted):
            return SendResult(rcpt, result)
        audit_log.send_blocked(tenant, rcpt, norm_topic, result.decision)
        raise SendBlocked(rcpt, norm_topic, result.decision)

    async def history(
        self, tenant_id: str, recipient: RawRecipient | None, page_size: int, page_token: str
    ) -> HistoryPage:
        """ListConsentEvents: newest first, paged by an opaque token."""
        v = Violations()
        tenant, _, rcpt = await self._addressed(v, tenant_id, recipient)
        max_page = self._limits.max_page_size
        size, before = page_tokens.check_page(
            v,
            page_size,
            page_token,
            decode_page_token,
            rpc="ListConsentEvents",
            max_size=max_page,
            default_size=min(DEFAULT_PAGE_SIZE, max_page),
        )
        v.raise_if_any()
        assert rcpt is not None
        page = await self._store.list_events(tenant, rcpt, size, before)
        token = (
            encode_page_token(page.next_before_revision)
            if page.next_before_revision is not None
            else ""
        )
        return HistoryPage(rcpt, page.events, token)

    async def inbound(
        self,
        *,
        tenant_id: str,
        recipient: RawRecipient | None,
        text: str,
        button_payload: str,
        provider_message_id: str,
        received_at: RawTimestamp | None,
        principal: str = ANONYMOUS,
        button_tapped: bool = False,
    ) -> InboundResult:
        """HandleInboundMessage: keyword/button -> opt-out, opt-in or help.

        The provider message id is the event id, so a redelivery returns the first
        outcome and queues nothing; a change queues its confirmation atomically.
        ``button_tapped``: the channel reported a button tap that carried no payload
        (``text`` is then its title, never matched as a reply)."""
        v = Violations()
        tenant, settings, rcpt = await self._addressed(v, tenant_id, recipient)
        if len(text) > val.MAX_TEXT_CHARS:
            v.add("text", f"must be at most {val.MAX_TEXT_CHARS} characters")
        elif "\x00" in text:
            v.add("text", "must not contain NUL characters")
        if len(button_payload) > MAX_BUTTON_PAYLOAD:
            v.add("button_payload", f"must be at most {MAX_BUTTON_PAYLOAD} characters")
        elif "\x00" in button_payload:
            v.add("button_payload", "must not contain NUL characters")
        event_id = val.identifier(v, provider_message_id, "provider_message_id", required=True)
        given = val.timestamp_ms(v, received_at, "received_at")
        v.raise_if_any()
        assert rcpt is not None
        found = match_inbound(settings, text, button_payload, tapped=button_tapped)
        if found is None:
            return self._told(InboundResult(rcpt, InboundAction.NONE, "", "", "", 0))
        if found.kind is KeywordKind.HELP:
            help_text = reply_text(settings, tenant, KeywordKind.HELP, found.language, "")
            return self._told(
                InboundResult(rcpt, InboundAction.HELP, found.keyword, help_text, "", 0)
            )
        action = Action.OPT_OUT if found.kind is KeywordKind.OPT_OUT else Action.OPT_IN
        # Checked once the action is known: a future STOP is clamped, a future START refused.
        when = val.event_time(
            v, given, self._clock_ms(), "received_at", opt_out=action is Action.OPT_OUT
        )
        v.raise_if_any()
        link = ""
        if (
            action is Action.OPT_OUT
            and self._signed_links is not None
            and not settings.resubscribe_url
        ):
            link = await self._signed_links(tenant, rcpt, found.topic)
        confirmation = reply_text(
            settings, tenant, found.kind, found.language, found.topic, signed_link=link
        )
        event = ConsentEventInput(
            tenant_id=tenant,
            recipient=rcpt,
            topic=found.topic,
            action=action,
            # The customer acted through a button whenever a payload came with it.
            source=Source.BUTTON if button_payload or button_tapped else Source.KEYWORD,
            evidence=when.evidence(_inbound_evidence(found), "received_at"),
            occurred_at_ms=when.ms,
            event_id=event_id,
            principal=principal,
        )
        change = await self._store.record_inbound(
            event, OutboundMessage(kind="text", text=confirmation)
        )
        audit_log.consent_changed(event, change.outcome)
        queued = change.confirmation_id
        return self._told(
            InboundResult(
                rcpt,
                InboundAction.OPTED_OUT if action is Action.OPT_OUT else InboundAction.OPTED_IN,
                found.keyword,
                confirmation if queued else "",
                queued,
                change.outcome.revision,
            )
        )

    def _told(self, result: InboundResult) -> InboundResult:
        """``result``, once the inbound observer (metrics) has been told of it."""
        if self._on_inbound is not None:
            self._on_inbound(result.recipient.channel, result.action)
        return result

    async def get_settings(self, tenant_id: str) -> TenantSettings:
        """GetTenantSettings: the effective settings (defaults filled in)."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        v.raise_if_any()
        await self._settings(tenant)
        return await self._store.fresh_tenant_settings(tenant)

    async def update_settings(
        self,
        tenant_id: str,
        patch: TenantSettings,
        paths: Sequence[str],
        conversion_violations: Sequence[FieldViolation] = (),
        *,
        expected_version: int | None = None,
    ) -> TenantSettings:
        """UpdateTenantSettings: merge the masked fields, validate all, write if nobody
        wrote meanwhile (else re-read and retry). ``conversion_violations`` are problems
        the api layer found decoding the request (unknown enum values).

        ``expected_version`` (the version the caller read, AIP-154 etag style) makes the
        update conditional: SettingsVersionMismatch, nothing written, when the stored
        settings moved on. None = unconditional, as before versions were sent."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        tenant_settings.check_paths(v, paths)
        v.items.extend(conversion_violations)
        if expected_version is not None and expected_version < 0:
            v.add("version", "must be a version returned by GetTenantSettings (0 or more)")
        v.raise_if_any()
        await self._settings(tenant)
        for _ in range(SETTINGS_WRITE_ATTEMPTS):
            current = await self._store.fresh_tenant_settings(tenant)
            if expected_version is not None and current.version != expected_version:
                raise SettingsVersionMismatch(expected_version, current.version)
            merged = tenant_settings.merge(current, patch, paths)
            v = Violations()
            checked = tenant_settings.validate(v, merged)
            v.raise_if_any()
            try:
                await self._store.put_tenant_settings(tenant, checked)
            except SettingsConflict:
                continue
            return await self._store.fresh_tenant_settings(tenant)
        raise SettingsConflict("tenant settings are being changed by someone else right now; retry")

    async def message_status(self, tenant_id: str, message_id: str) -> MessageStatusInfo:
        """GetMessageStatus: NotFound for unknown ids and other tenants' ids."""
        v = Violations()
        tenant = val.tenant_id(v, tenant_id)
        ident = val.identifier(v, message_id, "message_id", required=True)
        v.raise_if_any()
        await self._settings(tenant)
        info = await self._store.message_status(tenant, ident)
        if info is None:
            raise NotFound("no message with that id for this tenant")
        return info


__all__ = ["ConsentAuthority", "InvalidArgument"]


def _inbound_evidence(found: Match) -> str:
    """What the customer sent, as evidence; the provider message id is the event id."""
    what = "button payload" if found.button else "keyword"
    how = " inside a longer message" if found.inferred else ""
    text = f'inbound {what} "{found.keyword}"{how} ({found.language})'
    return text.encode()[: val.MAX_EVIDENCE_BYTES].decode(errors="ignore")
