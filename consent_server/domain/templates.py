"""Confirmation and help texts: placeholders, defaults, rendering, and
the check that a template promises only keywords the tenant has configured.

Placeholders are ``{name}`` with a name from PLACEHOLDERS; ``{{`` and ``}}`` are
literal braces. Rendering is plain substitution (never ``str.format``, which would
let a template reach attributes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .keywords import normalise
from .model import DEFAULT_LANGUAGE, KeywordKind, KeywordSet, LanguageTemplates, TenantSettings

PLACEHOLDERS = {
    "business_name": "the tenant's business name (the tenant id when unset)",
    "resubscribe_url": "the tenant's re-subscribe URL (only when one is configured)",
    "opt_in_keyword": "the first opt-in keyword of the template's language, upper-cased",
    "opt_out_keyword": "the first opt-out keyword of the template's language, upper-cased",
    "topic": "the topic the change applies to ('all' for all topics)",
}
MAX_TEMPLATE_CHARS = 1024

_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

# Verbs that, followed by an upper-case word, promise that word works as a reply:
# "Reply START", "responde ALTA", "envoyez ARRET". Quoted words ("ALTA", «ALTA») are
# promises in any language. Scripts without case (Devanagari, CJK) promise by quoting.
_REPLY_VERBS = frozenset(
    (
        "reply",
        "text",
        "send",
        "type",
        "respond",
        "answer",
        "sms",
        "msg",
        "message",
        "responde",
        "responda",
        "responder",
        "envía",
        "envia",
        "envíe",
        "envie",
        "escribe",
        "escriba",
        "contesta",
        "manda",
        "réponds",
        "répondez",
        "repondez",
        "répondre",
        "envoyez",
        "envoie",
        "tapez",
        "écrivez",
        "antworte",
        "antworten",
        "sende",
        "senden",
        "schreibe",
        "schreiben",
        "rispondi",
        "rispondete",
        "invia",
        "inviate",
        "scrivi",
        "digite",
        "mande",
    )
)
# Words allowed between the verb and the keyword ("Reply with the word START").
_FILLERS = frozenset(
    (
        "with",
        "the",
        "word",
        "con",
        "la",
        "palabra",
        "avec",
        "le",
        "mot",
        "mit",
        "dem",
        "wort",
        "com",
        "a",
    )
)
# Straight, curly (U+2018/9, U+201C/D/E), guillemet and CJK corner quotes.
_QUOTES = "\"'\u2018\u2019\u201c\u201d\u201e\u00ab\u00bb\u300c\u300d\u300e\u300f"
_QUOTED_RE = re.compile(f"[{_QUOTES}]([^{_QUOTES}]{{1,64}})[{_QUOTES}]")
_BRACES = ("{{", "}}")


class TemplateError(ValueError):
    """A template that cannot be used; the message says why."""


def placeholders(template: str) -> list[str]:
    """The placeholder names a template uses; TemplateError on unknown names or stray braces."""
    names = []
    for m in _TOKEN_RE.finditer(template):
        token = m.group(0)
        if token in _BRACES:
            continue
        if m.group(1) is None:
            raise TemplateError(f"has an unmatched {token!r}: write {token * 2} for a brace")
        name = m.group(1)
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise TemplateError(f"uses unknown placeholder {{{name}}}; known: {known}")
        names.append(name)
    return names


def render(template: str, values: dict[str, str]) -> str:
    """Substitute placeholders (the template must have passed ``placeholders``)."""

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in _BRACES:
            return token[0]
        return values.get(m.group(1) or "", token)

    return _TOKEN_RE.sub(sub, template)


def _is_upper_word(word: str) -> bool:
    return any(ch.isalpha() for ch in word) and word == word.upper() and word != word.lower()


def promised_keywords(template: str) -> list[str]:
    """The keywords a template tells the customer to reply, normalised.

    A promise is a quoted word or phrase, or an upper-case word (or run of up to three)
    right after a reply verb ("Reply START", "responde ALTA", "Reply with OPT IN").
    Placeholders are not promises: they render configured keywords."""
    text = _TOKEN_RE.sub(lambda m: " " if m.group(1) is not None else "", template)
    found = [normalise(m.group(1)) for m in _QUOTED_RE.finditer(text)]
    tokens = [t.strip(".,;:!?()[]") for t in text.split()]
    for i, token in enumerate(tokens):
        if normalise(token) not in _REPLY_VERBS:
            continue
        j = i + 1
        while j < len(tokens) and tokens[j].lower() in _FILLERS:
            j += 1
        run: list[str] = []
        while j < len(tokens) and len(run) < 3 and _is_upper_word(tokens[j]):
            run.append(tokens[j])
            j += 1
        if run:
            found.append(normalise(" ".join(run)))
    return [f for f in found if f]


@dataclass(frozen=True, slots=True)
class Texts:
    """The three reply texts of one language, defaults filled in."""

    opt_out_confirmation: str
    opt_in_confirmation: str
    help: str


def default_texts(*, has_url: bool, has_opt_in: bool, has_opt_out: bool, topic: str) -> Texts:
    """The built-in English texts: they name the business and the way back."""
    what = "{business_name} {topic} messages" if topic else "{business_name} messages"
    if has_opt_in and has_url:
        back = " Reply {opt_in_keyword} or visit {resubscribe_url} to subscribe again."
    elif has_opt_in:
        back = " Reply {opt_in_keyword} to subscribe again."
    elif has_url:
        back = " Visit {resubscribe_url} to subscribe again."
    else:
        back = ""
    leave = " Reply {opt_out_keyword} to unsubscribe." if has_opt_out else ""
    help_parts = []
    if has_opt_out:
        help_parts.append("reply {opt_out_keyword} to unsubscribe")
    if has_opt_in:
        help_parts.append("reply {opt_in_keyword} to subscribe again")
    help_text = "{business_name}: " + (
        (" or ".join(help_parts) + ".") if help_parts else "you are messaging our notifications."
    )
    return Texts(
        opt_out_confirmation=f"You have been unsubscribed from {what}.{back}",
        opt_in_confirmation=f"You are now subscribed to {what}.{leave}",
        help=help_text,
    )


def first_keyword(
    sets: Sequence[KeywordSet], kind: KeywordKind, languages: Iterable[str]
) -> str | None:
    """The first keyword of ``kind`` for all topics, in the first of ``languages`` that
    has one (then any language, then topic keywords); None when there is none."""
    ordered = [s for s in sets if s.kind is kind and s.keywords]
    for lang in languages:
        for s in ordered:
            if s.language == lang and not s.topic:
                return s.keywords[0]
    for s in ordered:
        if not s.topic:
            return s.keywords[0]
    return ordered[0].keywords[0] if ordered else None


def templates_for(settings: TenantSettings, language: str) -> LanguageTemplates | None:
    """The tenant's templates of ``language``, else of its default language."""
    by_lang = {t.language: t for t in settings.templates}
    return by_lang.get(language) or by_lang.get(settings.default_language)


