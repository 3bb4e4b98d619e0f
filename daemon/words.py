"""The store's codes as words a person reads: ticket status, priority, channel, message kind.

One table for mail and pages alike, Polish first, then English; an unknown code is shown
as it is.
"""
from __future__ import annotations

LANGUAGES = ("pl", "en")
WORDS: dict[str, tuple[str, str]] = {
    "coordinator": ("koordynator", "coordinator"),  # a role; "technician" is below
    "new": ("nowe", "new"), "open": ("otwarte", "open"), "waiting": ("czeka na klienta", "waiting"),
    "resolved": ("rozwiązane", "resolved"), "closed": ("zamknięte", "closed"),
    "low": ("niski", "low"), "normal": ("normalny", "normal"), "high": ("wysoki", "high"),
    "urgent": ("pilny", "urgent"), "customer": ("klient", "customer"),
    "technician": ("technik", "technician"), "internal": ("notatka wewnętrzna", "internal note"),
    "auto": ("automat", "automatic"), "system": ("system", "system"),
    "email": ("e-mail", "email"), "web": ("formularz", "web form"), "phone": ("telefon", "phone"),
    "quarantined": ("kwarantanna", "quarantined"), "discarded": ("odrzucone", "discarded"),
}
_BY_LANGUAGE = {language: {code: pair[i] for code, pair in WORDS.items()}
                for i, language in enumerate(LANGUAGES)}


def words_in(language: str) -> dict[str, str]:
    """Code -> word in LANGUAGE ("en", else Polish)."""
    return _BY_LANGUAGE["en" if language == "en" else "pl"]


def word(code: str | None, language: str) -> str:
    """CODE as a word in LANGUAGE; an unknown code as it is, none as a dash."""
    return words_in(language).get(code or "") or (code or "—")
