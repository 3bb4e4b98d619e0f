"""Phone numbers as the PBX writes them -> E.164, an internal extension, or None (withheld).

Polish exports write the same number many ways: ``0611002030`` (a leading 0 on ten
digits, as dialled from old habits), ``0048 61 100 20 30``, ``48611002030``,
``+48 61 100-20-30``. All of them are ``+48611002030``. Two to four digits are an
internal extension and kept as they are; a withheld caller ("Anonymous", "unknown",
nothing at all) is None. Anything else goes to phonenumbers with region PL.
"""
from __future__ import annotations

import functools
import re

import phonenumbers

REGION = "PL"
WITHHELD = frozenset({"", "anonymous", "anonim", "unknown", "withheld", "private", "restricted",
                      "unavailable", "zastrzeżony", "zastrzezony", "nieznany", "prywatny",
                      "brak", "none", "null", "-", "n/a"})
SEPARATORS_RE = re.compile(r"[\s\-./()]+")
EXTENSION_RE = re.compile(r"^\d{2,4}$")
# The shapes of a Polish subscriber number (nine digits, never starting with 0), which are
# most of what a Polish hotline sees: handled without phonenumbers, which is ~100x slower
# and would dominate a large import. tests/test_calls_numbers.py checks both agree.
POLISH_RE = re.compile(r"^(?:\+48|0048|48|0)?([1-9]\d{8})$")


_NORMALISED: dict[str, str | None] = {}   # text -> normalise_number(text): callers repeat
_NORMALISED_KEPT = 32768                   # then emptied: bounded memory on any import


def normalise_number(text: str | None) -> str | None:
    """E.164 ('+48611002030'), an extension ('101'), the digits of a short number ('112'),
    or None for a withheld or empty caller."""
    if not text:
        return None
    if type(text) is not str:
        return _normalise(text)
    try:
        return _NORMALISED[text]
    except KeyError:
        pass
    if len(_NORMALISED) >= _NORMALISED_KEPT:
        _NORMALISED.clear()
    number = _NORMALISED[text] = _normalise(text)
    return number


def _normalise(text: str) -> str | None:
    if text.isdigit():   # most rows: no separators to remove, no words to look up
        return _normalised(text)
    cleaned = SEPARATORS_RE.sub("", str(text).strip().strip('"'))
    if cleaned.lower() in WITHHELD or not any(c.isdigit() for c in cleaned):
        return None
    if cleaned.lstrip("+").isdigit():
        return _normalised(cleaned)
    return _parsed(cleaned)


def _normalised(digits: str) -> str | None:
    if EXTENSION_RE.match(digits):
        return digits
    polish = POLISH_RE.match(digits)
    if polish:
        return "+48" + polish.group(1)
    return _parsed(digits)


@functools.lru_cache(maxsize=16384)
def _parsed(text: str) -> str | None:
    """phonenumbers for what is not a plain Polish number; the text itself if it cannot."""
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, REGION)
    except phonenumbers.NumberParseException:
        return text[:40] or None
    if not phonenumbers.is_possible_number(number):
        return text[:40]   # a service number (112, 19115) or a typo: kept, not invented
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_extension(number: str | None) -> bool:
    return bool(number) and EXTENSION_RE.match(number) is not None


def is_external(number: str | None) -> bool:
    """A number outside the PBX that could be called back."""
    return bool(number) and number.startswith("+")


def extension_of(text: str | None) -> str | None:
    """The extension in a channel or agent name: 'SIP/101-0000a1', 'PJSIP/101', 'Local/101@x'."""
    if not text:
        return None
    match = re.search(r"(?:^|/)(\d{2,6})(?=$|[-@;/,])", text)
    return match.group(1) if match else None
