"""Careless-caller traps closed at the mechanism: checks must name a topic, bare WhatsApp
digits that only make sense as a national number are refused, settings updates carry
the version they read, and free text refuses control characters. Each refusal is
INVALID_ARGUMENT (or ABORTED) and writes nothing."""

from __future__ import annotations

import inspect
import string
from typing import Any

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_client import AsyncConsentClient, ConsentClient
from consent_server.domain import validation as val
from consent_server.domain.errors import InvalidArgument, SettingsConflict
from consent_server.domain.model import (
    Action,
    Channel,
    KeywordKind,
    KeywordSet,
    Source,
    TenantSettings,
)
from consent_server.domain.recipients import AddressError, normalise_phone
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawMessage, RawRecipient
from consent_server.store.repository import RedisConsentStore

from .support import change_consent

WA = RawRecipient(Channel.WHATSAPP, "+919876543210")


async def _keys(store: RedisConsentStore) -> list[Any]:
    return sorted(await store.client.keys("*"))


def _fields(exc: InvalidArgument) -> list[str]:
    return [v.field for v in exc.violations]


# -- 2. a check must name its topic ------------------------------------------------------


async def test_check_without_topic_is_refused_like_a_send(store: RedisConsentStore) -> None:
    authority = ConsentAuthority(store)
    await change_consent(authority, Action.OPT_OUT, "acme", WA, "marketing", source=Source.KEYWORD)
    with pytest.raises(InvalidArgument) as sent:
        await authority.send(
            tenant_id="acme", recipient=WA, topic="", message=RawMessage("text", text="hi"),
            idempotency_key="", not_after=None, metadata={},
        )  # fmt: skip
    with pytest.raises(InvalidArgument) as checked:
        await authority.check("acme", WA, "")
    with pytest.raises(InvalidArgument) as batch:
        await authority.batch_check("acme", "", [WA])
    send_msg = [v for v in sent.value.violations if v.field == "topic"]
    assert checked.value.violations == send_msg and batch.value.violations == send_msg
    # With the topic named, the marketing opt-out is found.
    assert not (await authority.check("acme", WA, "marketing")).decision.allowed


@pytest.mark.parametrize("cls", [ConsentClient, AsyncConsentClient])
@pytest.mark.parametrize("method", ["check_consent", "batch_check_consent"])
def test_client_check_signatures_require_a_topic(cls: type, method: str) -> None:
    param = inspect.signature(getattr(cls, method)).parameters["topic"]
    assert param.default is inspect.Parameter.empty
    assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


# -- 3. ambiguous WhatsApp digits --------------------------------------------------------


def test_a_national_number_typed_as_a_wa_id_is_refused_naming_both_readings() -> None:
    with pytest.raises(AddressError) as err:
        normalise_phone("9876543210", "IN", whatsapp=True)
    assert "+9876543210" in str(err.value) and "+919876543210" in str(err.value)
    # Valid wa_ids stay accepted, and so are fictional numbers written with '+'.
    assert normalise_phone("919876543210", "IN", whatsapp=True) == "+919876543210"
    assert normalise_phone("+1 202 555 0100", "IN", whatsapp=True) == "+12025550100"
    assert normalise_phone("+15555550123", "US", whatsapp=True) == "+15555550123"
    # Without a default region there is no second reading: the wa_id is taken as today.
    assert normalise_phone("9876543210", None, whatsapp=True) == "+9876543210"


async def test_ambiguous_digits_are_invalid_argument_and_write_nothing(
    store: RedisConsentStore,
) -> None:
    await store.put_tenant_settings("acme", TenantSettings(default_region="IN", version=0))
    before = await _keys(store)
    with pytest.raises(InvalidArgument) as err:
        await ConsentAuthority(store).change(
            Action.OPT_OUT, tenant_id="acme",
            recipient=RawRecipient(Channel.WHATSAPP, "9876543210"), topic="",
            source=Source.API, evidence="", occurred_at=None, event_id="",
        )  # fmt: skip
    assert _fields(err.value) == ["recipient.address"]
    assert await _keys(store) == before


REGIONS = ["IN", "US", "GB", "BR", "DE", "ID", "NG", "MX"]


@given(digits=st.text(string.digits, min_size=8, max_size=15), region=st.sampled_from(REGIONS))
def test_bare_whatsapp_digits_against_phonenumbers(digits: str, region: str) -> None:
    """Valid as a wa_id -> that number; else valid only nationally -> refused, naming
    both; else today's rule (a possible wa_id is accepted)."""
    as_wa = _parse("+" + digits, None)
    national = _parse(digits, region)
    wa_valid = as_wa is not None and phonenumbers.is_valid_number(as_wa)
    national_valid = national is not None and phonenumbers.is_valid_number(national)
    try:
        got: str | None = normalise_phone(digits, region, whatsapp=True)
        error = ""
    except AddressError as exc:
        got, error = None, str(exc)
    if wa_valid:
        assert got == "+" + digits or got == _e164(as_wa)
    elif national_valid:
        assert got is None and "+" + digits in error and _e164(national) in error
    elif as_wa is not None and phonenumbers.is_possible_number(as_wa):
        assert got == _e164(as_wa)
    else:
        assert got is None


