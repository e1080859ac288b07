"""The link pages' message catalogue and language negotiation (pure)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_server.domain import page_messages as pm


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_every_key_is_in_every_language_with_the_same_placeholders() -> None:
    assert set(pm.CATALOGUE) >= {"en", "es", "pt", "fr", "de"}
    english = pm.CATALOGUE["en"]
    for lang, words in pm.CATALOGUE.items():
        assert set(words) == set(english), f"{lang}: {set(english) ^ set(words)}"
        for key, text in words.items():
            assert text.strip(), f"{lang}.{key} is empty"
            assert _placeholders(text) == _placeholders(english[key]), f"{lang}.{key}"
            # Catalogue text goes into the page unescaped around escaped values.
            assert not set(text) & set("<>&\"'"), f"{lang}.{key} has HTML syntax"


def test_translations_are_translations() -> None:
    # A language that copies English everywhere is a missing translation.
    for lang in ("es", "pt", "fr", "de"):
        same = [k for k in pm.KEYS if pm.CATALOGUE[lang][k] == pm.CATALOGUE["en"][k]]
        assert set(same) <= {"channel_whatsapp", "channel_sms", "channel_rcs", "channel_email"}


@pytest.mark.parametrize(
    ("supported", "header", "override", "expected"),
    [
        (["en", "es", "pt-br"], "pt-BR,pt;q=0.9,en;q=0.8", None, "pt-br"),
        (["en", "es", "pt"], "pt-BR,pt;q=0.9", None, "pt"),  # region falls back to pt
        (["en", "pt-br"], "pt-PT", None, "pt-br"),  # same language, other region
        (["en", "es"], "fr-CH, fr;q=0.9, es;q=0.5", None, "es"),
        (["en", "es"], "es;q=0.1, en;q=0.9", None, "en"),  # q order, not header order
        (["es", "en"], "de, ja", None, "es"),  # nothing matches: the tenant's default
        (["es", "en"], "en;q=0", None, "es"),  # q=0 means "not this one"
        (["es", "en"], "*", None, "es"),
        (["en", "es"], "es", "en", "en"),  # ?lang= wins
        (["en", "es"], "es", "fr", "es"),  # an unsupported ?lang= is ignored
        (["en", "es"], "es", "EN_gb", "en"),
        (["en", "es"], None, None, "en"),
        (["en", "es"], "es;q=abc, en;q=0.5", None, "en"),  # malformed q drops the entry
    ],
)
def test_negotiate(
    supported: list[str], header: str | None, override: str | None, expected: str
) -> None:
    assert pm.negotiate(supported, header, override) == expected


@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=80)))
def test_negotiate_never_raises_and_answers_a_supported_language(
    header: str, override: str | None
) -> None:
    supported = ["en", "es", "pt-br"]
    assert pm.negotiate(supported, header, override) in supported


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["en", "es", "pt", "pt-br", "fr", "de", "*", "x-y", "zz"]),
            st.one_of(st.none(), st.floats(0, 1).map(lambda q: f"{q:.3f}")),
        ),
        max_size=10,
    )
)
def test_parse_accept_language_orders_by_q(entries: list[tuple[str, str | None]]) -> None:
    header = ",".join(tag if q is None else f"{tag};q={q}" for tag, q in entries)
    weighted = [(tag, 1.0 if q is None else float(q)) for tag, q in entries]
    kept = [(t, q) for t, q in weighted if q > 0 and (t == "*" or pm.is_tag(t))]
    expected = [t for t, _ in sorted(kept, key=lambda e: -e[1])]  # stable: header order
    assert pm.parse_accept_language(header) == expected


@given(st.text(max_size=200))
def test_no_request_text_reaches_the_answer(evil: str) -> None:
    # Whatever the request says, the answer is a tag from the tenant's list: safe in
    # <html lang> and in a Content-Language header.
    lang = pm.negotiate(["en", "de"], evil, evil)
    assert lang in ("en", "de")
    assert pm.html_tag(lang).replace("-", "").isalnum()


def test_supported_languages_and_coverage() -> None:
    assert pm.supported_languages((), "es") == ["es"]
    assert pm.supported_languages((), "ja") == ["en"]  # no page words for ja
    assert pm.supported_languages(("pt-br", "en", "pt-br"), "en") == ["pt-br", "en"]
    assert pm.covered("pt-br") and not pm.covered("ja") and not pm.covered("<b>")
    assert pm.html_tag("pt-br") == "pt-BR" and pm.html_tag("zh-hant-tw") == "zh-Hant-TW"
    assert pm.messages("pt-br") is pm.CATALOGUE["pt"]
    assert pm.messages("ja") is pm.CATALOGUE["en"]


def test_a_huge_header_is_cut_short() -> None:
    header = ",".join(["xx"] * 10_000) + ",es"
    assert pm.negotiate(["en", "es"], header) == "en"
