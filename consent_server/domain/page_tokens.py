"""Opaque page tokens, one format for every paged list.

A token is URL-safe base64 (unpadded) of ``<kind>:<value>``: the kind names the list it
belongs to (``v1`` history, ``t1`` tenants, ``dl1`` dead letters), so a token of one
list is refused by another, and callers cannot mistake it for something to construct.
"""

from __future__ import annotations

import base64
import binascii


def encode(kind: str, value: str) -> str:
    """The token continuing list ``kind`` at ``value``."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode(kind: str, token: str) -> str:
    """The value of a token of list ``kind``; ValueError when it is not one."""
    try:
        padded = token + "=" * (-len(token) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a page token") from None
    prefix, sep, value = text.partition(":")
    if prefix != kind or not sep:
        raise ValueError("not a page token")
    return value


def decode_number(kind: str, token: str, max_digits: int) -> int:
    """A token of list ``kind`` whose value is a whole number of at most ``max_digits``."""
    value = decode(kind, token)
    if not value.isdigit() or len(value) > max_digits:
        raise ValueError("not a page token")
    return int(value)
