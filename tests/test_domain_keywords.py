"""The keyword engine: a table of inbound texts with the expected
outcome, and property tests of the normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_server.domain.keywords import KeywordMatcher, Match, loose, normalise, words
from consent_server.domain.model import (
    DEFAULT_BUTTON_PAYLOADS,
    DEFAULT_KEYWORD_SETS,
    KeywordKind,
    KeywordSet,
)

OUT, IN, HELP = KeywordKind.OPT_OUT, KeywordKind.OPT_IN, KeywordKind.HELP
MKT = "marketing"


def fw(ascii_text: str) -> str:
    """The fullwidth spelling of ASCII letters (U+FF21...), which NFKC folds back."""
    return "".join(chr(ord(c) + 0xFEE0) if c != " " else c for c in ascii_text)


# Tenant keywords in other languages and scripts, on top of the defaults.
EXTRA = (
    KeywordSet("es", OUT, ("baja", "cancelar suscripción")),
    KeywordSet("es", IN, ("alta",)),
    KeywordSet("hi", OUT, ("रोकें",)),
    KeywordSet("hi", IN, ("शुरू",)),
    KeywordSet("zh", OUT, ("停止",)),
    KeywordSet("de", OUT, ("abmelden",)),
    KeywordSet("ar", OUT, ("إلغاء",)),
    KeywordSet("ru", OUT, ("стоп",)),
)
MATCHER = KeywordMatcher(DEFAULT_KEYWORD_SETS + EXTRA, DEFAULT_BUTTON_PAYLOADS)
NO_INFER = KeywordMatcher(
    DEFAULT_KEYWORD_SETS + EXTRA, DEFAULT_BUTTON_PAYLOADS, infer_opt_out_in_sentences=False
)

# (text, expected (kind, keyword, topic) or None, whether found inside a sentence)
TABLE: list[tuple[str, tuple[KeywordKind, str, str] | None, bool]] = [
    # whole-message defaults, any case
    ("STOP", (OUT, "stop", ""), False),
    ("stop", (OUT, "stop", ""), False),
    ("Stop", (OUT, "stop", ""), False),
    ("sToP", (OUT, "stop", ""), False),
    ("STOPALL", (OUT, "stopall", ""), False),
    ("Unsubscribe", (OUT, "unsubscribe", ""), False),
    ("CANCEL", (OUT, "cancel", ""), False),
    ("end", (OUT, "end", ""), False),
    ("Quit", (OUT, "quit", ""), False),
    ("REVOKE", (OUT, "revoke", ""), False),
    ("OPTOUT", (OUT, "optout", ""), False),
    ("OPT OUT", (OUT, "opt out", ""), False),
    ("opt   out", (OUT, "opt out", ""), False),
    ("Opt-Out", (OUT, "opt out", ""), False),
    ("opt_out", (OUT, "opt out", ""), False),
    ("Stop promotions", (OUT, "stop promotions", MKT), False),
    ("STOP PROMOTIONS", (OUT, "stop promotions", MKT), False),
    ("START", (IN, "start", ""), False),
    ("unstop", (IN, "unstop", ""), False),
    ("Subscribe", (IN, "subscribe", ""), False),
    ("opt in", (IN, "opt in", ""), False),
    ("Opt-in!", (IN, "opt in", ""), False),
    ("HELP", (HELP, "help", ""), False),
    ("info", (HELP, "info", ""), False),
    # surrounding whitespace, punctuation and emoji
    ("  STOP  ", (OUT, "stop", ""), False),
    ("STOP.", (OUT, "stop", ""), False),
    ("STOP!!!", (OUT, "stop", ""), False),
    ("¡STOP!", (OUT, "stop", ""), False),
    ('"stop"', (OUT, "stop", ""), False),
    ("(stop)", (OUT, "stop", ""), False),
    ("...start...", (IN, "start", ""), False),
    ("HELP?", (HELP, "help", ""), False),
    ("\U0001f6d1 STOP \U0001f6d1", (OUT, "stop", ""), False),  # stop sign emoji
    ("STOP\U0001f44d\U0001f3fd", (OUT, "stop", ""), False),  # thumbs up, skin tone
    ("\u2764\ufe0f start", (IN, "start", ""), False),  # red heart + variation selector
    ("STOP\u200d", (OUT, "stop", ""), False),  # trailing zero-width joiner
    ("\tSTOP\n", (OUT, "stop", ""), False),
    ("\u00a0STOP\u3000", (OUT, "stop", ""), False),  # no-break and ideographic spaces
    # width and compatibility forms (NFKC)
    (fw("STOP"), (OUT, "stop", ""), False),  # fullwidth
    (fw("start"), (IN, "start", ""), False),
    ("\U0001d412\U0001d413\U0001d40e\U0001d40f", (OUT, "stop", ""), False),  # bold maths
    (fw("Opt Out"), (OUT, "opt out", ""), False),
    # other languages and scripts
    ("BAJA", (OUT, "baja", ""), False),
    ("baja.", (OUT, "baja", ""), False),
    ("ALTA", (IN, "alta", ""), False),
    ("Cancelar suscripción", (OUT, "cancelar suscripción", ""), False),
    ("रोकें", (OUT, "रोकें", ""), False),
    ("रोकें।", (OUT, "रोकें", ""), False),  # Devanagari danda
    ("शुरू", (IN, "शुरू", ""), False),
    ("停止", (OUT, "停止", ""), False),
    ("停止。", (OUT, "停止", ""), False),  # ideographic full stop
    ("ABMELDEN", (OUT, "abmelden", ""), False),
    ("إلغاء", (OUT, "إلغاء", ""), False),
    ("СТОП", (OUT, "стоп", ""), False),
    # an opt-out keyword as whole words inside a longer message
    ("please stop texting me", (OUT, "stop", ""), True),
    ("Please STOP.", (OUT, "stop", ""), True),
    ("stop it, thanks", (OUT, "stop", ""), True),
    ("I said stop!", (OUT, "stop", ""), True),
    ("can you unsubscribe me", (OUT, "unsubscribe", ""), True),
    ("please stop promotions", (OUT, "stop promotions", MKT), True),
    ("i want to opt out now", (OUT, "opt out", ""), True),
    ("por favor baja", (OUT, "baja", ""), True),
    ("СТОП пожалуйста", (OUT, "стоп", ""), True),
    # near misses: no action
    ("stopwatch", None, False),
    ("non-stop", None, False),
    ("nonstop deals", None, False),
    ("unstoppable", None, False),
    ("I want to start a subscription", None, False),
    ("please start again", None, False),
    ("subscribe me please", None, False),
    ("can I get some help", None, False),
    ("st op", None, False),
    ("s.t.o.p", None, False),
    ("stopp", None, False),
    ("STOP\u200bPLEASE", None, False),  # zero-width space glues the words
    ("thanks!", None, False),
    ("", None, False),
    ("   ", None, False),
    ("\U0001f6d1", None, False),
    ("!!!", None, False),
    ("optional", None, False),
    ("alta calidad", None, False),  # an opt-in word inside a sentence
    ("请停止发送", None, False),  # no spaces: no word to find
]


def test_table_is_big_enough() -> None:
    assert len(TABLE) >= 60


@pytest.mark.parametrize(("text", "want", "inferred"), TABLE, ids=[repr(t[0]) for t in TABLE])
def test_keyword_table(
    text: str, want: tuple[KeywordKind, str, str] | None, inferred: bool
) -> None:
    got = MATCHER.match_text(text)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert (got.kind, got.keyword, got.topic) == want
    assert got.inferred is inferred
    assert not got.button


@pytest.mark.parametrize(
    ("text", "inferred"), [(t, i) for t, w, i in TABLE if w is not None], ids=repr
)
def test_inference_can_be_switched_off(text: str, inferred: bool) -> None:
    got = NO_INFER.match_text(text)
    assert (got is None) is inferred


def test_language_of_the_match() -> None:
    assert _match("BAJA").language == "es"
    assert _match("रोकें").language == "hi"
    assert _match("STOP").language == "en"


@pytest.mark.parametrize(
    ("payload", "want"),
    [
        ("UNSUBSCRIBE", (OUT, "unsubscribe", "")),
        ("unsubscribe", (OUT, "unsubscribe", "")),
        ("STOP_PROMOTIONS", (OUT, "stop_promotions", MKT)),
        (" SUBSCRIBE ", (IN, "subscribe", "")),
    ],
)
def test_default_buttons(payload: str, want: tuple[KeywordKind, str, str]) -> None:
    got = MATCHER.match("", payload)
    assert got is not None and got.button
    assert (got.kind, got.keyword, got.topic) == want
    assert got.language == "en"


def test_an_unknown_payloads_title_acts_only_when_allowed_and_never_for_all() -> None:
    # Meta's sample appointment template: a "Cancel" quick reply is not an opt-out.
    for title in ("Cancel", "STOP", "Unsubscribe", "Start", "Stop promotions", "Help"):
        assert MATCHER.match(title, "CANCEL_APPOINTMENT") is None
    got = MATCHER.match("Stop promotions", "MY_CUSTOM_PAYLOAD", match_button_titles=True)
    assert got is not None and not got.button and got.topic == MKT and got.kind is OUT
    for title in ("Cancel", "STOP", "unsubscribe", "Start", "please stop promotions"):
        assert MATCHER.match(title, "CANCEL_APPOINTMENT", match_button_titles=True) is None
    helped = MATCHER.match("Help", "X", match_button_titles=True)
    assert helped is not None and helped.kind is HELP
    assert MATCHER.match("", "MY_CUSTOM_PAYLOAD", match_button_titles=True) is None
    # Without a payload the text is a reply and matches as one.
    stop = MATCHER.match("Cancel", "")
    assert stop is not None and stop.kind is OUT and stop.topic == ""


def test_a_configured_payload_wins_over_the_text() -> None:
    got = MATCHER.match("START", "UNSUBSCRIBE")
    assert got is not None and got.kind is OUT and got.button


def _match(text: str) -> Match:
    got = MATCHER.match_text(text)
    assert got is not None
    return got


# -- properties --------------------------------------------------------------------------

KEYWORDS = [k for s in DEFAULT_KEYWORD_SETS + EXTRA for k in s.keywords]
JUNK = st.lists(
    st.sampled_from(
        [
            *" \t\n.,;:!?¡¿\"'()[]-_*~…。\uff01\uff1f\u3000",
            *("\U0001f6d1", "\U0001f44d", "\U0001f3fd", "\u2764\ufe0f", "\u200d", "\ufe0f"),
        ]
    ),
    max_size=6,
).map("".join)


@given(st.sampled_from(KEYWORDS), JUNK, JUNK)
def test_surrounding_junk_never_changes_a_whole_message_match(
    keyword: str, before: str, after: str
) -> None:
    plain = MATCHER.match_text(keyword)
    assert plain is not None and not plain.inferred
    assert MATCHER.match_text(before + keyword + after) == plain
    assert MATCHER.match_text(before + keyword.upper() + after) == plain


@pytest.mark.slow  # a property run of several seconds: make test, not test-fast
@given(st.text(max_size=40))
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert once == once.strip()
    assert "  " not in once


@pytest.mark.slow  # a property run of several seconds: make test, not test-fast
@given(st.text(max_size=40))
def test_case_and_width_do_not_matter(text: str) -> None:
    assert normalise(text.upper()) == normalise(normalise(text).upper())


@given(st.sampled_from(KEYWORDS), st.text(alphabet="abcdefghij", min_size=1, max_size=8))
def test_a_keyword_glued_to_letters_is_no_word(keyword: str, letters: str) -> None:
    """ "stopwatch" and "xstop" contain no keyword: only whole words count."""
    for text in (keyword + letters, letters + keyword):
        got = MATCHER.match_text(f"please {text} now")
        assert got is None or got.keyword != keyword


@given(
    st.sampled_from([k for s in DEFAULT_KEYWORD_SETS + EXTRA if s.kind is IN for k in s.keywords])
)
def test_opt_in_is_never_inferred_from_a_sentence(keyword: str) -> None:
    assert MATCHER.match_text(f"hello {keyword} there") is None


def test_words_and_loose_forms() -> None:
    assert words("please, stop. me!") == ("please", "stop", "me")
    assert words("non-stop") == ("non-stop",)
    assert loose("opt-out") == "opt out"
