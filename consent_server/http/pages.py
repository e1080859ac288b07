"""The small HTML pages of consent links: confirm, done, and error.

Self-contained (inline CSS, no scripts, no external resources) so they render the
same in every mail client's browser and pass a strict Content-Security-Policy.
Localised through domain.page_messages (the caller picks the language); every value
that comes from a tenant or a token (business name, topic, address) is HTML-escaped.
Accessible: one ``<h1>``, the action is a real ``<button>`` in a ``<form>`` (keyboard
and screen readers), a visible focus ring, text contrast of at least 4.5:1 (the
colours are in PALETTE, which tests/test_pages.py measures).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from consent_server.domain import page_messages as pm
from consent_server.domain.links import LinkClaims
from consent_server.domain.masking import mask_address
from consent_server.domain.model import Action

# No scripts, nothing external, forms only back to us; the token in the URL must
# not leak through Referer; link pages are never cached or indexed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}

# Every text colour on the background it is drawn on (WCAG AA needs 4.5:1).
PALETTE = {
    "page": "#f4f5f7",
    "card": "#ffffff",
    "text": "#1d2330",
    "muted": "#5d6778",
    "button_in": "#1a5fd0",
    "button_out": "#b42318",
    "button_text": "#ffffff",
    "focus": "#1d2330",
}
# (foreground, background) pairs that carry text.
TEXT_PAIRS = (
    ("text", "card"),
    ("muted", "card"),
    ("text", "page"),
    ("button_text", "button_in"),
    ("button_text", "button_out"),
)

_C = PALETTE
_STYLE = (
    'body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;'
    f"background:{_C['page']};margin:0;color:{_C['text']}}}"
    f"main{{max-width:28rem;margin:12vh auto;background:{_C['card']};border-radius:12px;"
    "padding:2rem;box-shadow:0 2px 12px rgba(0,0,0,.08)}"
    "h1{font-size:1.35rem;margin:0 0 1rem}"
    "p{line-height:1.5}"
    "button{font-size:1rem;padding:.7rem 1.4rem;border:0;border-radius:8px;"
    f"background:{_C['button_in']};color:{_C['button_text']};cursor:pointer}}"
    f"button.out{{background:{_C['button_out']}}}"
    f"button:focus{{outline:3px solid {_C['focus']};outline-offset:3px}}"
    f"button:focus-visible{{outline:3px solid {_C['focus']};outline-offset:3px}}"
    f".muted{{color:{_C['muted']};font-size:.875rem}}"
    "@media (prefers-reduced-motion:reduce){*{transition:none!important}}"
)


@dataclass(frozen=True, slots=True)
class PageContext:
    """Who the page speaks for and in which language.

    ``lang`` is a validated tag (domain.page_messages.negotiate's result), ``business``
    the tenant's business name (escaped here, never trusted)."""

    lang: str = pm.FALLBACK
    business: str = ""

    def t(self, key: str, **values: str) -> str:
        """The catalogue text ``key``, placeholders filled with already-safe HTML."""
        return pm.messages(self.lang)[key].format(**values)


def _page(ctx: PageContext, title: str, body: str) -> str:
    # ctx.lang is a validated tag (letters, digits, hyphens); escaped all the same.
    return (
        f'<!doctype html><html lang="{escape(pm.html_tag(ctx.lang))}"><head>'
        "<meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _scope(ctx: PageContext, claims: LinkClaims) -> dict[str, str]:
    what = ctx.t("what_topic", topic=escape(claims.topic)) if claims.topic else ctx.t("what_all")
    return {
        "what": what,
        "business": f"<b>{escape(ctx.business or claims.tenant_id)}</b>",
        "who": escape(mask_address(claims.recipient.address)),
        "channel": escape(ctx.t(f"channel_{claims.recipient.channel.value}")),
    }


def confirm_page(claims: LinkClaims, nonce: str, ctx: PageContext | None = None) -> str:
    """The GET page: says what will happen, and a button that POSTs it."""
    ctx = ctx or PageContext()
    scope = _scope(ctx, claims)
    if claims.action is Action.OPT_OUT:
        title, verb, cls = ctx.t("title_opt_out"), ctx.t("button_opt_out"), "out"
        text = ctx.t("ask_opt_out", **scope)
    else:
        title, verb, cls = ctx.t("title_opt_in"), ctx.t("button_opt_in"), "in"
        text = ctx.t("ask_opt_in", **scope)
    return _page(
        ctx,
        title,
        f"<h1 id=title>{escape(title)}</h1><p id=question>{text}</p>"
        # The form is named by the heading and described by the question, so a screen
        # reader announces what the button does.
        '<form method=post aria-labelledby="title" aria-describedby="question">'
        f'<input type=hidden name=nonce value="{escape(nonce)}">'
        f"<button class={cls} type=submit id=confirm>{escape(verb)}</button></form>"
        f"<p class=muted>{escape(ctx.t('nothing_changes'))}</p>",
    )


def done_page(claims: LinkClaims, changed: bool, ctx: PageContext | None = None) -> str:
    """The POST result page."""
    ctx = ctx or PageContext()
    scope = _scope(ctx, claims)
    if claims.action is Action.OPT_OUT:
        title = ctx.t("done_opt_out_title")
        text = ctx.t("done_opt_out" if changed else "already_opt_out", **scope)
    else:
        title = ctx.t("done_opt_in_title")
        text = ctx.t("done_opt_in" if changed else "already_opt_in", **scope)
    return _page(ctx, title, f"<h1>{escape(title)}</h1><p role=status>{text}</p>")


def error_page(title: str, message: str, ctx: PageContext | None = None) -> str:
    """A clear error page (bad or expired link, service unavailable)."""
    ctx = ctx or PageContext()
    return _page(ctx, title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")


def catalogue_error(ctx: PageContext, name: str, **values: str) -> str:
    """The error page ``name`` ("expired", "invalid", "gone", ...) from the catalogue."""
    return error_page(ctx.t(f"{name}_title"), ctx.t(f"{name}_text", **values), ctx)
