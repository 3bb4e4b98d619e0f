"""Cut what a reply quotes, and a technician's own signature, so a relay or a forward
carries only what its writer added.

The quote headers that mail clients write in many languages ("On … wrote:", "Am … schrieb
…:", "Le … a écrit :", Outlook's From/Von/De header block) are found by mail-parser-reply
(`mailparser_reply`, MIT). Kept here is what it does not know: our own "reply above this
line" marker, the Polish clients' attributions, separator lines ("-----Ursprüngliche
Nachricht-----", a rule of underscores), and a quote at the end ('>' lines) together with
the attribution above it, in whatever language it is written.
"""
from __future__ import annotations

import functools
import re

from mailparser_reply.constants import MAIL_LANGUAGES
from mailparser_reply.parser import EmailMessage

# Our notifications carry this line; everything from it on is the quote of our mail.
REPLY_ABOVE = "-- Odpowiedz powyżej tej linii / Reply above this line --"

# The languages whose clients' quote headers the library looks for. Not its Polish entry:
# it takes one line starting "Data:", "Do:" or "Temat:" for a quote header, and would cut
# a customer's own "Data: 12.12.2026" and all below it. Polish headers are matched below.
QUOTE_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "cs")
# The library's header patterns take time by the square of a line's length (a 20,000
# character line starting "On " costs seconds): it reads the first PROBE_LINES lines, each
# cut to PROBE_WIDTH characters, far more than any reply above its quote and its header.
PROBE_LINES, PROBE_WIDTH = 300, 200
# A signature is the last few lines of a mail; a sign-off higher up starts no signature.
SIGNATURE_LINES = 8
SIGNATURE_DELIMITER_LINES = 15   # "-- " is unambiguous: a longer block below it still counts

_POLISH_ATTRIBUTION = re.compile(
    r"^\s*(?:W dniu|Dnia) .{4,200}(?:napisał|napisała|napisał\(a\)|pisze)\s*:?\s*$",
    re.IGNORECASE)
_POLISH_FROM = re.compile(r"^\s*\**Od\s*:", re.IGNORECASE)              # Outlook in Polish
_POLISH_SENT = re.compile(r"^\s*\**(?:Wysłano|Data)\s*:", re.IGNORECASE)
# A label between dashes, in any language ("-----Original Message-----", "----------
# Forwarded message ---------", "-----Message d'origine-----"), or Outlook's rule.
_SEPARATOR = re.compile(r"^\s*(?:-{4,}\s*[^\W\d_][^-]{2,60}?\s*-{4,}|_{10,})\s*$")
_SIGNATURE_DELIMITER = re.compile(r"^--\s*$")                         # RFC 3676: "-- "
_WRAPPED_ADDRESS = re.compile(r"^\s*\(?[^\s@<>]+@[^\s@<>]+>")            # "sklep@jantar.pl>) …"


def strip_quoted(text: str) -> str:
    """The reply without the quoted earlier mail and trailing '>' lines."""
    lines = _before_marker(text.replace("\r\n", "\n")).split("\n")
    cut = _first_quote_line(lines)
    if cut is not None:
        lines = lines[:cut]
    return "\n".join(_without_trailing_quote(lines)).rstrip().strip("\n")


def strip_signature(text: str, language: str) -> str:
    """TEXT without its writer's signature block, so a relay carries one signature, ours.

    The block starts at a "-- " line (RFC 3676) among the last lines, else at what the
    library takes for a signature in LANGUAGE or English near the end: a sign-off
    ("Pozdrawiam", "Best regards"), whose line is kept, or "Sent from my iPhone".
    """
    lines = text.rstrip().split("\n")
    for index in range(len(lines) - 1, max(len(lines) - SIGNATURE_DELIMITER_LINES, 0), -1):
        if _SIGNATURE_DELIMITER.match(lines[index]):
            return "\n".join(lines[:index]).rstrip()
    start = _signature_start(lines, language)
    if start is None:
        return text.rstrip()
    keep = lines[start] if _sign_off(language).match(lines[start]) else None
    return "\n".join([*lines[:start], *([keep] if keep else [])]).rstrip()


# -- the quote -------------------------------------------------------------------------------
def _before_marker(text: str) -> str:
    marker = text.find(REPLY_ABOVE)
    if marker == -1:
        return text
    text = text[:marker]
    return text[: text.rfind("\n")] if "\n" in text else ""  # and the quote prefix before it


