"""Tenant settings: field-mask merging and validation (ConsentAdminService).

Every violation names its field as the request spells it, under ``settings.``
(``settings.keyword_sets[2].keywords[0]``, ``settings.templates[0].opt_out_confirmation``).
Keywords and button payloads are stored normalised, so what GetTenantSettings shows
is exactly what inbound messages are matched against.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from . import page_messages
from . import validation as val
from .keywords import normalise
from .model import (
    ButtonPayload,
    KeywordKind,
    KeywordSet,
    LanguageTemplates,
    TenantSettings,
)
from .recipients import is_valid_region
from .templates import MAX_TEMPLATE_CHARS, TemplateError, placeholders, promised_keywords
from .validation import Violations

# The fields a FieldMask may name (the proto field names of consent.v1.TenantSettings).
UPDATABLE = (
    "business_name",
    "default_region",
    "default_policy",
    "topic_policies",
    "default_language",
    "keyword_sets",
    "button_payloads",
    "templates",
    "infer_opt_out_in_sentences",
    "resubscribe_url",
    "match_button_titles",
    "page_languages",
)
MAX_BUSINESS_NAME = 128
MAX_KEYWORD_CHARS = 64
MAX_KEYWORDS = 500
MAX_KEYWORD_SETS = 100
MAX_BUTTONS = 100
MAX_PAYLOAD_CHARS = 256
MAX_TEMPLATE_LANGUAGES = 50
MAX_TOPIC_POLICIES = 1000
MAX_URL_CHARS = 2048
MAX_PAGE_LANGUAGES = 20
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8}){0,3}$")


def merge(current: TenantSettings, patch: TenantSettings, paths: Sequence[str]) -> TenantSettings:
    """``current`` with the fields named by ``paths`` ("*" = all) taken from ``patch``."""
    names = UPDATABLE if "*" in paths else tuple(dict.fromkeys(paths))
    return dataclasses.replace(current, **{n: getattr(patch, n) for n in names})


def check_paths(v: Violations, paths: Sequence[str]) -> None:
    """The update mask must name at least one known field."""
    if not paths:
        v.add("update_mask", "must name the fields to change, e.g. 'business_name' (or '*')")
    for i, path in enumerate(paths):
        if path != "*" and path not in UPDATABLE:
            v.add(f"update_mask.paths[{i}]", f"is not a settings field; one of {UPDATABLE}")


def _language(v: Violations, value: str, field: str, *, allow_empty: bool = False) -> str:
    lowered = value.lower()
    if allow_empty and not lowered:
        return ""
    if not LANGUAGE_RE.fullmatch(lowered):
        v.add(field, "must be a language tag such as 'en', 'es' or 'pt-br'")
    return lowered


def _plain_text(v: Violations, value: str, field: str, limit: int) -> str:
    val.free_text(v, value, field, max_chars=limit)
    return value


def _keyword_sets(v: Violations, sets: Sequence[KeywordSet]) -> tuple[KeywordSet, ...]:
    if len(sets) > MAX_KEYWORD_SETS:
        v.add("settings.keyword_sets", f"must have at most {MAX_KEYWORD_SETS} sets")
        return tuple(sets)
    seen: dict[str, str] = {}
    total = 0
    out = []
    for i, kset in enumerate(sets):
        path = f"settings.keyword_sets[{i}]"
        lang = _language(v, kset.language, f"{path}.language")
        topic = val.topic(v, kset.topic, field=f"{path}.topic")
        if kset.kind is KeywordKind.HELP and kset.topic:
            v.add(f"{path}.topic", "must be empty for HELP keywords (help changes nothing)")
        if not kset.keywords:
            v.add(f"{path}.keywords", "must list at least one keyword")
        words = []
        for j, raw in enumerate(kset.keywords):
            kpath = f"{path}.keywords[{j}]"
            total += 1
            key = normalise(raw)
            if val.has_control(raw):
                v.add(kpath, "must not contain control characters or escape sequences")
            elif not key:
                v.add(kpath, "is empty once punctuation, emoji and spaces are stripped")
            elif len(key) > MAX_KEYWORD_CHARS:
                v.add(kpath, f"must be at most {MAX_KEYWORD_CHARS} characters")
            elif key in seen:
                v.add(kpath, f"'{key}' is already {seen[key]}: keywords are unique across sets")
            else:
                seen[key] = kpath
                words.append(key)
        out.append(KeywordSet(lang, kset.kind, tuple(words), topic))
    if total > MAX_KEYWORDS:
        v.add("settings.keyword_sets", f"must hold at most {MAX_KEYWORDS} keywords in all")
    return tuple(out)


def _buttons(v: Violations, buttons: Sequence[ButtonPayload]) -> tuple[ButtonPayload, ...]:
    if len(buttons) > MAX_BUTTONS:
        v.add("settings.button_payloads", f"must have at most {MAX_BUTTONS} entries")
        return tuple(buttons)
    seen: dict[str, str] = {}
    out = []
    for i, b in enumerate(buttons):
        path = f"settings.button_payloads[{i}]"
        key = normalise(b.payload)
        if val.has_control(b.payload):
            v.add(f"{path}.payload", "must not contain control characters or escape sequences")
        elif not key:
            v.add(f"{path}.payload", "is required")
        elif len(b.payload) > MAX_PAYLOAD_CHARS:
            v.add(f"{path}.payload", f"must be at most {MAX_PAYLOAD_CHARS} characters")
        elif key in seen:
            v.add(f"{path}.payload", f"is already {seen[key]} (payloads match case-insensitively)")
        else:
            seen[key] = f"{path}.payload"
        topic = val.topic(v, b.topic, field=f"{path}.topic")
        if b.kind is KeywordKind.HELP and b.topic:
            v.add(f"{path}.topic", "must be empty for HELP buttons (help changes nothing)")
        lang = _language(v, b.language, f"{path}.language", allow_empty=True)
        out.append(ButtonPayload(b.payload.strip(), b.kind, topic, lang))
    return tuple(out)


_TEMPLATE_FIELDS = (
    # field, the keyword kinds its promises may name, what those are for
    ("opt_out_confirmation", (KeywordKind.OPT_IN, KeywordKind.HELP), "opt-in or help"),
    ("opt_in_confirmation", (KeywordKind.OPT_OUT, KeywordKind.HELP), "opt-out or help"),
    ("help", (KeywordKind.OPT_OUT, KeywordKind.OPT_IN, KeywordKind.HELP), "configured"),
)


def _templates(
    v: Violations,
    templates: Sequence[LanguageTemplates],
    keyword_sets: Sequence[KeywordSet],
    resubscribe_url: str,
) -> tuple[LanguageTemplates, ...]:
    if len(templates) > MAX_TEMPLATE_LANGUAGES:
        v.add("settings.templates", f"must have at most {MAX_TEMPLATE_LANGUAGES} languages")
        return tuple(templates)
    kinds: dict[str, KeywordKind] = {}
    for kset in keyword_sets:
        for key in kset.keywords:
            kinds.setdefault(key, kset.kind)
    has = {kind: any(k is kind for k in kinds.values()) for kind in KeywordKind}
    langs: dict[str, int] = {}
    out = []
    for i, t in enumerate(templates):
        path = f"settings.templates[{i}]"
        lang = _language(v, t.language, f"{path}.language")
        if lang in langs:
            v.add(f"{path}.language", f"is already settings.templates[{langs[lang]}].language")
        langs.setdefault(lang, i)
        for name, allowed, what in _TEMPLATE_FIELDS:
            text: str = getattr(t, name)
            fpath = f"{path}.{name}"
            if not text:
                continue  # the built-in default text
            if len(text) > MAX_TEMPLATE_CHARS or val.has_control(text, multiline=True):
                v.add(fpath, f"must be 1-{MAX_TEMPLATE_CHARS} characters without control codes")
                continue
            try:
                used = placeholders(text)
            except TemplateError as exc:
                v.add(fpath, str(exc))
                continue
            if "resubscribe_url" in used and not resubscribe_url:
                v.add(fpath, "uses {resubscribe_url} but no settings.resubscribe_url is set")
            if "opt_in_keyword" in used and not has[KeywordKind.OPT_IN]:
                v.add(fpath, "uses {opt_in_keyword} but no opt-in keyword is configured")
            if "opt_out_keyword" in used and not has[KeywordKind.OPT_OUT]:
                v.add(fpath, "uses {opt_out_keyword} but no opt-out keyword is configured")
            for promised in promised_keywords(text):
                if kinds.get(promised) not in allowed:
                    v.add(
                        fpath,
                        f"tells the customer to reply '{promised.upper()}', which is no "
                        f"{what} keyword of this tenant; configure it in "
                        "settings.keyword_sets or change the text",
                    )
        out.append(dataclasses.replace(t, language=lang))
    return tuple(out)


def _page_languages(v: Violations, tags: Sequence[str]) -> tuple[str, ...]:
    if len(tags) > MAX_PAGE_LANGUAGES:
        v.add("settings.page_languages", f"must list at most {MAX_PAGE_LANGUAGES} languages")
        return ()
    out: list[str] = []
    for i, tag in enumerate(tags):
        field = f"settings.page_languages[{i}]"
        lang = _language(v, tag, field)
        if LANGUAGE_RE.fullmatch(lang) and not page_messages.covered(lang):
            v.add(
                field,
                "has no page translation; the pages speak "
                + ", ".join(sorted(page_messages.CATALOGUE))
                + " (a regional tag such as 'pt-br' uses its language's words)",
            )
        elif lang in out:
            v.add(field, "is listed twice")
        out.append(lang)
    return tuple(out)


def _url(v: Violations, value: str) -> str:
    if not value:
        return ""
    parts = urlsplit(value)
    if (
        len(value) > MAX_URL_CHARS
        or parts.scheme not in ("https", "http")
        or not parts.netloc
        or any(ch.isspace() for ch in value)
        or val.has_control(value)
    ):
        v.add("settings.resubscribe_url", "must be an absolute http(s) URL without spaces")
    return value


def validate(v: Violations, s: TenantSettings) -> TenantSettings:
    """The settings with keywords normalised and languages lower-cased; every problem
    is added to ``v`` (the caller raises)."""
    business = _plain_text(v, s.business_name.strip(), "settings.business_name", MAX_BUSINESS_NAME)
    region = (s.default_region or "").upper()
    if region and not is_valid_region(region):
        v.add("settings.default_region", "must be a region code such as 'IN' or 'US'")
    if len(s.topic_policies) > MAX_TOPIC_POLICIES:
        v.add("settings.topic_policies", f"must have at most {MAX_TOPIC_POLICIES} entries")
    policies = {}
    for topic, policy in s.topic_policies.items():
        name = val.topic(v, topic, field=f"settings.topic_policies[{topic[:64]!r}]")
        if not topic:
            v.add("settings.topic_policies['']", "must name a topic (default_policy is all)")
        elif name:
            policies[name] = policy
    language = _language(v, s.default_language, "settings.default_language")
    url = _url(v, s.resubscribe_url.strip())
    keyword_sets = _keyword_sets(v, s.keyword_sets)
    buttons = _buttons(v, s.button_payloads)
    templates = _templates(v, s.templates, keyword_sets, url)
    page_languages = _page_languages(v, s.page_languages)
    return dataclasses.replace(
        s,
        business_name=business,
        default_region=region or None,
        topic_policies=policies,
        default_language=language,
        resubscribe_url=url,
        keyword_sets=keyword_sets,
        button_payloads=buttons,
        templates=templates,
        page_languages=page_languages,
    )
