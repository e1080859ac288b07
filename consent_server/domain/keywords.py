"""Inbound keyword matching: pure functions, no I/O.

A reply is normalised (Unicode NFKC, case-fold, surrounding punctuation and emoji
stripped, whitespace collapsed) and looked up in the tenant's keyword sets:

- a whole-message match acts (opt-out, opt-in or help);
- failing that, an opt-out keyword standing as whole words inside a longer message
  ("please stop texting me") opts out when ``infer_opt_out_in_sentences`` is on:
  ambiguity resolves toward not messaging. Words are whitespace-separated tokens, so
  "stopwatch" and "non-stop" contain no "stop";
- an opt-in or help keyword is never inferred from a longer message.

A button tap is matched by its payload (the button's id) against the tenant's button
payloads: only a configured payload acts. The button's title is a label the business
wrote for something else (Meta's sample appointment template has a "Cancel" button),
so an unknown payload's title acts only when the tenant turned on
``match_button_titles``, only as a whole-title match, and never for all topics: an
opt-out or opt-in of everything needs a configured payload.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from .model import DEFAULT_LANGUAGE, ButtonPayload, KeywordKind, KeywordSet, TenantSettings

# Marks that belong to emoji, not to letters: variation selectors, the enclosing
# keycap and circle. Other combining marks (Devanagari vowel signs...) are letters' parts.
_EMOJI_MARKS = frozenset(
    [chr(c) for c in range(0xFE00, 0xFE10)]
    + [chr(c) for c in range(0xE0100, 0xE01F0)]
    + ["\u20dd", "\u20de", "\u20df", "\u20e0", "\u20e2", "\u20e3", "\u20e4"]
)


def _is_junk(ch: str) -> bool:
    """True for what surrounds a keyword without being part of it: punctuation,
    symbols (emoji), format characters (ZWJ), spaces and emoji modifiers."""
    if ch in _EMOJI_MARKS:
        return True
    return unicodedata.category(ch)[0] not in "LNM"


def _strip_junk(text: str) -> str:
    start, end = 0, len(text)
    # A combining mark cannot start a word: one left at the front (say, after an
    # emoji) belongs to what was stripped, so it goes too.
    while start < end and (_is_junk(text[start]) or unicodedata.category(text[start])[0] == "M"):
        start += 1
    while end > start and _is_junk(text[end - 1]):
        end -= 1
    return text[start:end]


def normalise(text: str) -> str:
    """The matching form of a reply or keyword: NFKC, case-folded, trimmed of
    surrounding punctuation/emoji/whitespace, inner whitespace collapsed to one space.
    Fullwidth "STOP!!" followed by a stop-sign emoji becomes "stop"."""
    # Case folding can leave a string that is no longer NFKC ("ǰ"), hence twice.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _strip_junk(" ".join(folded.split()))


def words(normalised: str) -> tuple[str, ...]:
    """The whitespace-separated words of a normalised text, each stripped of its own
    surrounding punctuation ("me." -> "me"); inner punctuation stays ("non-stop")."""
    out = []
    for token in normalised.split(" "):
        word = _strip_junk(token)
        if word:
            out.append(word)
    return tuple(out)


def loose(normalised: str) -> str:
    """The text with every inner run of punctuation/symbols read as one space, so
    "opt-out" and "opt_out" spell the keyword "opt out" (used for whole messages only)."""
    spaced = "".join(" " if _is_junk(ch) else ch for ch in normalised)
    return " ".join(spaced.split())


@dataclass(frozen=True, slots=True)
class Match:
    """What an inbound message matched."""

    kind: KeywordKind
    keyword: str  # the normalised keyword or button payload
    topic: str  # "" = all topics
    language: str
    button: bool  # matched a button payload (else a keyword)
    inferred: bool = False  # an opt-out keyword found inside a longer message


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: KeywordKind
    topic: str
    language: str


class KeywordMatcher:
    """The keyword and button tables of one tenant, ready to match inbound messages.

    Building it is cheap (a few dicts); keywords are expected unique across sets
    (settings validation ensures it; on a clash the first set wins)."""

    def __init__(
        self,
        keyword_sets: Iterable[KeywordSet],
        buttons: Iterable[ButtonPayload],
        *,
        default_language: str = DEFAULT_LANGUAGE,
        infer_opt_out_in_sentences: bool = True,
    ) -> None:
        self._keywords: dict[str, _Entry] = {}
        # Opt-out keywords as word tuples, by first word, for the in-sentence search.
        self._opt_out_words: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for kset in keyword_sets:
            for raw in kset.keywords:
                key = normalise(raw)
                if not key or key in self._keywords:
                    continue
                self._keywords[key] = _Entry(kset.kind, kset.topic, kset.language)
                if kset.kind is KeywordKind.OPT_OUT:
                    seq = words(key)
                    self._opt_out_words.setdefault(seq[0], []).append((seq, key))
        for candidates in self._opt_out_words.values():
            candidates.sort(key=lambda c: -len(c[0]))  # longest (most specific) first
        self._buttons: dict[str, _Entry] = {}
        for button in buttons:
            key = normalise(button.payload)
            if key and key not in self._buttons:
                self._buttons[key] = _Entry(
                    button.kind, button.topic, button.language or default_language
                )
        self._infer = infer_opt_out_in_sentences

    def match_button(self, payload: str) -> Match | None:
        """The configured button payload ``payload`` names, if any."""
        key = normalise(payload)
        entry = self._buttons.get(key)
        if entry is None:
            return None
        return Match(entry.kind, key, entry.topic, entry.language, button=True)

    def match_text(self, text: str) -> Match | None:
        """The keyword a reply matches: whole message first, then (opt-out only,
        when enabled) a keyword standing as whole words inside the message."""
        norm = normalise(text)
        if not norm:
            return None
        for candidate in (norm, loose(norm)):
            entry = self._keywords.get(candidate)
            if entry is not None:
                return Match(entry.kind, candidate, entry.topic, entry.language, button=False)
        if not self._infer:
            return None
        found = self._find_opt_out_words(words(norm))
        if found is None:
            return None
        entry = self._keywords[found]
        return Match(entry.kind, found, entry.topic, entry.language, button=False, inferred=True)

    def _find_opt_out_words(self, seq: tuple[str, ...]) -> str | None:
        # The longest keyword wins ("stop promotions" over "stop"), then the earliest.
        best: tuple[int, str] | None = None
        for i, word in enumerate(seq):
            for kw_words, key in self._opt_out_words.get(word, ()):
                if seq[i : i + len(kw_words)] == kw_words:
                    if best is None or len(kw_words) > best[0]:
                        best = (len(kw_words), key)
                    break
        return best[1] if best else None

    def match_title(self, title: str) -> Match | None:
        """What an unconfigured button's title may do: a whole-title keyword that is
        help or names a topic; never an opt-out or opt-in of all topics."""
        norm = normalise(title)
        for candidate in (norm, loose(norm)) if norm else ():
            entry = self._keywords.get(candidate)
            if entry is not None and (entry.kind is KeywordKind.HELP or entry.topic):
                return Match(entry.kind, candidate, entry.topic, entry.language, button=False)
        return None

    def match(
        self,
        text: str,
        button_payload: str,
        *,
        match_button_titles: bool = False,
        tapped: bool = False,
    ) -> Match | None:
        """A tap (``button_payload`` set or ``tapped``, ``text`` its title) acts by a
        configured payload, or by its title when ``match_button_titles`` (see the module
        doc); a reply that is no tap is matched as text."""
        if not button_payload and not tapped:
            return self.match_text(text)
        found = self.match_button(button_payload) if button_payload else None
        if found is None and match_button_titles:
            found = self.match_title(text)
        return found


@functools.lru_cache(maxsize=1024)
def matcher_for(
    keyword_sets: tuple[KeywordSet, ...],
    buttons: tuple[ButtonPayload, ...],
    default_language: str,
    infer_opt_out_in_sentences: bool,
) -> KeywordMatcher:
    """A (shared, read-only) matcher for these tables: tenants' settings change rarely,
    so the tables are built once, not on every inbound message."""
    return KeywordMatcher(
        keyword_sets,
        buttons,
        default_language=default_language,
        infer_opt_out_in_sentences=infer_opt_out_in_sentences,
    )


def match_inbound(
    settings: TenantSettings, text: str, button_payload: str, *, tapped: bool = False
) -> Match | None:
    """What an inbound reply or button tap does under a tenant's settings (None: nothing).

    The one place HandleInboundMessage and the WhatsApp webhook decide it; ``tapped``
    says a button was tapped even though it carried no payload."""
    matcher = matcher_for(
        settings.keyword_sets,
        settings.button_payloads,
        settings.default_language,
        settings.infer_opt_out_in_sentences,
    )
    return matcher.match(
        text, button_payload, match_button_titles=settings.match_button_titles, tapped=tapped
    )
