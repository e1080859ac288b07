"""Event times from a fast clock: an opt-out is never refused for its time (it is
recorded at the receive time, the given time kept as evidence); an opt-in from the
future is refused, or clamped when within the tolerance, so that it can never
outrank an opt-out the customer sends afterwards."""

from __future__ import annotations

import pytest

from consent_server.domain.errors import InvalidArgument
from consent_server.domain.model import Action, Channel, InboundAction, Status
from consent_server.domain.service import ChangeResult, ConsentAuthority
from consent_server.domain.validation import RawRecipient, RawTimestamp
from consent_server.store.repository import RedisConsentStore

from .support import change_consent

NOW_MS = 1_900_000_000_000
RCPT = RawRecipient(Channel.WHATSAPP, "+16505551234")
HOUR_S = 3600


def at(offset_s: int) -> RawTimestamp:
    return RawTimestamp(NOW_MS // 1000 + offset_s, 0)


def authority(store: RedisConsentStore) -> ConsentAuthority:
    return ConsentAuthority(store, clock_ms=lambda: NOW_MS)


async def change(
    a: ConsentAuthority, action: Action, when: RawTimestamp, ev: str = ""
) -> ChangeResult:
    return await change_consent(a, action, "acme", RCPT, evidence=ev, occurred_at=when)


async def test_opt_out_from_the_future_is_recorded_at_the_receive_time(
    store: RedisConsentStore,
) -> None:
    a = authority(store)
    # Full evidence: the note still fits, the limit holds.
    result = await change(a, Action.OPT_OUT, at(HOUR_S), "x" * 1024)
    assert result.outcome.applied and result.outcome.status is Status.OPTED_OUT
    [event] = (await a.history("acme", RCPT, 0, "")).events
    assert event.occurred_at_ms == NOW_MS
    assert str(NOW_MS // 1000 + HOUR_S) in event.evidence or "2030" in event.evidence
    assert "given occurred_at" in event.evidence
    assert len(event.evidence.encode()) <= 1024
    assert not (await a.check("acme", RCPT, "marketing")).decision.allowed


async def test_opt_in_from_the_future_is_refused(store: RedisConsentStore) -> None:
    a = authority(store)
    with pytest.raises(InvalidArgument) as err:
        await change(a, Action.OPT_IN, at(HOUR_S))
    assert [v.field for v in err.value.violations] == ["occurred_at"]
    assert (await a.history("acme", RCPT, 0, "")).events == []


async def test_opt_in_slightly_ahead_cannot_outrank_a_later_opt_out(
    store: RedisConsentStore,
) -> None:
    a = authority(store)
    await change(a, Action.OPT_IN, at(240))  # 4 minutes ahead: within the tolerance
    out = await change(a, Action.OPT_OUT, at(0))  # the customer's STOP, sent afterwards
    assert out.outcome.applied  # type: ignore[attr-defined]
    assert not (await a.check("acme", RCPT, "marketing")).decision.allowed


async def inbound(a: ConsentAuthority, text: str, when: RawTimestamp, mid: str) -> object:
    return await a.inbound(
        tenant_id="acme",
        recipient=RCPT,
        text=text,
        button_payload="",
        provider_message_id=mid,
        received_at=when,
    )


async def test_inbound_stop_from_the_future_opts_out(store: RedisConsentStore) -> None:
    a = authority(store)
    result = await inbound(a, "STOP", at(10 * HOUR_S), "wamid.future-stop")
    assert result.action is InboundAction.OPTED_OUT  # type: ignore[attr-defined]
    [event] = (await a.history("acme", RCPT, 0, "")).events
    assert event.occurred_at_ms == NOW_MS and "given received_at" in event.evidence
    help_ = await inbound(a, "HELP", at(10 * HOUR_S), "wamid.future-help")
    assert help_.action is InboundAction.HELP  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument) as err:
        await inbound(a, "START", at(10 * HOUR_S), "wamid.future-start")
    assert [v.field for v in err.value.violations] == ["received_at"]
    assert not (await a.check("acme", RCPT, "marketing")).decision.allowed