def reply_text(
    settings: TenantSettings,
    tenant_id: str,
    kind: KeywordKind,
    language: str,
    topic: str,
    *,
    signed_link: str = "",
) -> str:
    """The rendered confirmation (opt-out/opt-in) or help text for a match in ``language``.

    ``{resubscribe_url}`` is the tenant's own URL when it set one (its explicit choice),
    else ``signed_link``: a fresh signed re-subscribe link when the HTTP edge mints them.
    """
    url = settings.resubscribe_url or signed_link
    langs = [language, settings.default_language, DEFAULT_LANGUAGE]
    opt_in = first_keyword(settings.keyword_sets, KeywordKind.OPT_IN, langs)
    opt_out = first_keyword(settings.keyword_sets, KeywordKind.OPT_OUT, langs)
    defaults = default_texts(
        has_url=bool(url),
        has_opt_in=opt_in is not None,
        has_opt_out=opt_out is not None,
        topic=topic,
    )
    own = templates_for(settings, language)
    field = {
        KeywordKind.OPT_OUT: "opt_out_confirmation",
        KeywordKind.OPT_IN: "opt_in_confirmation",
        KeywordKind.HELP: "help",
    }[kind]
    template = (getattr(own, field) if own else "") or getattr(defaults, field)
    values = {
        "business_name": settings.business_name or tenant_id,
        "resubscribe_url": url,
        "opt_in_keyword": (opt_in or "").upper(),
        "opt_out_keyword": (opt_out or "").upper(),
        "topic": topic or "all",
    }
    return render(template, values)
