"""The link pages' HTML: business name escaped, language attribute, accessible structure
and WCAG contrast of the colours the CSS really uses."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_server.domain import page_messages as pm
from consent_server.domain.links import LinkClaims
from consent_server.domain.model import Action, Channel, Recipient
from consent_server.http import pages


def _luminance(hex_colour: str) -> float:
    """WCAG 2.x relative luminance of an sRGB colour."""
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2.x contrast ratio, 1..21."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_the_contrast_function_matches_known_ratios() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # famous fail
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)  # famous pass


@pytest.mark.parametrize(("fg", "bg"), pages.TEXT_PAIRS)
def test_every_text_colour_has_aa_contrast(fg: str, bg: str) -> None:
    assert contrast(pages.PALETTE[fg], pages.PALETTE[bg]) >= 4.5


def test_the_css_uses_the_palette_and_shows_focus() -> None:
    html = pages.error_page("t", "m")
    css = re.search(r"<style>(.*)</style>", html, re.S)
    assert css is not None
    colours = set(re.findall(r"#[0-9a-fA-F]{6}\b", css.group(1)))
    assert colours <= set(pages.PALETTE.values()), "a colour outside PALETTE is untested"
    assert "button:focus-visible{outline:3px" in css.group(1)
    # The focus ring is the text colour on the card: visible (3:1 for UI parts).
    assert contrast(pages.PALETTE["focus"], pages.PALETTE["card"]) >= 3


def _claims(action: Action = Action.OPT_OUT, topic: str = "marketing") -> LinkClaims:
    return LinkClaims(
        "acme", Recipient(Channel.SMS, "+14155550123"), topic, action, 1, 2, "lk_" + "a" * 24
    )


class _Shape(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.button_in_form = False
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "button" and "form" in self.stack:
            self.button_in_form = True
        if tag == "script":
            self.scripts += 1
        if tag not in ("meta", "input", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass


def _shape(html: str) -> _Shape:
    shape = _Shape()
    shape.feed(html)
    return shape


@pytest.mark.parametrize("lang", [*sorted(pm.CATALOGUE), "pt-br"])
@pytest.mark.parametrize("action", [Action.OPT_OUT, Action.OPT_IN])
def test_confirm_page_is_accessible_in_every_language(lang: str, action: Action) -> None:
    ctx = pages.PageContext(lang=lang, business="Acme Foods")
    html = pages.confirm_page(_claims(action), "ab" * 16, ctx)
    shape = _shape(html)
    names = [t for t, _ in shape.tags]
    assert names.count("h1") == 1
    assert shape.button_in_form and shape.scripts == 0
    (html_attrs,) = [a for t, a in shape.tags if t == "html"]
    assert html_attrs["lang"] == pm.html_tag(lang)
    assert any(t == "meta" and a.get("name") == "viewport" for t, a in shape.tags)
    (button,) = [a for t, a in shape.tags if t == "button"]
    assert button["type"] == "submit"
    (form,) = [a for t, a in shape.tags if t == "form"]
    assert form["method"] == "post" and form["aria-labelledby"] == "title"
    words = pm.messages(lang)
    assert words["button_opt_out" if action is Action.OPT_OUT else "button_opt_in"] in html
    assert "Acme Foods" in html and "acme</b>" not in html
    assert "+14155550123" not in html  # masked
    assert "{" not in re.sub(r"<style>.*</style>", "", html, flags=re.S)


def test_the_tenant_id_stands_in_for_an_unset_business_name() -> None:
    html = pages.done_page(_claims(), True, pages.PageContext(lang="de", business=""))
    assert "<b>acme</b>" in html and "abgemeldet" in html


INJECTIONS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "Tom & Jerry's </b><h1>",
    "{what}{business}",  # placeholders in a name are text, not format fields
    "</style><script>x</script>",
]


@pytest.mark.parametrize("name", INJECTIONS)
def test_business_names_and_topics_are_escaped(name: str) -> None:
    ctx = pages.PageContext(lang="en", business=name)
    for html in (
        pages.confirm_page(_claims(topic="promo"), "ab" * 16, ctx),
        pages.done_page(_claims(), False, ctx),
    ):
        assert name not in html or not set(name) & set("<>&\"'")
        shape = _shape(html)
        assert shape.scripts == 0
        assert [t for t, _ in shape.tags].count("h1") == 1
        assert not any(a.get("onerror") for _, a in shape.tags)
        assert not any(t == "img" for t, _ in shape.tags)


@given(st.text(max_size=60))
def test_no_business_name_adds_markup(name: str) -> None:
    ctx = pages.PageContext(lang="fr", business=name)
    shape = _shape(pages.confirm_page(_claims(), "ab" * 16, ctx))
    baseline = _shape(pages.confirm_page(_claims(), "ab" * 16, pages.PageContext(lang="fr")))
    assert [t for t, _ in shape.tags] == [t for t, _ in baseline.tags]
