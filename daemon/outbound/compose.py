"""Write an outgoing mail's bytes directly: headers, quoted-printable text, base64 files.

Our mail has one shape — a text part, optionally an HTML alternative, optionally files —
so it is written here with the C encoders of `binascii` instead of being built as an
`email.message.EmailMessage` and flattened by the standard library's generator, which
parses every header into registry objects, refolds it and walks the tree in Python:
that cost 5–10 ms per mail, the largest part of acknowledging a ticket or sending an
SLA notice. tests/test_compose.py parses what is written here back with the standard
library and compares every header, part and byte.

All functions take values already on one line (daemon.outbound.outbox.one_line) and
addresses already validated. Lines end in CRLF; a line is never longer than 998 bytes
and, but for a single long token, not longer than 78.
"""
from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable, Sequence
from urllib.parse import quote as url_quote

CRLF = "\r\n"
FOLD = "\r\n "
LINE = 78                 # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
ENCODED_LINE = 76         # RFC 2047 2: a line with an encoded word is at most 76 long
BASE64_LINE = 76          # RFC 2045 6.8
PARAMETER_CHUNK = 60      # RFC 2231 continuations of a long file name
WORD_PREFIX, WORD_SUFFIX = "=?utf-8?b?", "?="
WORD_OVERHEAD = len(WORD_PREFIX) + len(WORD_SUFFIX)
# A continuation line: " " + prefix + 60 base64 characters (45 bytes) + suffix = 73.
WORD_BYTES = 45


def needs_encoding(text: str) -> bool:
    return not text.isascii() or "=?" in text