def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def _e164(number: phonenumbers.PhoneNumber | None) -> str:
    assert number is not None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# -- 4. settings updates carry the version they read ------------------------------------


async def test_a_stale_settings_version_is_aborted_and_changes_nothing(
    store: RedisConsentStore,
) -> None:
    authority = ConsentAuthority(store)
    read = await authority.get_settings("acme")
    mine = TenantSettings(business_name="Mine")
    theirs = await authority.update_settings(
        "acme", TenantSettings(business_name="Theirs"), ["business_name"],
        expected_version=read.version,
    )  # fmt: skip
    assert theirs.version == read.version + 1
    with pytest.raises(SettingsConflict) as stale:
        await authority.update_settings(
            "acme", mine, ["business_name"], expected_version=read.version
        )
    assert stale.value.reason == "SETTINGS_VERSION_MISMATCH"
    assert (await authority.get_settings("acme")).business_name == "Theirs"
    # The current version applies; no version at all stays unconditional.
    ok = await authority.update_settings(
        "acme", mine, ["business_name"], expected_version=theirs.version
    )
    assert ok.business_name == "Mine"
    last = await authority.update_settings("acme", TenantSettings(business_name="Any"), ["*"])
    assert last.business_name == "Any" and last.version == ok.version + 1
    with pytest.raises(InvalidArgument) as negative:
        await authority.update_settings("acme", mine, ["business_name"], expected_version=-1)
    assert _fields(negative.value) == ["version"]


# -- 5. control characters in free text --------------------------------------------------

CONTROLS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))]
ANSI = ["\x1b[31mred\x1b[0m", "\x1b]0;title\x07", "\x9b2J", "ok\rforged log line"]


@given(st.text(), st.sampled_from(CONTROLS), st.text())
def test_free_text_refuses_every_c0_c1_character(before: str, control: str, after: str) -> None:
    v = val.Violations()
    assert val.free_text(v, before + control + after, "f") == ""
    assert [x.field for x in v.items] == ["f"]
    multiline = val.Violations()
    val.free_text(multiline, before + control + after, "f", multiline=True)
    allowed = control in "\t\n\r" and not any(val.has_control(t, multiline=True)
                                                for t in (before, after))  # fmt: skip
    assert (multiline.items == []) == allowed


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc",))))
def test_free_text_keeps_everything_else(text: str) -> None:
    v = val.Violations()
    assert val.free_text(v, text, "f") == text and v.items == []


@pytest.mark.parametrize("bad", ANSI)
async def test_control_characters_are_refused_everywhere_and_write_nothing(
    store: RedisConsentStore, bad: str
) -> None:
    authority = ConsentAuthority(store)
    before = await _keys(store)
    with pytest.raises(InvalidArgument) as evidence:
        await authority.change(
            Action.OPT_OUT, tenant_id="acme", recipient=WA, topic="", source=Source.API,
            evidence=bad, occurred_at=None, event_id="",
        )  # fmt: skip
    assert _fields(evidence.value) == ["evidence"]
    with pytest.raises(InvalidArgument) as sent:
        await authority.send(
            tenant_id="acme", recipient=WA, topic="marketing",
            message=RawMessage("text", text=f"line one\nline two {bad}"),
            idempotency_key="", not_after=None, metadata={"campaign": bad},
        )  # fmt: skip
    # Message text may break lines ("\r" passes there), never carry escapes.
    text_refused = ["message.text"] if "\x1b" in bad or "\x9b" in bad else []
    assert sorted(_fields(sent.value)) == [*text_refused, "metadata['campaign']"]
    with pytest.raises(InvalidArgument) as settings:
        await authority.update_settings(
            "acme",
            TenantSettings(
                business_name=bad,
                keyword_sets=(KeywordSet("en", KeywordKind.OPT_OUT, ("STOP" + bad,)),),
            ),
            ["business_name", "keyword_sets"],
        )
    assert "settings.business_name" in _fields(settings.value)
    assert "settings.keyword_sets[0].keywords[0]" in _fields(settings.value)
    assert await _keys(store) == before


async def test_multi_line_message_text_stays_accepted(store: RedisConsentStore) -> None:
    sent = await ConsentAuthority(store).send(
        tenant_id="acme", recipient=WA, topic="order_updates",
        message=RawMessage("text", text="Your order:\n\t2 x pizza\r\nThanks!"),
        idempotency_key="", not_after=None, metadata={},
    )  # fmt: skip
    assert sent.accepted.message_id
