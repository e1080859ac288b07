"""Masking of addresses for logs and error messages (never log a full number or e-mail)."""

from __future__ import annotations

import re

_EMAIL_RE = re.compile(r"([A-Za-z0-9._%+\-]+)@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")
# A '+' followed by a digit run (spaces, dashes, brackets allowed), or a bare run of
# 8-15 digits (WhatsApp IDs). A number is a token of its own: a digit run that touches a
# letter or digit is part of an identifier (message ids are hex, ``m0a019...``; wamids
# are base64 and can hold ``+``), and masking it would corrupt the id in the log. Dots
# bound bare runs too, so IP addresses and dotted ids (``lk_<hex>.<hex>``) stay readable.
_ALNUM = "A-Za-z0-9"
_PHONE_RE = re.compile(
    rf"(?<![{_ALNUM}+])\+\d[\d ()\-]{{5,}}\d(?![{_ALNUM}])"
    rf"|(?<![{_ALNUM}.])\d{{8,15}}(?![{_ALNUM}.])"
)


# An API key ck_<id>_<secret>: the id may be shown, the secret never.
_KEY_RE = re.compile(r"\b(ck_[0-9a-f]{16}_)[A-Za-z0-9_-]{8,}")


def mask_phone(number: str) -> str:
    """``+919876543210`` -> ``+91987*****10``: country code and prefix stay, the rest is hidden."""
    if len(number) <= 6:
        return "*" * len(number)
    keep_head = min(6, len(number) - 4)
    return number[:keep_head] + "*" * (len(number) - keep_head - 2) + number[-2:]


def mask_email(address: str) -> str:
    """``jane@example.com`` -> ``j***@example.com``."""
    local, sep, domain = address.partition("@")
    if not sep:
        return mask_phone(address)
    return (local[:1] or "*") + "***@" + domain


def mask_address(address: str) -> str:
    """Mask a normalised address of any channel."""
    return mask_email(address) if "@" in address else mask_phone(address)


def mask_text(text: str) -> str:
    """Mask every API key secret, e-mail address and phone-number-like run inside free text."""
    text = _KEY_RE.sub(lambda m: m.group(1) + "****", text)
    text = _EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE_RE.sub(lambda m: mask_phone(re.sub(r"[ ()\-]", "", m.group(0))), text)
