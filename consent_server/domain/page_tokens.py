"""Opaque page tokens, one format for every paged list.

A token is URL-safe base64 (unpadded) of ``<kind>:<value>``: the kind names the list it
belongs to (``v1`` history, ``t1`` tenants, ``dl1`` dead letters), so a token of one
list is refused by another, and callers cannot mistake it for something to construct.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from .validation import Violations

T = TypeVar("T")


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


def check_page(
    v: Violations,
    page_size: int,
    page_token: str,
    decode_token: Callable[[str], T],
    *,
    rpc: str,
    max_size: int,
    default_size: int,
) -> tuple[int, T | None]:
    """A paged request's size and token checked onto ``v``, the same way for every list:
    (the size to read, the decoded token; None when there is none or it is not ours)."""
    if not 0 <= page_size <= max_size:
        v.add("page_size", f"must be between 0 and {max_size} (0 = {default_size})")
    position = None
    if page_token:
        try:
            position = decode_token(page_token)
        except ValueError:
            v.add("page_token", f"is not a token returned by {rpc}")
    return page_size or default_size, position
