"""Masking keeps our own identifiers whole and hides addresses.

The log filter masks every string of a record; identifiers are strings too. A digit run
inside an identifier (a message id is hex: ``m0a019abc12345678901...``) is not a phone
number, so the masker must leave it alone, or logs cannot be matched to records.
"""

from __future__ import annotations

import uuid

from hypothesis import example, given
from hypothesis import strategies as st

from consent_server.domain.links import link_event_id, new_token_id
from consent_server.domain.masking import mask_text
from consent_server.domain.whatsapp import derived_event_id
from consent_server.store.keys import new_message_id

_HEX = "0123456789abcdef"


def hexes(n: int) -> st.SearchStrategy[str]:
    """n hex digits, biased towards long decimal runs (what used to be corrupted)."""
    return st.text(st.sampled_from(_HEX), min_size=n, max_size=n) | st.text(
        st.sampled_from("0123456789a"), min_size=n, max_size=n
    )


# Each of the id formats the service mints (store/keys.py, domain/service.py,
# domain/links.py, domain/whatsapp.py, domain/auth.py), with hypothesis choosing the
# random parts.
message_ids = st.builds(
    lambda part, ms, rnd: f"m{part:02x}{ms:012x}{rnd}",
    st.integers(0, 255),
    st.integers(0, 16**12 - 1),
    hexes(16),
)
event_ids = hexes(32).map(lambda h: f"ev_{h}")
link_ids = st.builds(lambda a, b: f"lk_{a}.{b}", hexes(24), hexes(24))
wa_ids = hexes(40).map(lambda h: f"wa.pref.{h}") | hexes(40).map(lambda h: f"wa.body.{h}")
key_ids = hexes(16)
own_ids = message_ids | event_ids | link_ids | wa_ids | key_ids

phones = st.from_regex(r"\A\+[1-9]\d{7,14}\Z")
bare_numbers = st.from_regex(r"\A[1-9]\d{7,14}\Z")  # WhatsApp ids: digits only
emails = st.from_regex(r"\A[a-z][a-z0-9._]{2,12}@[a-z]{3,10}\.(com|org|de)\Z")


@given(own_ids, st.one_of(phones, bare_numbers), emails)
@example("m0a0190000012345678901234567890", "+14155550100", "jane@example.com")
@example("m00" + "0" * 12 + "1234567890123456", "14155550100", "bob@example.org")
@example("m00" + "0" * 28, "10000000", "a@example.com")
def test_our_ids_survive_masking_while_addresses_do_not(
    ident: str, number: str, email: str
) -> None:
    text = f"message {ident} to {number} cc {email}: event_id={ident}"
    masked = mask_text(text)
    assert masked.count(ident) == 2, masked
    # The number may also be a substring of the id (hypothesis found "10000000" inside
    # "m00…000"): what must be gone is the number where it stands on its own.
    rest = masked.replace(ident, "")
    assert number not in rest
    assert email not in rest
    assert mask_text(ident) == ident


def test_ids_minted_by_the_real_generators_survive() -> None:
    for part in range(0, 256, 7):
        ident = new_message_id(part)
        assert mask_text(f"id {ident}") == f"id {ident}"
    for _ in range(200):
        token = new_token_id()
        for ident in (
            f"ev_{uuid.uuid4().hex}",
            token,
            link_event_id(token, "nonce"),
            link_event_id(token),
            derived_event_id(uuid.uuid4().hex, "entry[0].changes[0].messages[1]"),
        ):
            assert mask_text(ident) == ident


@given(st.one_of(phones, bare_numbers))
def test_numbers_next_to_punctuation_are_still_masked(number: str) -> None:
    for text in (
        f"to:{number}",
        f"({number})",
        f"wa_id={number},",
        f"user_{number}",
        f"'{number}'",
    ):
        assert number not in mask_text(text), text
