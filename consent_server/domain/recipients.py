"""Recipient address normalisation: one spelling per real address.

Phone numbers become E.164 via ``phonenumbers``; we reject what is not a
*possible* number but never on *validity* metadata alone, so fictional 555-01xx
numbers work. The one use of validity: bare WhatsApp digits that are no valid
number as a WhatsApp ID but a valid national number of the tenant's region are
refused as ambiguous rather than guessed. E-mail is trimmed and lower-cased.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import (
    COUNTRY_CODE_TO_REGION_CODE,
    ValidationResult,
    _extract_country_code,
    _maybe_strip_national_prefix_carrier_code,
    _test_number_length,
)
from phonenumbers.re_util import re_compile

from .model import Channel

MAX_ADDRESS_LEN = 254

_PREFIXES = ("whatsapp:", "tel:", "sms:")
# Digits and the separators people type; anything else (letters, "ext") is refused
# rather than guessed at.
_PHONE_CHARS_RE = re.compile(r"[\s(]*\+?[\d\s\-.()/]+")
_SEPARATORS_RE = re.compile(r"[\s\-.()/]")
_WHATSAPP_ID_RE = re.compile(r"^\d{8,15}$")
# '+' and ASCII digits only: the one spelling whose parse can skip phonenumbers' text scan.
_PLUS_DIGITS_RE = re.compile(r"\+[1-9][0-9]{2,16}")
_LENGTH_KEPT = (
    ValidationResult.TOO_SHORT,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    ValidationResult.INVALID_LENGTH,
)
_POSSIBLE = (ValidationResult.IS_POSSIBLE, ValidationResult.IS_POSSIBLE_LOCAL_ONLY)
_EMAIL_LOCAL_FORBIDDEN = set(' "(),:;<>[\\]@')
_DOMAIN_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class AddressError(ValueError):
    """The address cannot be normalised; the message says why, for a person."""


def is_valid_region(region: str) -> bool:
    """True for a region code ``phonenumbers`` knows (``IN``, ``US``...)."""
    return region in phonenumbers.SUPPORTED_REGIONS


# phonenumbers.parse costs ~50 us; senders ask about the same recipients again and
# again (check, then send; daily campaigns), and the function is pure, so a bounded
# cache is safe. Refusals are not cached (lru_cache does not cache exceptions).
@lru_cache(maxsize=100_000)
def normalise_address(channel: Channel, raw: str, default_region: str | None) -> str:
    """Return the normalised form of ``raw`` on ``channel`` or raise AddressError."""
    if not raw or not raw.strip():
        raise AddressError("must not be empty")
    if len(raw) > MAX_ADDRESS_LEN:
        raise AddressError(f"must be at most {MAX_ADDRESS_LEN} characters")
    if channel is Channel.EMAIL:
        return normalise_email(raw)
    return normalise_phone(raw, default_region, whatsapp=channel is Channel.WHATSAPP)


# normalise_address without its cache, for addresses seen once (an import's): each
# would only miss the cache and evict an address that is asked about again.
normalise_uncached = normalise_address.__wrapped__


def normalise_phone(raw: str, default_region: str | None, *, whatsapp: bool = False) -> str:
    """E.164 for a phone number typed in any of the accepted spellings."""
    fast = exact_e164(raw)  # already E.164-shaped: the common case of a file
    if fast is not None:
        return fast
    text = raw.strip()
    lowered = text.lower()
    for prefix in _PREFIXES:
        if lowered.startswith(prefix):
            text = text[len(prefix) :].strip()
            break
    if not text:
        raise AddressError("has a prefix but no number")
    if not _PHONE_CHARS_RE.fullmatch(text):
        raise AddressError(
            "may contain only digits, spaces, dashes, dots, brackets and a leading '+'"
        )
    compact = _SEPARATORS_RE.sub("", text)  # "(+91) 98765.43210" -> "+919876543210"
    if "+" in compact[1:]:
        raise AddressError("may contain '+' only before the country code")
    if whatsapp and compact == text and _WHATSAPP_ID_RE.fullmatch(compact):
        # A WhatsApp ID as webhooks deliver it: E.164 without the '+'. Unless that reading
        # is no valid number while the national reading is: then the caller most likely
        # typed a national number, and guessing would address another country's
        # subscriber (9876543210 -> +98 76543210, Iran), so refuse and name both.
        _refuse_ambiguous_wa_id(compact, default_region)
        compact = "+" + compact
    fast = plus_digits_e164(compact)
    if fast is not None:
        return fast
    region = None if compact.startswith("+") else default_region
    if region is None and not compact.startswith("+"):
        raise AddressError(
            "has no country code and the tenant has no default region; "
            "use E.164: '+', country code, number"
        )
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException as exc:
        raise AddressError(f"is not a phone number ({_parse_error(exc)})") from None
    if not phonenumbers.is_possible_number(number):
        raise AddressError("is not a possible phone number (wrong length or country code)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def plus_digits_e164(compact: str) -> str | None:
    """What ``phonenumbers.parse(compact, None)``, ``is_possible_number`` and E.164
    formatting give for '+' and ASCII digits, or None: another spelling, or anything
    the full parse must decide (it then raises its own error).

    The steps are parse's own for that input, minus its generic text scanning
    (extensions, RFC 3966, IDD prefixes, Unicode digits), which cannot apply to it:
    ~3 us instead of ~13 us, per record of a bulk import of distinct numbers.
    tests/test_domain_recipients.py checks that it agrees with phonenumbers."""
    if not _PLUS_DIGITS_RE.fullmatch(compact):
        return None
    country_code, national = _extract_country_code(compact[1:])
    if country_code == 0:
        return None
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        country_code, phonenumbers.region_code_for_country_code(country_code)
    )
    if metadata is None or len(national) < 2:
        return None
    _, stripped, _ = _maybe_strip_national_prefix_carrier_code(national, metadata)
    if _test_number_length(stripped, metadata) not in _LENGTH_KEPT:
        national = stripped
    if not 2 <= len(national) <= 17:
        return None
    # parse keeps these digits as the national significant number (leading zeros
    # included), so E.164 is '+', the code and them; is_possible_number is this test.
    if _test_number_length(national, metadata) not in _POSSIBLE:
        return None
    return f"+{country_code}{national}"


class _Code:
    """What exact_e164 needs of one country calling code, looked up once."""

    __slots__ = ("metadata", "possible", "prefix")

    def __init__(self, code: int) -> None:
        self.metadata = PhoneMetadata.metadata_for_region_or_calling_code(
            code, phonenumbers.region_code_for_country_code(code)
        )
        pattern = self.metadata.national_prefix_for_parsing if self.metadata else None
        # The national prefix stripping's regex, as phonenumbers compiles it.
        self.prefix = re_compile(pattern) if pattern else None
        # national number length -> is_possible_number's verdict (it tests length only)
        self.possible: dict[int, bool] = {}


# Leading digits ("1", "44", "880"...) -> their code's data, or None: not a code.
_CODES: dict[str, _Code | None] = {}


def exact_e164(compact: str) -> str | None:
    """plus_digits_e164 in ~1 us for '+' and ASCII digits: the same answer, always.

    Where the national number does not start with the code's national prefix (the
    common case), phonenumbers strips nothing and the answer depends only on the code
    and the national number's length: the input itself when that length is possible,
    else None. That verdict is cached per (code, length); any number whose start the
    national-prefix rule matches goes to plus_digits_e164. tests/test_domain_recipients.py
    checks that both agree (hypothesis)."""
    if not _PLUS_DIGITS_RE.fullmatch(compact):
        return None
    digits = compact[1:]
    for width in (1, 2, 3):
        lead = digits[:width]
        if lead not in _CODES:
            code = int(lead)
            _CODES[lead] = _Code(code) if code in COUNTRY_CODE_TO_REGION_CODE else None
        info = _CODES[lead]
        if info is None:
            continue
        national = digits[width:]
        if (
            info.metadata is None
            or len(national) < 2
            or (info.prefix is not None and info.prefix.match(national))
        ):
            return plus_digits_e164(compact)
        verdict = info.possible.get(len(national))
        if verdict is None:
            verdict = 2 <= len(national) <= 17 and (
                _test_number_length(national, info.metadata) in _POSSIBLE
            )
            info.possible[len(national)] = verdict
        return compact if verdict else None
    return None  # no country code: phonenumbers must say why


def _refuse_ambiguous_wa_id(digits: str, default_region: str | None) -> None:
    """AddressError when bare digits are valid only as a national number of the region."""
    if not default_region:
        return
    try:
        as_wa_id = phonenumbers.parse("+" + digits, None)
        if phonenumbers.is_valid_number(as_wa_id):
            return
    except phonenumbers.NumberParseException:
        pass
    try:
        national = phonenumbers.parse(digits, default_region)
    except phonenumbers.NumberParseException:
        return
    if not phonenumbers.is_valid_number(national):
        return
    e164 = phonenumbers.format_number(national, phonenumbers.PhoneNumberFormat.E164)
    raise AddressError(
        f"is ambiguous on WhatsApp: bare digits are a WhatsApp ID (+{digits}, which is no "
        f"valid number), but read in the tenant's region {default_region} they are {e164}; "
        f"write it with '+' and the country code (e.g. '{e164}')"
    )


def _parse_error(exc: phonenumbers.NumberParseException) -> str:
    names = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "not a number",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return names.get(exc.error_type, "unparseable")


def normalise_email(raw: str) -> str:
    """Trimmed, lower-cased ``local@domain`` with a dot in the domain."""
    text = raw.strip().lower()
    if len(text) > MAX_ADDRESS_LEN:
        raise AddressError(f"must be at most {MAX_ADDRESS_LEN} characters")
    local, sep, domain = text.rpartition("@")
    if not sep or not local or not domain:
        raise AddressError("must look like local@domain")
    if len(local) > 64:
        raise AddressError("local part must be at most 64 characters")
    if any(ch in _EMAIL_LOCAL_FORBIDDEN or ord(ch) < 0x21 or ord(ch) == 0x7F for ch in local):
        raise AddressError("local part has a character not allowed in an e-mail address")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError("local part must not start or end with a dot or repeat dots")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError("domain is not a valid host name") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise AddressError("domain must contain a dot")
    if not all(_DOMAIN_LABEL_RE.fullmatch(label) for label in labels):
        raise AddressError("domain is not a valid host name")
    return f"{local}@{ascii_domain}"
