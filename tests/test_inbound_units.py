"""Templates, settings validation, and the inbound use case on the repository (fakeredis
and a real redis-server): the confirmation is queued atomically and exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_server.domain import settings as tsettings
from consent_server.domain.decision import decide
from consent_server.domain.errors import InvalidArgument, SettingsConflict
from consent_server.domain.model import (
    DEFAULT_KEYWORD_SETS,
    Action,
    Channel,
    ConsentEventInput,
    InboundAction,
    KeywordKind,
    KeywordSet,
    LanguageTemplates,
    OutboundMessage,
    Policy,
    Source,
    TenantSettings,
)
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.templates import (
    TemplateError,
    placeholders,
    promised_keywords,
    render,
    reply_text,
)
from consent_server.domain.validation import RawRecipient, Violations
from consent_server.store import keys
from consent_server.store.repository import RedisConsentStore

from .test_store import ALICE, T0

OUT, IN, HELP = KeywordKind.OPT_OUT, KeywordKind.OPT_IN, KeywordKind.HELP
RAW = RawRecipient(Channel.WHATSAPP, "+91 98765 43210")

# -- templates ---------------------------------------------------------------------------


def test_placeholders_and_rendering() -> None:
    assert placeholders("Hi {business_name}, {{literal}} {topic}") == ["business_name", "topic"]
    assert render("{{x}} {business_name}", {"business_name": "Acme"}) == "{x} Acme"
    for bad, why in [
        ("Hi {name}", "unknown placeholder {name}"),
        ("Hi {business_name", "unmatched"),
        ("Hi }", "unmatched"),
        ("{0.__class__}", "unknown placeholder"),
        ("{}", "unknown placeholder {}"),
    ]:
        with pytest.raises(TemplateError, match=why.replace("{", r"\{").replace("}", r"\}")):
            placeholders(bad)


@pytest.mark.parametrize(
    ("text", "promised"),
    [
        ("Reply START to subscribe again.", ["start"]),
        ("reply with OPT IN to come back", ["opt in"]),
        ("Responde ALTA para volver", ["alta"]),
        ('Envía "alta" para volver', ["alta"]),
        ("Send «ALTA» now", ["alta", "alta"]),
        ("भेजें 'शुरू'", ["शुरू"]),
        ("Reply {opt_in_keyword} to come back", []),
        ("Reply to this message any time", []),
        ("You will get no more SMS from ACME", []),
        ("Text STOP, then START", ["stop"]),
    ],
)
def test_promised_keywords(text: str, promised: list[str]) -> None:
    assert promised_keywords(text) == promised


def test_default_texts() -> None:
    base = TenantSettings(business_name="Meal Box")
    assert reply_text(base, "t", OUT, "en", "") == (
        "You have been unsubscribed from Meal Box messages. Reply START to subscribe again."
    )
    assert reply_text(base, "t", OUT, "en", "marketing") == (
        "You have been unsubscribed from Meal Box marketing messages. "
        "Reply START to subscribe again."
    )
    assert reply_text(base, "t", IN, "en", "") == (
        "You are now subscribed to Meal Box messages. Reply STOP to unsubscribe."
    )
    with_url = dataclasses.replace(base, resubscribe_url="https://x.example/back")
    assert reply_text(with_url, "t", OUT, "en", "") == (
        "You have been unsubscribed from Meal Box messages. "
        "Reply START or visit https://x.example/back to subscribe again."
    )
    # No opt-in keyword at all: the default names the link, never a dead keyword.
    only_out = dataclasses.replace(
        with_url, keyword_sets=(KeywordSet("en", OUT, ("stop",)),), business_name=""
    )
    assert reply_text(only_out, "acme", OUT, "en", "") == (
        "You have been unsubscribed from acme messages. Visit https://x.example/back "
        "to subscribe again."
    )
    assert "STOP" in reply_text(base, "t", HELP, "en", "")


def test_language_picks_the_template_and_falls_back() -> None:
    s = TenantSettings(
        keyword_sets=(*DEFAULT_KEYWORD_SETS, KeywordSet("es", IN, ("alta",))),
        templates=(LanguageTemplates("es", opt_out_confirmation="Adiós {business_name}"),),
        business_name="B",
    )
    assert reply_text(s, "t", OUT, "es", "") == "Adiós B"
    # es has no opt-in text: the built-in one, naming the Spanish keyword.
    assert (
        reply_text(s, "t", IN, "es", "")
        == "You are now subscribed to B messages. Reply STOP to unsubscribe."
    )
    assert reply_text(s, "t", OUT, "hi", "").startswith("You have been unsubscribed")


# -- settings validation -------------------------------------------------------------------


def _validate(s: TenantSettings) -> tuple[TenantSettings, list[str]]:
    v = Violations()
    out = tsettings.validate(v, s)
    return out, [x.field for x in v.items]


def test_valid_settings_are_normalised() -> None:
    s = TenantSettings(
        business_name="  Meal Box ",
        default_region="in",
        default_language="PT-BR",
        keyword_sets=(KeywordSet("ES", OUT, ("  BAJA!! ", "\uff22\uff41\uff4a\uff41\uff12")),),
        templates=(LanguageTemplates("ES", opt_out_confirmation="Adiós"),),
    )
    out, bad = _validate(s)
    assert bad == []
    assert out.business_name == "Meal Box" and out.default_region == "IN"
    assert out.default_language == "pt-br"
    assert out.keyword_sets[0].keywords == ("baja", "baja2")
    assert out.keyword_sets[0].language == "es" and out.templates[0].language == "es"


def test_template_promises_must_be_configured_keywords() -> None:
    s = TenantSettings(templates=(LanguageTemplates("es", opt_out_confirmation="Responde ALTA"),))
    assert _validate(s)[1] == ["settings.templates[0].opt_out_confirmation"]
    ok = dataclasses.replace(
        s, keyword_sets=(*DEFAULT_KEYWORD_SETS, KeywordSet("es", IN, ("alta",)))
    )
    assert _validate(ok)[1] == []
    # ALTA configured, but as an opt-out keyword: still not a way back.
    wrong_kind = dataclasses.replace(
        s, keyword_sets=(*DEFAULT_KEYWORD_SETS, KeywordSet("es", OUT, ("alta",)))
    )
    assert _validate(wrong_kind)[1] == ["settings.templates[0].opt_out_confirmation"]


def test_keyword_placeholders_need_keywords() -> None:
    s = TenantSettings(
        keyword_sets=(KeywordSet("en", OUT, ("stop",)),),
        templates=(LanguageTemplates("en", opt_out_confirmation="Reply {opt_in_keyword}"),),
    )
    assert _validate(s)[1] == ["settings.templates[0].opt_out_confirmation"]


def test_merge_takes_only_masked_fields() -> None:
    current = TenantSettings(business_name="A", resubscribe_url="https://a.example")
    patch = TenantSettings(business_name="B")
    merged = tsettings.merge(current, patch, ["business_name"])
    assert merged.business_name == "B" and merged.resubscribe_url == "https://a.example"
    assert tsettings.merge(current, patch, ["*"]).resubscribe_url == ""


# -- the repository: confirmation queued atomically, once ------------------------------------


def _inbound_event(
    event_id: str, action: Action = Action.OPT_OUT, topic: str = ""
) -> ConsentEventInput:
    return ConsentEventInput(
        tenant_id="acme",
        recipient=ALICE,
        topic=topic,
        action=action,
        source=Source.KEYWORD,
        evidence="inbound keyword",
        occurred_at_ms=T0,
        event_id=event_id,
        principal="anonymous",
    )


async def _outbox(store: RedisConsentStore) -> list[dict[str, str]]:
    part = keys.partition("acme", ALICE)
    entries = await store.client.xrange(keys.outbox(part))
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]


async def test_record_inbound_queues_once_per_change(store: RedisConsentStore) -> None:
    body = OutboundMessage(kind="text", text="bye")
    first = await store.record_inbound(_inbound_event("wamid.1"), body)
    assert first.confirmation_id and first.outcome.changed
    replay = await store.record_inbound(_inbound_event("wamid.1"), body)
    assert replay.outcome.duplicate and replay.confirmation_id == first.confirmation_id
    repeat = await store.record_inbound(_inbound_event("wamid.2"), body)
    assert not repeat.outcome.changed and repeat.confirmation_id == ""
    [entry] = await _outbox(store)
    assert entry["purpose"] == "confirmation" and entry["id"] == first.confirmation_id
    assert json.loads(entry["body"]) == {"kind": "text", "text": "bye"}
    assert entry["tenant"] == "acme" and entry["topic"] == "" and entry["rev"] == "1"
    status = await store.message_status("acme", first.confirmation_id)
    assert status is not None and status.state.value == "accepted"
    # An ordinary OptOut never queues anything.
    await store.record_event(_inbound_event("api.1", Action.OPT_IN))
    assert len(await _outbox(store)) == 1


async def test_concurrent_record_inbound_is_one_event(store: RedisConsentStore) -> None:
    body = OutboundMessage(kind="text", text="bye")
    results = await asyncio.gather(
        *(store.record_inbound(_inbound_event("wamid.c"), body) for _ in range(20))
    )
    assert len({r.confirmation_id for r in results}) == 1
    assert sum(not r.outcome.duplicate for r in results) == 1
    assert len(await _outbox(store)) == 1
    page = await store.list_events("acme", ALICE, 100, None)
    assert len(page.events) == 1


async def test_settings_write_is_version_checked(store: RedisConsentStore) -> None:
    read = await store.fresh_tenant_settings("acme")
    await store.put_tenant_settings("acme", dataclasses.replace(read, business_name="A"))
    with pytest.raises(SettingsConflict):
        await store.put_tenant_settings("acme", dataclasses.replace(read, business_name="B"))
    assert (await store.tenant_settings("acme")).business_name == "A"


async def test_authority_inbound_and_concurrent_updates(store: RedisConsentStore) -> None:
    authority = ConsentAuthority(store)
    result = await authority.inbound(
        tenant_id="acme",
        recipient=RAW,
        text="STOP",
        button_payload="",
        provider_message_id="wamid.a",
        received_at=None,
    )
    assert result.action is InboundAction.OPTED_OUT and result.reply_message_id
    # Concurrent admins changing different fields both win (the loser re-reads).
    await asyncio.gather(
        authority.update_settings("acme", TenantSettings(business_name="X"), ["business_name"]),
        authority.update_settings(
            "acme", TenantSettings(resubscribe_url="https://x.example"), ["resubscribe_url"]
        ),
    )
    got = await authority.get_settings("acme")
    assert got.business_name == "X" and got.resubscribe_url == "https://x.example"
    with pytest.raises(InvalidArgument) as err:
        await authority.update_settings("acme", TenantSettings(), [])
    assert [v.field for v in err.value.violations] == ["update_mask"]


# -- property: a confirmation is queued iff what the recipient receives changed -------------

TOPICS = ("marketing", "orders")
INBOUND_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["", *TOPICS]),
        st.sampled_from([Action.OPT_OUT, Action.OPT_IN]),
        st.integers(min_value=0, max_value=5),  # occurred offset: ties and late events
    ),
    min_size=1,
    max_size=12,
)


async def _deciders(store: RedisConsentStore, tenant: str) -> dict[str, object]:
    """The deciding record's status per scope ("" = the all-topics record itself)."""
    out: dict[str, object] = {}
    for topic in TOPICS:
        [(topic_rec, all_rec)] = await store.read_records(tenant, [ALICE], topic)
        record = decide(topic_rec, all_rec, Policy.ALLOW_UNLESS_OPTED_OUT).record
        out[topic] = (record.status, topic_rec is not None) if record else None
        out[""] = all_rec.status if all_rec else None
    return out