def _first_quote_line(lines: list[str]) -> int | None:
    """The first line of a quote header that has text of the reply above it, or None."""
    found = [index for index in (_library_header(lines), _own_header(lines)) if index]
    return min(found) if found else None


def _library_header(lines: list[str]) -> int | None:
    probe = [_probe_line(line) for line in lines[:PROBE_LINES]]
    message = EmailMessage(text="\n".join(probe), languages=list(QUOTE_LANGUAGES),
                           keep_hyphen_lists=True)
    normalized = message.text.split("\n")
    for match in message.HEADER_REGEX.finditer(message.text):
        start = match.start() + len(match.group()) - len(match.group().lstrip())
        index = message.text.count("\n", 0, start)
        if len(normalized) != len(probe):  # the library joined lines: find ours by its text
            index = next((i for i, line in enumerate(probe) if i >= index
                          and line.strip() == normalized[index].strip()), None)
        if index is not None and _text_above(lines, index):
            return index
    return None


def _probe_line(line: str) -> str:
    """LINE as the library reads it: cut short, no-break spaces as spaces ("De\xa0:" is
    how French Outlook writes "De :"), and no line of 32 dashes or underscores, which it
    would join to the line above (Outlook's rule is a separator of ours anyway)."""
    line = line[:PROBE_WIDTH].replace("\xa0", " ").replace("\u202f", " ")
    return "" if re.fullmatch(r"\s*[_-]{32,}.*", line) else line


def _own_header(lines: list[str]) -> int | None:
    for index, line in enumerate(lines):
        line = line[:PROBE_WIDTH * 2]
        header = (_POLISH_ATTRIBUTION.match(line) or _SEPARATOR.match(line)
                  or (_POLISH_FROM.match(line) and index + 1 < len(lines)
                      and _POLISH_SENT.match(lines[index + 1])))
        if header and _text_above(lines, index):
            return index
    return None


def _text_above(lines: list[str], index: int) -> bool:
    """Whether a reply stands above line INDEX: a mail that starts with a quote header is
    all quote (a forward, an answer written between the quoted lines) and stays whole."""
    return any(line.strip() and not line.lstrip().startswith(">") for line in lines[:index])


def _without_trailing_quote(lines: list[str]) -> list[str]:
    """LINES without the '>' lines, blank lines and separators at their end, and without
    the attribution line right above such a quote ("śr., 25 lis 2026 o 11:00 Jantar
    Helpdesk <sklep@jantar.pl> napisał(a):"): a line ending in a colon that names a date
    or an address, in any language."""
    lines, quoted = list(lines), False
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith(">")
                     or _SEPARATOR.match(lines[-1])):
        quoted = quoted or lines[-1].lstrip().startswith(">")
        lines.pop()
    if quoted and lines and _is_attribution(lines[-1]):
        wrapped = _WRAPPED_ADDRESS.match(lines.pop())
        if wrapped and lines:    # Gmail wraps a long attribution inside the address
            lines.pop()
        while lines and not lines[-1].strip():
            lines.pop()
    return lines


def _is_attribution(line: str) -> bool:
    line = line.strip()
    return line.endswith(":") and len(line) <= PROBE_WIDTH * 2 and (
        "@" in line or any(c.isdigit() for c in line))


# -- the signature -----------------------------------------------------------------------------
def _signature_start(lines: list[str], language: str) -> int | None:
    """The first line of the signature the library finds among the last SIGNATURE_LINES
    (never the mail's first line), or None."""
    # From the line before the tail: the library never starts a signature at the text's start.
    head = max(len(lines) - SIGNATURE_LINES - 1, 0)
    tail = [_probe_line(line) for line in lines[head:]]
    message = EmailMessage(text="\n".join(tail), languages=[language], keep_hyphen_lists=True)
    match = message.SIGNATURE_REGEX.search(message.text)
    if match is None or message.text.count("\n") != len(tail) - 1:
        return None
    start = match.start() + len(match.group()) - len(match.group().lstrip())
    index = head + message.text.count("\n", 0, start)
    return index or None


@functools.cache
def _sign_off(language: str) -> re.Pattern:
    """A line that opens with one of the library's sign-offs in LANGUAGE or English."""
    phrases = [phrase for lang in dict.fromkeys([language, "en"])
               for phrase in MAIL_LANGUAGES.get(lang, {}).get("signatures", [])]
    return re.compile(rf"^\s*(?:{'|'.join(phrases)})", re.IGNORECASE) if phrases \
        else re.compile(r"(?!)")
