"""Address normalisation: one spelling per real address, clear refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_server.domain.model import Channel
from consent_server.domain.recipients import AddressError, normalise_address

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
