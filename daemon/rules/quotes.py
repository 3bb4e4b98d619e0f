"""Cut the quoted copy of our own mail from a reply, so a relay carries only what is new."""
from __future__ import annotations

import re

# Our notifications carry this line; everything from it on is the quote of our mail.
REPLY_ABOVE = "-- Odpowiedz powyżej tej linii / Reply above this line --"

_ATTRIBUTION = re.compile(
    r"^\s*(?:"
    r"(?:W dniu|Dnia) .{4,200}(?:napisał|napisała|napisał\(a\)|pisze)\s*:?"
    r"|On .{4,200} wrote\s*:?"
    r"|Am .{4,200} schrieb\s*.*:"
    r"|-{2,}\s*(?:Original Message|Oryginalna wiadomość|Wiadomość oryginalna|"
    r"Forwarded message|Przekazana wiadomość)\s*-{2,}"
    r"|_{10,}"
    r"|(?:From|Od|Von)\s*:\s*.+(?:\n|\r\n)\s*(?:Sent|Wysłano|Date|Data|Gesendet)\s*:.*"
    r")\s*$",
    re.IGNORECASE | re.MULTILINE)


def strip_quoted(text: str) -> str:
    """The reply without the quoted earlier mail and trailing '>' lines."""
    text = text.replace("\r\n", "\n")
    marker = text.find(REPLY_ABOVE)
    if marker != -1:
        text = text[:marker]
        text = text[: text.rfind("\n")] if "\n" in text else ""  # the attribution line above it
    match = _ATTRIBUTION.search(text)
    if match and match.start() > 0:
        text = text[: match.start()]
    lines = text.rstrip().split("\n")
    while lines and (lines[-1].startswith(">") or not lines[-1].strip()):
        lines.pop()
    return "\n".join(lines).strip("\n")
