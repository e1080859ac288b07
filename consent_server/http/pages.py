"""The small HTML pages of consent links: confirm, done, and error.

Self-contained (inline CSS, no scripts, no external resources) so they render the
same in every mail client's browser and pass a strict Content-Security-Policy.
"""

from __future__ import annotations

from html import escape

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

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f5f7;
margin:0;color:#1d2330}
main{max-width:28rem;margin:12vh auto;background:#fff;border-radius:12px;padding:2rem;
box-shadow:0 2px 12px rgba(0,0,0,.08)}
h1{font-size:1.35rem;margin:0 0 1rem}
p{line-height:1.5}
button{font-size:1rem;padding:.7rem 1.4rem;border:0;border-radius:8px;background:#1f6feb;
color:#fff;cursor:pointer}
button.out{background:#c9372c}
.muted{color:#667085;font-size:.875rem}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _scope(claims: LinkClaims) -> str:
    topic = f"“{escape(claims.topic)}” messages" if claims.topic else "all messages"
    channel = claims.recipient.channel.name.lower()
    who = escape(mask_address(claims.recipient.address))
    return f"{topic} from <b>{escape(claims.tenant_id)}</b> to {who} by {channel}"


def confirm_page(claims: LinkClaims, nonce: str) -> str:
    """The GET page: says what will happen, and a button that POSTs it."""
    if claims.action is Action.OPT_OUT:
        title, verb, cls = "Unsubscribe", "Unsubscribe", "out"
        text = f"Stop receiving {_scope(claims)}?"
    else:
        title, verb, cls = "Subscribe again", "Subscribe", "in"
        text = f"Receive {_scope(claims)} again?"
    return _page(
        title,
        f"<h1>{title}</h1><p>{text}</p>"
        f'<form method=post><input type=hidden name=nonce value="{escape(nonce)}">'
        f"<button class={cls} type=submit id=confirm>{verb}</button></form>"
        "<p class=muted>Nothing changes until you press the button.</p>",
    )


def done_page(claims: LinkClaims, changed: bool) -> str:
    """The POST result page."""
    if claims.action is Action.OPT_OUT:
        title = "You are unsubscribed"
        text = f"You will no longer receive {_scope(claims)}."
        if not changed:
            text = f"You were already unsubscribed from {_scope(claims)}."
    else:
        title = "You are subscribed"
        text = f"You will receive {_scope(claims)} again."
        if not changed:
            text = f"You were already subscribed to {_scope(claims)}."
    return _page(title, f"<h1>{title}</h1><p>{text}</p>")


def error_page(title: str, message: str) -> str:
    """A clear error page (bad or expired link, service unavailable)."""
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")