def encoded_words(text: str, used: int = 0) -> str:
    """TEXT as RFC 2047 base64 words of UTF-8, folded; a character is never split.

    USED is the width already taken on the first line ("Subject: " and the like), so that
    no line with an encoded word passes 76 characters (RFC 2047 2).
    """
    data = text.encode("utf-8")
    room = max(ENCODED_LINE - used - WORD_OVERHEAD, 8) // 4 * 3   # payload bytes, line 1
    words, start = [], 0
    while start < len(data) or not words:
        end = min(start + room, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:   # inside a character
            end -= 1
        words.append(data[start:end])
        start, room = end, WORD_BYTES
    return FOLD.join(WORD_PREFIX + base64.b64encode(word).decode("ascii") + WORD_SUFFIX
                     for word in words)


def header_value(text: str, used: int = 0) -> str:
    """Unstructured text (a subject, a name) as a header carries it."""
    return encoded_words(text, used) if needs_encoding(text) else text


def quoted_name(name: str, used: int = 0) -> str:
    """A display name: as is when it is only atoms, else quoted, or RFC 2047 words."""
    if needs_encoding(name):
        return encoded_words(name, used)
    if all(c.isalnum() or c in " !#$%&'*+-/=?^_`{|}~" for c in name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox(address: str, name: str = "", used: int = 0) -> str:
    """`name <address>`; USED is the width already on the line (as in encoded_words)."""
    if not name:
        return address
    shown = quoted_name(name, used)
    last = shown.rpartition(FOLD)[2] if FOLD in shown else " " * used + shown
    fits = len(last) + 2 + len(address) + 1 <= (ENCODED_LINE if "=?" in last else LINE)
    return f"{shown}{' ' if fits else FOLD}<{address}>"


def folded_list(name: str, items: Iterable[str], separator: str = ",") -> str:
    """`Name: a, b, c`, folded before an item that would take the line past 78 characters.

    SEPARATOR goes between items ("," for addresses, "" for References' message ids).
    An item may itself be folded (a mailbox with an encoded name): its first line counts
    towards the current line, its last line starts the next width.
    """
    line, width = f"{name}:", len(name) + 1
    for number, item in enumerate(items):
        if number:
            line, width = line + separator, width + len(separator)
        if number and width + 1 + len(item.split(CRLF, 1)[0]) > LINE:
            line, width = line + FOLD, 1
        else:
            line, width = line + " ", width + 1
        line += item
        width = 1 + len(item.rsplit(FOLD, 1)[1]) if FOLD in item else width + len(item)
    return line


def header(name: str, value: str) -> str:
    return f"{name}: {value}"


def _boundary() -> str:
    # "=_" cannot occur in quoted-printable or base64 text, so no part can contain it.
    return f"=_jantar_{secrets.token_hex(12)}"


def _qp(text: str) -> bytes:
    """Normalised text (LF line ends) as quoted-printable with CRLF line ends."""
    data = text.replace("\n", "\r\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    # b2a_qp leaves a lone "." or "From " alone, which SMTP and mbox readers handle; it
    # does encode trailing white space, so no relay can strip what we meant.
    return encoded


def _text_part(subtype: str, text: str) -> bytes:
    return (f"Content-Type: text/{subtype}; charset=\"utf-8\"{CRLF}"
            f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}").encode("ascii") + _qp(text)


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i:i + BASE64_LINE]
                        for i in range(0, len(encoded), BASE64_LINE)) + b"\r\n"


def filename_parameter(filename: str) -> str:
    """`filename="…"`, or RFC 2231 `filename*=utf-8''…` (continued when long)."""
    if filename.isascii() and len(filename) <= PARAMETER_CHUNK and filename.isprintable():
        escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
        return f'filename="{escaped}"'
    encoded = url_quote(filename.encode("utf-8"), safe="")
    if len(encoded) <= PARAMETER_CHUNK:
        return f"filename*=utf-8''{encoded}"
    chunks, start = [], 0
    while start < len(encoded):
        end = min(start + PARAMETER_CHUNK, len(encoded))
        # never split a %XX escape
        while end < len(encoded) and "%" in encoded[end - 2:end]:
            end -= 1
        chunks.append(encoded[start:end])
        start = end
    return (";" + FOLD).join(
        f"filename*{n}*=utf-8''{chunk}" if n == 0 else f"filename*{n}*={chunk}"
        for n, chunk in enumerate(chunks))


def _attachment_part(filename: str, maintype: str, subtype: str, data: bytes) -> bytes:
    head = (f"Content-Type: {maintype}/{subtype}{CRLF}"
            f"Content-Transfer-Encoding: base64{CRLF}"
            f"Content-Disposition: attachment;{FOLD}{filename_parameter(filename)}{CRLF}{CRLF}")
    return head.encode("ascii") + _base64_lines(data)


def _multipart(subtype: str, parts: Sequence[bytes]) -> tuple[str, bytes]:
    boundary = _boundary()
    # The CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1), not to
    # the part before it: a part's own last line break is kept.
    delimiter = f"--{boundary}\r\n".encode("ascii")
    body = b"".join(delimiter + part + b"\r\n" for part in parts)
    body += f"--{boundary}--\r\n".encode("ascii")
    return f'multipart/{subtype}; boundary="{boundary}"', body


def compose(headers: Sequence[str], text: str, html: str | None,
            attachments: Sequence[tuple[str, str, str, bytes]]) -> bytes:
    """The whole mail: HEADERS (each "Name: value", folded) then the MIME body.

    ATTACHMENTS are (filename, maintype, subtype, data). The text alone is a single
    text/plain part; with HTML, multipart/alternative; with files, multipart/mixed around
    the text (or the alternative) and the files. Header text that is not ASCII (a
    non-ASCII address, RFC 6532) is written as UTF-8.
    """
    body_head, body = _content(text, html, attachments)
    head = CRLF.join([*headers, "MIME-Version: 1.0", body_head]) + CRLF + CRLF
    return head.encode("utf-8") + body


def _content(text: str, html: str | None,
             attachments: Sequence[tuple[str, str, str, bytes]]) -> tuple[str, bytes]:
    """(the Content-* header lines, the body) of the top-level entity."""
    if html is None:
        content = _text_part("plain", text)
    else:
        content_type, body = _multipart("alternative", [_text_part("plain", text),
                                                        _text_part("html", html)])
        content = f"Content-Type: {content_type}\r\n\r\n".encode("ascii") + body
    if attachments:
        content_type, body = _multipart("mixed", [content, *(
            _attachment_part(*attachment) for attachment in attachments)])
        return f"Content-Type: {content_type}", body
    head, _, body = content.partition(b"\r\n\r\n")
    return head.decode("ascii"), body
