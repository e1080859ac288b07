"""Address normalisation: one spelling per real address, clear refusals."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from consent_server.domain.model import Channel
from consent_server.domain.recipients import (
    AddressError,
    exact_e164,
    normalise_address,
    plus_digits_e164,
)

WA, SMS, EMAIL, VOICE = Channel.WHATSAPP, Channel.SMS, Channel.EMAIL, Channel.VOICE


@pytest.mark.parametrize(
    ("channel", "raw", "region", "expected"),
    [
        (WA, "+919876543210", None, "+919876543210"),
        (WA, "+91 98765 43210", None, "+919876543210"),
        (WA, "whatsapp:+919876543210", None, "+919876543210"),
        (WA, "WhatsApp:+91-98765-43210", None, "+919876543210"),
        (WA, "919876543210", None, "+919876543210"),  # WhatsApp ID as webhooks send it
        (WA, "(+91) 98765.43210", None, "+919876543210"),
        (SMS, "tel:+1 (415) 555-0123", None, "+14155550123"),  # fictional 555-01xx works
        (SMS, "sms:+14155550123", None, "+14155550123"),
        (SMS, "415-555-0123", "US", "+14155550123"),
        (SMS, "098765 43210", "IN", "+919876543210"),
        (SMS, "  +44 20 7946 0958  ", None, "+442079460958"),
        (VOICE, "020 7946 0958", "GB", "+442079460958"),
        (Channel.RCS, "+49 30 901820", None, "+4930901820"),
        (EMAIL, "  Jane.Doe@Example.COM ", None, "jane.doe@example.com"),
        (EMAIL, "a+tag@sub.example.co.uk", None, "a+tag@sub.example.co.uk"),
        (EMAIL, "user@bücher.de", None, "user@xn--bcher-kva.de"),
        (SMS, "+91\u00a098765\u00a043210\n", None, "+919876543210"),  # pasted from a web page
        (SMS, "+٩١٩٨٧٦٥٤٣٢١٠", None, "+919876543210"),  # Arabic-Indic digits
    ],
)
def test_normalises(channel: Channel, raw: str, region: str | None, expected: str) -> None:
    assert normalise_address(channel, raw, region) == expected


@pytest.mark.parametrize(
    ("channel", "raw", "region", "needle"),
    [
        (WA, "", None, "empty"),
        (WA, "   ", None, "empty"),
        (WA, "x" * 255, None, "254"),
        (WA, "whatsapp:", None, "no number"),
        (WA, "+91 98765 CALLME", None, "only digits"),
        (WA, "+1 415 555 0123 ext 7", None, "only digits"),
        (SMS, "4155550123", None, "no country code"),  # no region: refuse to guess
        (SMS, "+999 1234 5678", None, "country code"),
        (SMS, "+1 415", None, "possible"),
        (SMS, "+1234567890123456789", None, ""),
        (SMS, "' OR 1=1 --", None, "only digits"),
        (SMS, "+91+9876543210", None, "'+'"),
        (SMS, "+91 98765 43210\n+1 415 555 0123", None, "'+'"),
        (EMAIL, "jane", None, "local@domain"),
        (EMAIL, "jane@localhost", None, "dot"),
        (EMAIL, "@example.com", None, "local@domain"),
        (EMAIL, "ja ne@example.com", None, "character"),
        (EMAIL, "jane..doe@example.com", None, "dot"),
        (EMAIL, "jane@exa_mple.com", None, "host name"),
        (EMAIL, "jane@example..com", None, ""),
        (EMAIL, "j" * 65 + "@example.com", None, "64"),
        (EMAIL, "jane@" + "a" * 250 + ".com", None, "254"),
    ],
)
def test_rejects(channel: Channel, raw: str, region: str | None, needle: str) -> None:
    with pytest.raises(AddressError) as err:
        normalise_address(channel, raw, region)
    assert needle in str(err.value)
    # Refusals never echo the input back (it may be personal data).
    assert raw.strip() == "" or raw.strip() not in str(err.value)


@given(
    national=st.from_regex(r"\A[2-9]\d{2}555\d{4}\Z"),
    seps=st.lists(st.sampled_from([" ", "-", ".", ""]), min_size=3, max_size=3),
    prefix=st.sampled_from(["", "tel:", "sms:", "whatsapp:"]),
)
def test_spellings_of_one_number_agree(national: str, seps: list[str], prefix: str) -> None:
    spelled = f"{prefix}+1 ({national[:3]}){seps[0]}{national[3:6]}{seps[1]}{national[6:]}"
    assert normalise_address(SMS, spelled, None) == normalise_address(SMS, "+1" + national, "IN")


@given(st.text(max_size=300))
def test_never_crashes_on_any_text(raw: str) -> None:
    for channel in Channel:
        try:
            out = normalise_address(channel, raw, "US")
        except AddressError:
            continue
        # Whatever is accepted is already normal: normalising again is a no-op.
        assert normalise_address(channel, out, None) == out


# -- the '+' digits fast path agrees with phonenumbers ---------------------------------


def _phonenumbers_e164(text: str) -> str | None:
    """The full phonenumbers reading of ``text``: E.164 when possible, else None."""
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _assert_fast_agrees(text: str) -> None:
    fast = plus_digits_e164(text)
    if fast is not None:
        assert fast == _phonenumbers_e164(text), text
    expected = _phonenumbers_e164(text)
    if _PLUS_DIGITS.fullmatch(text) and expected is not None:
        # Every possible number of this shape takes the fast path, and the whole
        # normalisation answers what phonenumbers answers.
        assert fast == expected, text
        assert normalise_address(SMS, text, None) == expected
        assert normalise_address(SMS, text, "IN") == expected


_PLUS_DIGITS = re.compile(r"\+[1-9][0-9]{2,16}")
_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


@given(
    st.sampled_from(_CODES) | st.integers(1, 999),
    st.text(alphabet="0123456789", max_size=17),
    st.sampled_from(["", "0", "00", "1", "8", "9", "06", "011"]),
)
def test_plus_digits_fast_path_agrees_with_phonenumbers(code: int, digits: str, head: str) -> None:
    _assert_fast_agrees(f"+{code}{head}{digits}")


def test_plus_digits_fast_path_agrees_for_every_country_code() -> None:
    # Each code with national numbers of every length, with and without the leading
    # digits national prefixes use (0, 1, 8...), so each region's stripping rule runs.
    for code in _CODES:
        for head in ("", "0", "1", "8", "06", "00"):
            for length in range(1, 15):
                _assert_fast_agrees(f"+{code}{head}{'5' * length}")
                _assert_fast_agrees(f"+{code}{head}{'2' * (length - 1)}9")


@pytest.mark.parametrize(
    "text", ["+14155550123", "+442079460958", "+390612345678", "+4402079460958", "+79161234567"]
)
def test_plus_digits_fast_path_takes_common_numbers(text: str) -> None:
    assert plus_digits_e164(text) == _phonenumbers_e164(text)
    assert plus_digits_e164(text) is not None


@pytest.mark.parametrize("text", ["+0123456789", "+1 415", "+١٤١٥٥٥٥٠١٢٣", "14155550123", "+12"])
def test_plus_digits_fast_path_leaves_other_spellings_to_phonenumbers(text: str) -> None:
    assert plus_digits_e164(text) is None


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from([*sorted(str(c) for c in COUNTRY_CODE_TO_REGION_CODE), "", "9", "0"]),
    st.text(alphabet="0123456789", min_size=0, max_size=17),
)
def test_exact_e164_agrees_with_the_reference_path(code: str, rest: str) -> None:
    text = f"+{code}{rest}"
    assert exact_e164(text) == plus_digits_e164(text)


def test_exact_e164_agrees_for_every_country_code_and_length() -> None:
    for code in _CODES:
        for head in ("", "0", "1", "8", "06", "00", "9"):
            for length in range(0, 16):
                text = f"+{code}{head}{'5' * length}"
                assert exact_e164(text) == plus_digits_e164(text), text
