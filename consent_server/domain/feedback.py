"""Provider feedback: a provider saying "this recipient opted out / blocked you".

One use case for every way that news arrives - a provider's answer to a delivery, a
delivery receipt, a status webhook - so each records the same opt-out: SOURCE_PROVIDER,
through the same atomic path as OptOut (history, revisions and erasure checks stay
right), with one evidence format and one event id per message and path, so a
redelivered answer or receipt is a replay, not a second opt-out.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import audit_log
from .errors import IdConflict
from .masking import mask_address
from .model import Action, ChangeOutcome, ConsentEventInput, Recipient, Source
from .ports import ConsentStore
from .validation import MAX_EVIDENCE_BYTES

log = logging.getLogger("consent_server.delivery")

#: Provider error codes that mean "this user opted out / blocked you":
#: code -> the topic the opt-out covers ("" = all topics).
OPT_OUT_CODES: dict[int, str] = {
    131050: "marketing",  # WhatsApp: the user stopped marketing messages
    21610: "",  # Twilio-style: the recipient replied STOP (unsubscribed)
}
#: A webhook provider's error class with the same meaning, for all topics.
OPTED_OUT_CLASS = "recipient_opted_out"


def opt_out_scope(code: int | None = None, error_class: str = "") -> str | None:
    """The topic a provider's error means an opt-out of ("" = all topics), or None
    when it does not mean one."""
    if error_class == OPTED_OUT_CLASS:
        return ""
    if code is not None and code in OPT_OUT_CODES:
        return OPT_OUT_CODES[code]
    return None


class FeedbackPath(enum.Enum):
    """How the feedback arrived; each path has its own event id per message."""

    ANSWER = "answer"  # the provider's answer to our delivery call
    RECEIPT = "receipt"  # a later delivery receipt / status callback


# Event ids and principals as recorded since these paths existed: kept, so a replay of
# feedback recorded before this module still deduplicates.
_EVENT_PREFIX = {FeedbackPath.ANSWER: "provider:", FeedbackPath.RECEIPT: "provider-receipt:"}
_PRINCIPAL = {FeedbackPath.ANSWER: "delivery-worker", FeedbackPath.RECEIPT: "delivery-receipts"}


def evidence(provider: str, path: FeedbackPath, message_id: str, detail: str) -> str:
    """The one evidence format: ``<provider> <path> for message <id>: <detail>``, cut to
    the evidence limit (UTF-8 bytes) without splitting a character."""
    text = f"{provider} {path.value} for message {message_id}: {detail}"
    return text.encode()[:MAX_EVIDENCE_BYTES].decode(errors="ignore")


@dataclass(frozen=True, slots=True)
class ProviderOptOut:
    """A provider's "opted out / blocked" about one of our messages.

    ``recipient`` None = look it up from the message's stored status."""

    tenant_id: str
    message_id: str
    provider: str
    topic: str
    detail: str
    path: FeedbackPath
    recipient: Recipient | None = None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ProviderFeedback:
    """Records provider-reported opt-outs (see the module docstring).

    ``on_recorded(provider)`` is called once per newly recorded opt-out (metrics)."""

    def __init__(
        self,
        store: ConsentStore,
        *,
        on_recorded: Callable[[str], None] | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._store = store
        self._on_recorded = on_recorded
        self._clock_ms = clock_ms

    async def opted_out(self, feedback: ProviderOptOut) -> ChangeOutcome | None:
        """Record the opt-out; the outcome, or None when nothing new was recorded (the
        message is unknown for the tenant, or this message already recorded one).

        Raises StoreUnavailable when the store is unreachable."""
        recipient = feedback.recipient
        if recipient is None:
            info = await self._store.message_status(feedback.tenant_id, feedback.message_id)
            if info is None:
                return None
            recipient = info.recipient
        event = ConsentEventInput(
            tenant_id=feedback.tenant_id,
            recipient=recipient,
            topic=feedback.topic,
            action=Action.OPT_OUT,
            source=Source.PROVIDER,
            evidence=evidence(
                feedback.provider, feedback.path, feedback.message_id, feedback.detail
            ),
            occurred_at_ms=self._clock_ms(),
            event_id=_EVENT_PREFIX[feedback.path] + feedback.message_id,
            principal=_PRINCIPAL[feedback.path],
        )
        try:
            outcome = await self._store.record_event(event)
        except IdConflict:
            return None  # this message already recorded a different provider opt-out
        if outcome.duplicate:
            return None
        audit_log.consent_changed(event, outcome)
        if self._on_recorded is not None:
            self._on_recorded(feedback.provider)
        log.info(
            "provider reported an opt-out: recorded",
            extra={
                "message_id": feedback.message_id,
                "tenant": feedback.tenant_id,
                "to": mask_address(recipient.address),
                "scope": feedback.topic or "all",
                "via": feedback.path.value,
                "revision": outcome.revision,
            },
        )
        return outcome