@pytest.mark.slow  # a property run of several seconds: make test, not test-fast
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=INBOUND_EVENTS)
def test_confirmation_iff_the_decision_changes(
    events: list[tuple[str, Action, int]],
) -> None:
    """Oracle: the pure decision rule before and after each event. A topic event
    confirms iff that topic's deciding status changed (or it had none); an all-topics
    event iff the all-topics record's status changed or some topic's did."""

    async def run() -> None:
        store = RedisConsentStore(
            fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), settings_cache_s=0
        )
        body = OutboundMessage(kind="text", text="ok")
        for i, (topic, action, at) in enumerate(events):
            before = await _deciders(store, "acme")
            ev = dataclasses.replace(
                _inbound_event(f"wamid.{i}", action, topic), occurred_at_ms=T0 + at
            )
            got = await store.record_inbound(ev, body)
            after = await _deciders(store, "acme")

            def status(d: dict[str, object], scope: str) -> object:
                v = d[scope]
                return v[0] if isinstance(v, tuple) else v

            if topic:
                expected = got.outcome.applied and (
                    before[topic] is None or status(before, topic) != status(after, topic)
                )
            else:
                expected = got.outcome.applied and (
                    before[""] is None
                    or before[""] != after[""]
                    or any(status(before, t) != status(after, t) for t in TOPICS)
                )
            assert bool(got.confirmation_id) == expected, (i, events)
        await store.aclose()

    asyncio.run(run())
