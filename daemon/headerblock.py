"""Mend a broken header block so that the stdlib parser finds every header in it.

The stdlib feed parser ends the header block at the first line that is neither
"name:", nor indented (a continuation), nor "From ", and a mail whose first line is
such a line has no headers at all. Real senders break the rule: a byte order mark or
a batch-SMTP envelope before the mail, obsolete "Name :" syntax, junk before the first
header (an escaped ">From " line, the banner Outlook puts over saved headers, a
"Received" without its colon), and gateways (Exchange's among them) that fold a long
header without indenting the next line.

Only the mail's own header block is mended, and only where the reading is clear; the
raw bytes are stored untouched anyway. One cheap scan of the header block decides
whether there is anything to mend: nearly every mail has nothing.
"""
from __future__ import annotations

import re

_BYTE_ORDER_MARK = b"\xef\xbb\xbf"
_SMTP_ENVELOPE = re.compile(rb"(?:HELO|EHLO|LHLO|MAIL FROM:)[^\n]*\n(?:.*\n)*?DATA\r?\n",
                            re.IGNORECASE)
# The blank line after the headers: \r?\n\r?\n|\r\r, spelt so that each alternative begins
# with a fixed byte, which the regular-expression engine scans for four times faster.
_HEADER_BLOCK_END = re.compile(rb"\n\r?\n|\r\n\r?\n|\r\r")
_SPACE_BEFORE_COLON = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)

# A line the parser reads as a header, plausibly named (real names are letters, digits
# and dashes; the parser also takes "09:12:44 +0100" or "h=from:to" for one).
_HEADER_LINE = re.compile(rb"([A-Za-z][A-Za-z0-9_.-]*):")
# A line that is none of: a header, a continuation, a "From " line; the block's first
# line, and a line break followed by another line (fast: it begins with a byte class).
_GOOD_FIRST_LINE = re.compile(rb"From |[A-Za-z][A-Za-z0-9_.-]*:")
_ODD_NEXT_LINE = re.compile(rb"[\r\n](?![\r\n \t]|From |[A-Za-z][A-Za-z0-9_.-]*:)")
_LINES = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_BOUNDARY = re.compile(rb"""boundary\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)

MAX_JUNK_LINES = 5  # more lines before the first header: a text, not a mail with junk
# Names a header block is made of. Junk is only skipped, and a line only joined to the
# header above it, when one of these follows: a text that lost its blank line between
# headers and body has "Note:" lines, not these.
_KNOWN_NAMES = frozenset({
    "from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id",
    "in-reply-to", "references", "received", "return-path", "delivered-to", "envelope-to",
    "mime-version", "comments", "keywords", "importance", "priority", "sensitivity",
    "organization", "user-agent", "authentication-results", "received-spf",
    "dkim-signature", "domainkey-signature", "disposition-notification-to",
    "return-receipt-to", "errors-to", "precedence", "auto-submitted", "mailing-list",
    "accept-language", "newsgroups", "path", "xref", "followup-to", "autocrypt",
    "feedback-id", "require-recipient-valid-since",
})
_KNOWN_PREFIXES = ("x-", "content-", "list-", "resent-", "arc-", "thread-")
# A second one of these is not a header of this mail any more: a quoted block in a body.
_ONCE_PER_MAIL = frozenset({"from", "sender", "reply-to", "to", "cc", "subject", "date",
                            "message-id", "mime-version", "content-type",
                            "content-transfer-encoding"})


def repaired(raw: bytes, notes: list[str] | None = None) -> bytes:
    """RAW as the stdlib parser can read it; what was mended is added to NOTES."""
    raw = raw.removeprefix(_BYTE_ORDER_MARK).lstrip(b"\r\n")
    envelope = _SMTP_ENVELOPE.match(raw)
    if envelope:
        raw = raw[envelope.end():]
    block_end = _HEADER_BLOCK_END.search(raw)
    head = raw[:block_end.start()] if block_end else raw
    mended = head
    if _SPACE_BEFORE_COLON.search(mended):
        mended = _SPACE_BEFORE_COLON.sub(rb"\1:", mended)
    if mended and (not _GOOD_FIRST_LINE.match(mended) or _ODD_NEXT_LINE.search(mended)):
        mended = _mended_lines(mended, notes if notes is not None else [])
    return raw if mended is head else mended + raw[len(head):]


def _mended_lines(head: bytes, notes: list[str]) -> bytes:
    """The header block with junk before the first header dropped and the lines that
    continue a header without indentation indented."""
    lines = _without_junk(_LINES.findall(head), notes)
    if lines is None:
        return head
    joined = 0
    for number in range(1, _last_joinable(lines, head)):
        if _HEADER_LINE.match(lines[number]) is None and lines[number][:1] not in b" \t":
            lines[number] = b" " + lines[number]
            joined += 1
    if joined:
        notes.append(f"header block: {joined} unindented continuation line(s) joined to "
                     "the header above")
    return b"".join(lines)


def _without_junk(lines: list[bytes], notes: list[str]) -> list[bytes] | None:
    """LINES from the first header on (an mbox "From " line kept), the junk before it
    noted; None when no known header starts within MAX_JUNK_LINES lines."""
    if lines[0][:1] in b" \t" and _HEADER_LINE.match(lines[0].lstrip(b" \t")):
        notes.append("header block: the indented first header line read as a header")
        lines = [lines[0].lstrip(b" \t"), *lines[1:]]
    for number, line in enumerate(lines[:MAX_JUNK_LINES + 1]):
        header = _HEADER_LINE.match(line)
        if header is None:
            continue
        if number == 0:
            return lines
        if not _is_known(header.group(1).decode("ascii")):
            return None
        envelope = [line for line in lines[:number] if line.startswith(b"From ")]
        junk = [line for line in lines[:number] if not line.startswith(b"From ")]
        if junk:
            shown = junk[0].decode("ascii", "replace").strip()[:80]
            notes.append(f"header block: {len(junk)} line(s) of junk before the first header "
                         f"skipped, the first: {shown!r}")
        return envelope + lines[number:]
    return None


def _last_joinable(lines: list[bytes], head: bytes) -> int:
    """The line number of the last known header before the body visibly starts (a MIME
    boundary, a second Subject): lines above it continue the header above them."""
    # A header block declares one boundary; a few more are broken mail, thousands an attack.
    boundaries = tuple(dict.fromkeys(b"--" + found for found in _BOUNDARY.findall(head)))[:8]
    seen: set[str] = set()
    last_known = 0
    for number, line in enumerate(lines):
        if boundaries and line.startswith(boundaries):
            break
        header = _HEADER_LINE.match(line)
        if header is None:
            continue
        name = header.group(1).decode("ascii").lower()
        if name in _ONCE_PER_MAIL and name in seen:
            break
        seen.add(name)
        if _is_known(name):
            last_known = number
    return last_known


def _is_known(name: str) -> bool:
    name = name.lower()
    return name in _KNOWN_NAMES or name.startswith(_KNOWN_PREFIXES)
