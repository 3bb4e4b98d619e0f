"""Turn raw mail bytes into a ParsedMail: decoded headers, text, safe HTML, attachments.

The MIME tree comes from the stdlib feed parser, once daemon.headerblock has mended what
would hide headers from it, bounded in depth and spared long base64 runs (decoded from
the raw bytes instead, see _read_spliced); mail-parser reads the address lists (its
structural recovery skips garbage instead of inventing mailboxes), the Date header and
mangled base64. Building a full mail-parser object is avoided on purpose: it cannot
bound nesting, decodes 8-bit headers by dropping the bytes it cannot read (the Polish
letters), and its eager pass over every header, Received line and attachment costs
several times the parse itself, on every mail.

Everything a Polish mailbox receives is decoded here (the charsets by daemon.charsets) —
utf-8, iso-8859-2, windows-1250, undeclared 8-bit headers, RFC 2047 and RFC 2231 — so
later steps only ever see str.
"""
from __future__ import annotations

import binascii
import html
import mimetypes
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import utils as email_utils
from email.feedparser import BytesFeedParser
from email.message import Message
from email.policy import compat32

import nh3
from mailparser.dates import parse_mail_date
from mailparser.utils import decode_base64_payload, get_addresses

from daemon.charsets import MailCharsets, codec_name
from daemon.headerblock import repaired as _repaired

MAX_MIME_DEPTH = 50               # nesting deeper than this is an attack, not a mail
MAX_MIME_PARTS = 1000             # parts read per mail; the rest are ignored with a defect
MAX_HEADER_CHARS = 64 * 1024      # a header value is decoded up to this length
MAX_MESSAGE_IDS = 500             # References kept per mail: the root and the newest ones
MAX_DEFECTS = 100
MAX_FILENAME_CHARS = 200


class UnparseableMail(Exception):
    """The bytes cannot be read as a mail at all; the message is the quarantine reason."""


@dataclass
class ParsedAttachment:
    filename: str            # decoded, made safe: no path parts, no control characters
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False
    size: int = 0            # true decoded size, also when data was dropped
    truncated: bool = False  # over attachment_max_bytes: data is b"", size still true


@dataclass
class ParsedMail:
    subject: str
    from_email: str          # lower-cased address, "" when absent
    from_name: str
    to: list[str]            # addresses, lower-cased
    cc: list[str]
    reply_to: list[str]
    message_id: str | None   # without angle brackets
    in_reply_to: list[str]   # Message-IDs, without angle brackets
    references: list[str]
    date: datetime | None    # aware
    text: str                # plain text: the text part, or derived from the HTML
    html: str | None         # sanitised with nh3, safe to show
    attachments: list[ParsedAttachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased name -> decoded first value
    defects: list[str] = field(default_factory=list)
    # Every address of every From header: a From naming two people is nobody's (mail_auth).
    from_addresses: list[str] = field(default_factory=list)
    # Authentication-Results values as written, topmost (the last server's) first.
    auth_results: list[str] = field(default_factory=list)
    received_date: datetime | None = None  # the topmost (newest) Received header's date
    # Where from_email came from: "from", or, when From names no usable address, the
    # first of "reply-to", "sender", "return-path" that does; "" when none does. Only a
    # "from" sender can be a technician (mail_auth relies on it).
    sender_source: str = "from"


def parse_mail(raw: bytes, *, attachment_max_bytes: int | None = None) -> ParsedMail:
    """Read one raw mail best-effort; raise UnparseableMail only when it is not a mail at all."""
    try:
        return _parse(bytes(raw), attachment_max_bytes)
    except UnparseableMail:
        raise
    except Exception as exc:  # hostile bytes must end in quarantine, never crash the pipeline
        raise UnparseableMail(f"parser failed: {type(exc).__name__}: {exc}") from exc


def _parse(raw: bytes, attachment_max_bytes: int | None) -> ParsedMail:
    if not raw or raw.isspace():
        raise UnparseableMail("empty input")
    defects: list[str] = []
    message, depth_exceeded = _read_message(_repaired(raw, defects))
    if not any(name.strip() for name in message.keys()):
        raise UnparseableMail("no header lines: not a mail message")
    if depth_exceeded:
        _note(defects, f"MIME nesting deeper than {MAX_MIME_DEPTH} levels: deeper parts ignored")
    parts = _walk_parts(message, defects)
    charsets = MailCharsets(lambda: _declared_charsets(message, parts),
                            lambda text: _note(defects, text))
    raw_headers = _raw_headers(message, charsets)
    headers = {name: _clean(_decode_words(values[0], charsets)).strip()
               for name, values in raw_headers.items()}
    body = _read_body(parts, charsets, defects, attachment_max_bytes)
    return _assemble(raw_headers, headers, body, charsets, defects)


def _assemble(raw_headers: dict[str, list[str]], headers: dict[str, str], body: _Body,
              charsets: MailCharsets, defects: list[str]) -> ParsedMail:
    senders = _mailboxes(raw_headers.get("from", []), "from", charsets, defects)
    from_name, from_email, sender_source = _requester(senders, raw_headers, charsets, defects)
    return ParsedMail(
        subject=_one_line(headers.get("subject", "")),
        from_email=from_email,
        from_name=from_name,
        to=_addresses(raw_headers.get("to", []), "to", charsets, defects),
        cc=_addresses(raw_headers.get("cc", []), "cc", charsets, defects),
        reply_to=_addresses(raw_headers.get("reply-to", [])[:1], "reply-to", charsets, defects),
        message_id=next(iter(_message_ids(headers.get("message-id", ""))), None),
        in_reply_to=_message_ids(headers.get("in-reply-to", "")),
        references=_message_ids(headers.get("references", "")),
        date=_parse_date(headers.get("date"), defects),
        text=body.text(),
        html=body.html(),
        attachments=body.attachments,
        headers=headers,
        defects=defects,
        from_addresses=list(dict.fromkeys(address for _name, address in senders)),
        auth_results=[_one_line(v) for v in raw_headers.get("authentication-results", [])],
        received_date=_received_date(raw_headers.get("received", [])[:1]),
        sender_source=sender_source,
    )


# Who else a mail names as its sender, in the order they speak for the person: whom to
# answer, who sent it on the author's behalf, where the server returns it.
_SENDER_FALLBACKS = ("reply-to", "sender", "return-path")


def _requester(senders: list[tuple[str, str]], raw_headers: dict[str, list[str]],
               charsets: MailCharsets, defects: list[str]) -> tuple[str, str, str]:
    """(name, address, header it came from) of the person the mail is from: From's first
    mailbox, else the first a fallback header names; empty strings when none does."""
    if senders:
        return (*senders[0], "from")
    for header in _SENDER_FALLBACKS:
        values = [v for v in raw_headers.get(header, [])[:1] if v.strip() not in ("", "<>")]
        found = _mailboxes(values, header, charsets, defects)
        if found:
            _note(defects, f"from: no usable address; the sender is taken from {header}")
            return (*found[0], header)
    return "", "", ""


# --- reading the MIME tree ------------------------------------------------------------


class _BoundedFeedParser(BytesFeedParser):
    """The stdlib feed parser, except parts nested past max_depth keep their body unread.

    The stdlib recurses once per nesting level, so a crafted mail ends in RecursionError;
    here a too-deep part is read in headers-only mode: its body stays one opaque string.
    """

    def __init__(self, max_depth: int) -> None:
        self._max_depth = max_depth
        self._depth = 0
        self.depth_exceeded = False
        super().__init__(policy=compat32)

    def _parsegen(self):
        self._depth += 1
        too_deep = self._depth > self._max_depth
        if too_deep:
            self._headersonly = True
            self.depth_exceeded = True
        try:
            yield from super()._parsegen()
        finally:
            self._depth -= 1
            if too_deep:
                self._headersonly = False


_FEED_CHUNK = 1 << 16


def _read_message(raw: bytes) -> tuple[Message, bool]:
    """The MIME tree of RAW; large base64 bodies stay in RAW until they are decoded."""
    if len(raw) >= _SPLICE_MIN_RUN:
        spliced = _read_spliced(raw)
        if spliced is not None:
            return spliced
    return _feed(raw)


def _feed(raw: bytes) -> tuple[Message, bool]:
    parser = _BoundedFeedParser(MAX_MIME_DEPTH)
    # In pieces: fed whole, the stdlib decodes all of it to one str and splits that in a
    # StringIO of 4-byte characters: about six times the mail's size at once.
    for start in range(0, len(raw), _FEED_CHUNK):
        parser.feed(raw[start:start + _FEED_CHUNK])
    return parser.close(), parser.depth_exceeded


# The stdlib parser keeps a body as one str per line until it joins them: a 34 MB base64
# attachment costs some 460,000 small strings (60 MB) plus the joined copy (34 MB). So a
# long run of base64 lines is cut out of the mail before parsing and the parser sees one
# placeholder line in its place; the part it lands in decodes the run from the raw bytes.
#
# Why the tree is the same as the plain parse's: every decision of the feed parser about a
# line depends only on whether it matches a header line (or "From "), an empty line or a
# "--boundary". A line of base64 letters alone (no colon, space, dash) matches none of
# them in any state, and neither does the placeholder: from the same state, the run and
# the placeholder lead to the same next state, and the text that gets the placeholder
# (a body, a preamble, an epilogue) would have got the run in its place. So runs are found
# without reading the MIME structure at all. A body that _walk_parts reads and that is
# base64 decodes its run from the raw bytes; anywhere else (an attached message/rfc822,
# a preamble, a part in another encoding) the run is put back as the text it was.
_SPLICE_MIN_RUN = 1 << 16  # bytes; shorter runs cost the stdlib little
# Whole lines of base64 letters, single line breaks between them. Possessive: a pattern
# that may backtrack keeps a record per repetition, 200 bytes per line of a 34 MB run.
_BASE64_LINES = re.compile(
    rb"(?<![^\r\n])[A-Za-z0-9+/=]++(?:(?:\r\n|\r|\n)[A-Za-z0-9+/=]++)*+")
_BASE64_BYTES = re.compile(rb"[A-Za-z0-9+/=\r\n]*")
_PLACEHOLDER = "JantarSplicedBase64Run"
_PLACEHOLDER_LINE = re.compile(_PLACEHOLDER + r"(\d+)Z")  # Z: run 1 is not a prefix of run 12
_BASE64_ALPHABET = re.compile(r"[A-Za-z0-9+/=]")


@dataclass
class _SplicedBody:
    """A base64 part's body, left in the raw mail: the parser saw placeholders instead.

    texts are the pieces of the body the parser did read, around the runs (raw[start:end]).
    """
    raw: bytes
    texts: list[str]
    runs: list[tuple[int, int]]

    def decoded(self) -> bytes:
        if len(self.runs) == 1 and not any(_BASE64_ALPHABET.search(t) for t in self.texts):
            # The decoder skips what is not base64 (line breaks, 8-bit bytes) without
            # effect: alone, the run decodes as the whole body would, and uncopied.
            start, end = self.runs[0]
            try:
                return binascii.a2b_base64(memoryview(self.raw)[start:end])
            except binascii.Error:
                pass  # repaired below from the whole body, as the plain path does
        return _base64(self.encoded())

    def encoded(self) -> bytes:
        chunks = [self.texts[0].encode("utf-8", "surrogateescape")]
        for (start, end), text in zip(self.runs, self.texts[1:]):
            chunks += [memoryview(self.raw)[start:end], text.encode("utf-8", "surrogateescape")]
        return b"".join(chunks)


def _read_spliced(raw: bytes) -> tuple[Message, bool] | None:
    """The tree with long base64 runs left in RAW, or None: read the mail the plain way."""
    runs = _base64_runs(raw)
    if not runs or _PLACEHOLDER.encode("ascii") in raw:
        return None
    message, depth_exceeded = _feed(_skeleton(raw, runs))
    landed = _placeholders(message)
    if sorted(number for _part, _name, numbers, _base64 in landed for number in numbers) \
            != list(range(len(runs))):
        return None  # a placeholder went missing: no case known, but never guess
    for part, name, _numbers, base64 in landed:
        pieces = _PLACEHOLDER_LINE.split(getattr(part, name))  # text, number, ..., text
        texts, spans = pieces[0::2], [runs[int(number)] for number in pieces[1::2]]
        setattr(part, name, _SplicedBody(raw, texts, spans) if base64
                else _spliced_text(raw, texts, spans))
    return message, depth_exceeded


def _base64_runs(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of each run of at least _SPLICE_MIN_RUN bytes: from a line's start to
    the end of a line's text, the line break after it not included."""
    # Such a run covers a whole window [sample, sample + step) for some multiple of step:
    # checking one byte per step skips text at no cost, where a pattern tried at every
    # byte would take as long as the parse of a text mail.
    step = max(_SPLICE_MIN_RUN // 2, 1)
    runs: list[tuple[int, int]] = []
    scanned = 0  # no stretch of base64 bytes begins before this unless already read
    for sample in range(0, len(raw), step):
        if sample < scanned:
            continue
        stretch_end = _BASE64_BYTES.match(raw, sample).end()
        if stretch_end - sample < step:
            continue
        # It began after the byte that ended the last window checked, or the last stretch.
        for lines in _BASE64_LINES.finditer(raw, max(scanned, sample - step), stretch_end):
            start, end = lines.span()
            if end < len(raw) and raw[end] not in b"\r\n":  # the last line goes on
                end = _last_line_end(raw, start, end)
            if end - start >= _SPLICE_MIN_RUN:
                runs.append((start, end))
        scanned = stretch_end
    return runs


def _last_line_end(raw: bytes, start: int, end: int) -> int:
    """Where the text of the last whole line in raw[start:end] ends, START when none."""
    cut = max(raw.rfind(b"\n", start, end), raw.rfind(b"\r", start, end))
    if cut <= start:
        return start
    return cut - 1 if raw[cut - 1:cut + 1] == b"\r\n" else cut


def _skeleton(raw: bytes, runs: list[tuple[int, int]]) -> bytes:
    """RAW with each run replaced by its placeholder; the line break after a run stays."""
    view = memoryview(raw)
    chunks: list[bytes | memoryview] = []
    position = 0
    for number, (start, end) in enumerate(runs):
        chunks += [view[position:start], f"{_PLACEHOLDER}{number}Z".encode("ascii")]
        position = end
    chunks.append(view[position:])
    return b"".join(chunks)


def _placeholders(message: Message) -> list[tuple[Message, str, list[int], bool]]:
    """(part, attribute, run numbers, whether to decode it from RAW) for every piece of
    text holding placeholders: bodies, and a multipart's preamble and epilogue."""
    landed = []
    stack = [(message, False)]
    while stack:
        part, in_attached_mail = stack.pop()
        payload = part._payload
        if isinstance(payload, list):
            # _walk_parts reads the leaves of multiparts; a message/* part is flattened.
            attached = in_attached_mail or part.get_content_maintype() != "multipart"
            stack.extend((child, attached) for child in payload)
        for name in ("preamble", "_payload", "epilogue"):
            text = getattr(part, name)
            if isinstance(text, str) and _PLACEHOLDER in text:
                base64 = name == "_payload" and not in_attached_mail \
                    and _transfer_encoding(part) == "base64"
                numbers = [int(number) for number in _PLACEHOLDER_LINE.findall(text)]
                landed.append((part, name, numbers, base64))
    return landed


def _spliced_text(raw: bytes, texts: list[str], runs: list[tuple[int, int]]) -> str:
    """The text as the parser would have read it with the runs in place (they are ASCII)."""
    chunks = [texts[0]]
    for (start, end), text in zip(runs, texts[1:]):
        chunks += [raw[start:end].decode("ascii"), text]
    return "".join(chunks)


# Where a part sits among multipart/alternative choices: (id of the alternative, number
# of the choice holding the part), outermost first.
_Branches = tuple[tuple[int, int], ...]


@dataclass
class _Leaf:
    """A part that is not a multipart container."""
    part: Message
    depth: int
    branches: _Branches


def _walk_parts(message: Message, defects: list[str]) -> list[_Leaf]:
    """Every part that is not a multipart container, in reading order."""
    leaves: list[_Leaf] = []
    stack: list[tuple[Message, int, _Branches]] = [(message, 1, ())]
    seen = 0
    while stack:
        part, depth, branches = stack.pop()
        seen += 1
        if seen > MAX_MIME_PARTS:
            _note(defects, f"more than {MAX_MIME_PARTS} MIME parts: the rest ignored")
            break
        for defect in part.defects:
            _note(defects, _describe_defect(defect))
        payload = part._payload  # get_payload() would decode 8-bit text lossily
        if part.get_content_maintype() != "multipart" or not isinstance(payload, list):
            leaves.append(_Leaf(part, depth, branches))
        elif part.get_content_subtype() == "alternative":
            stack.extend((child, depth + 1, (*branches, (id(part), choice)))
                         for choice, child in reversed(list(enumerate(payload))))
        else:
            stack.extend((child, depth + 1, branches) for child in reversed(payload))
    return leaves


def _describe_defect(defect: Exception) -> str:
    detail = str(defect)
    name = type(defect).__name__
    return f"{name}: {detail[:200]}" if detail else name


def _note(defects: list[str], text: str) -> None:
    if len(defects) < MAX_DEFECTS and text not in defects:
        defects.append(text)


_ENCODED_WORD_CHARSET = re.compile(r"=\?([^?\s*]+)(?:\*[^?]*)?\?[bBqQ]\?")


def _declared_charsets(message: Message, parts: list[_Leaf]) -> Iterator[str]:
    """The charset labels the mail declares: its parts' first, then its encoded words'."""
    for leaf in parts:
        charset = leaf.part.get_param("charset")
        if isinstance(charset, str):
            yield charset
    for part in (message, *(leaf.part for leaf in parts)):
        for _name, value in part.raw_items():
            text = str(value)[:MAX_HEADER_CHARS]
            if "=?" in text:
                yield from _ENCODED_WORD_CHARSET.findall(text)


# --- headers -------------------------------------------------------------------------


_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")


_EVERY_VALUE = frozenset({"to", "cc", "from", "authentication-results"})


def _raw_headers(message: Message, charsets: MailCharsets) -> dict[str, list[str]]:
    """Lower-cased name -> values as str (unfolded, 8-bit decoded, encoded words kept)."""
    headers: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        key = name.strip().lower()
        if not key:
            continue
        values = headers.setdefault(key, [])
        # Only these are read past the first value; the rest would be wasted work.
        if not values or key in _EVERY_VALUE:
            values.append(_header_text(str(value), charsets))
    return headers


def _header_text(value: str, charsets: MailCharsets) -> str:
    value = _LINE_BREAKS.sub("", value[:MAX_HEADER_CHARS])
    if value.isascii():
        return value
    # The parser kept undeclared 8-bit bytes as surrogate escapes: get the bytes back.
    return charsets.decode_unlabelled(value.encode("utf-8", "surrogateescape"))


def _decode_words(text: str, charsets: MailCharsets) -> str:
    """Decode RFC 2047 encoded words, also glued to text, split mid-character or broken."""
    if "=?" not in text:
        return text
    pieces: list[str | tuple[str, bytes]] = []
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[position:match.start()]
        # Whitespace between two encoded words is not part of the text (RFC 2047, 6.2).
        if between and not (between.isspace() and pieces and isinstance(pieces[-1], tuple)):
            pieces.append(between)
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        data = _word_bytes(match.group(2), match.group(3))
        previous = pieces[-1] if pieces else None
        if isinstance(previous, tuple) and previous[0].lower() == charset.lower():
            pieces[-1] = (charset, previous[1] + data)  # a character may span two words
        else:
            pieces.append((charset, data))
        position = match.end()
    pieces.append(text[position:])
    return "".join(piece if isinstance(piece, str) else charsets.decode(piece[1], piece[0])
                   for piece in pieces)


def _word_bytes(encoding: str, payload: str) -> bytes:
    data = payload.encode("utf-8")
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    return _lenient_base64(_NOT_BASE64.sub("", payload))


def _lenient_base64(text: str) -> bytes:
    if len(text) % 4 == 1:
        text = text[:-1]  # a lone trailing character carries no byte
    return binascii.a2b_base64(text + "=" * (-len(text) % 4))


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    """Unfolded, whitespace collapsed, no control characters: fit for a ticket title."""
    return _CONTROL_CHARS.sub("", " ".join(text.split()))


def _clean(text: str) -> str:
    """Text a database and a web page can hold: no NUL, no lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


# --- addresses, identifiers, date ----------------------------------------------------


def _addresses(values: list[str], header: str, charsets: MailCharsets,
               defects: list[str]) -> list[str]:
    found: list[str] = []
    for _name, address in _mailboxes(values, header, charsets, defects):
        if address not in found:
            found.append(address)
    return found


def _mailboxes(values: list[str], header: str, charsets: MailCharsets,
               defects: list[str]) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs; members that are not mailboxes are skipped."""
    mailboxes: list[tuple[str, str]] = []
    for value in values:
        pairs = _simple_mailboxes(value)
        if pairs is None:
            pairs = _recovered_mailboxes(value, header, defects)
        mailboxes.extend((_clean(_decode_words(name, charsets)).strip(), _clean(address).lower())
                         for name, address in pairs if _is_address(address))
    return mailboxes


_ADDR_SPEC = r'[^<>\s@,;:"()\\\[\]]+@[^<>\s@,;:"()\\\[\]]+'
_SIMPLE_MAILBOX = re.compile(
    rf'\s*(?:(?:"([^"\\]*)"|([^"<>,;:@()\\]*?))\s*<({_ADDR_SPEC})>|({_ADDR_SPEC}))\s*')


def _simple_mailboxes(value: str) -> list[tuple[str, str]] | None:
    """The everyday shapes ("Name" <a@b>, a@b, lists of them) read in microseconds;
    None sends anything else to mail-parser's careful and much slower reader."""
    members = [value] if '"' in value else value.split(",")
    pairs = []
    for member in members:
        if not member.strip():
            continue  # "a@b, " and empty headers
        match = _SIMPLE_MAILBOX.fullmatch(member)
        if match is None:
            return None
        quoted, bare, angled, alone = match.groups()
        pairs.append((quoted if quoted is not None else (bare or ""), angled or alone))
    return pairs


def _recovered_mailboxes(value: str, header: str, defects: list[str]) -> list[tuple[str, str]]:
    diagnostics: list[dict] = []
    pairs = get_addresses(value, defects=diagnostics)
    for diagnostic in diagnostics:
        _note(defects, f"{header}: {diagnostic.get('reason')}")
    if not any(_is_address(address) for _name, address in pairs) and len(value) <= 512 \
            and value.count("(") < 10:  # the stdlib reads nested comments recursively
        # mail-parser refuses sloppy but readable forms, e.g. a missing closing ">"
        pairs = email_utils.getaddresses([value])
    return pairs


def _is_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and not any(c in address for c in " \t<>,")


_BRACKETED_ID = re.compile(r"<([^<>\s]+)>")


def _message_ids(value: str) -> list[str]:
    """Message-IDs in order, without brackets; tolerant of missing brackets and junk."""
    ids = _BRACKETED_ID.findall(value)
    if not ids:
        tokens = value.replace(",", " ").split()
        ids = [token.strip("<>\"'") for token in tokens if "@" in token]
        if not ids and len(tokens) == 1:
            ids = [tokens[0].strip("<>\"'")]
    unique = list(dict.fromkeys(i[:998] for i in ids if i))
    if len(unique) > MAX_MESSAGE_IDS:
        unique = unique[:1] + unique[-(MAX_MESSAGE_IDS - 1):]  # the root and the newest
    return unique


def _received_date(values: list[str]) -> datetime | None:
    """The date a Received header ends with, after its last ";" (RFC 5321 4.4)."""
    if not values or ";" not in values[0]:
        return None
    return _parse_date(values[0].rpartition(";")[2].strip(), [])


def _parse_date(value: str | None, defects: list[str]) -> datetime | None:
    if not value:
        return None
    moment = parse_mail_date(value).value
    if moment is None:
        try:  # the stdlib reads forms mail-parser refuses, e.g. no zone at all
            moment = email_utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            _note(defects, f"date: unparsable {value[:100]!r}")
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # RFC 5322: no zone means UTC
    return moment


# --- body and attachments ------------------------------------------------------------


@dataclass
class _BodyText:
    """A text part meant to be read in the mail, as decoded."""
    content: str
    is_html: bool
    branches: _Branches


@dataclass
class _Body:
    texts: list[_BodyText] = field(default_factory=list)
    attachments: list[ParsedAttachment] = field(default_factory=list)

    def text(self) -> str:
        """Every plain part, and every HTML part that has no plain alternative (a mixed
        or related part, or a disclaimer a gateway added), in reading order."""
        written = _written_choices(self.texts)
        pieces = []
        for text in self.texts:
            if not text.is_html:
                pieces.append(text.content.rstrip("\n") if text.content.strip() else "")
            elif not any(written.get(alternative, set()) - {choice}
                         for alternative, choice in text.branches):
                pieces.append(_html_to_text(text.content))
        return "\n".join(piece for piece in pieces if piece)

    def html(self) -> str | None:
        markup = [text.content for text in self.texts if text.is_html]
        return "\n".join(safe_html(part) for part in markup) if markup else None


def _written_choices(texts: list[_BodyText]) -> dict[int, set[int]]:
    """For each multipart/alternative, the choices that hold plain text."""
    written: dict[int, set[int]] = {}
    for text in texts:
        if not text.is_html and text.content.strip():
            for alternative, choice in text.branches:
                written.setdefault(alternative, set()).add(choice)
    return written


def _read_body(parts: list[_Leaf], charsets: MailCharsets, defects: list[str],
               attachment_max_bytes: int | None) -> _Body:
    body = _Body()
    for number, leaf in enumerate(parts, start=1):
        if leaf.depth > MAX_MIME_DEPTH:
            continue  # read headers-only by the bounded parser, noted as a defect already
        try:
            _read_part(leaf, body, charsets, defects, attachment_max_bytes)
        except Exception as exc:  # one hostile part must not cost the rest of the mail
            _note(defects, f"part {number} skipped: {type(exc).__name__}: {exc}")
    return body


def _read_part(leaf: _Leaf, body: _Body, charsets: MailCharsets, defects: list[str],
               attachment_max_bytes: int | None) -> None:
    part = leaf.part
    if not _is_body_text(part):
        number = len(body.attachments) + 1
        body.attachments.append(_attachment(part, number, charsets, attachment_max_bytes))
        return
    charset = part.get_content_charset()
    if charset and codec_name(charset) is None:
        _note(defects, f"unknown charset {charset[:50]!r}: guessed")
    text = _part_text(part, charset, charsets)
    is_html = part.get_content_type() == "text/html"
    if is_html:
        text = _bounded_markup(text, defects)
    body.texts.append(_BodyText(text, is_html, leaf.branches))


def _is_body_text(part: Message) -> bool:
    """Plain or HTML text meant to be read in the mail, not a file attached to it."""
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return False
    # A multipart left as a string has no usable boundary: its body is best read as text.
    if part.get_content_type() not in ("text/plain", "text/html") \
            and part.get_content_maintype() != "multipart":
        return False
    # Apple Mail sends attached text files as "inline; filename=...": a name makes a file.
    return not _has_filename(part)


def _has_filename(part: Message) -> bool:
    return (part.get_param("filename", None, "content-disposition") is not None
            or part.get_param("name", None, "content-type") is not None)


_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""",
                           re.IGNORECASE)


def _part_text(part: Message, charset: str | None, charsets: MailCharsets) -> str:
    data = _part_bytes(part)
    if charset is None and part.get_content_type() == "text/html":
        found = _META_CHARSET.search(data[:4096])
        charset = found.group(1).decode("ascii") if found else None
    text = charsets.decode(data, charset).lstrip("\ufeff")
    return _clean(text.replace("\r\n", "\n").replace("\r", "\n"))


def _part_bytes(part: Message) -> bytes:
    """The part's content with its transfer encoding undone."""
    payload = part._payload  # get_payload() would decode 8-bit text lossily
    if isinstance(payload, _SplicedBody):  # only ever a base64 part's
        return payload.decoded()
    if isinstance(payload, list):  # message/*: the stdlib parsed it, even when encoded
        data = b"".join(_flatten(inner) for inner in payload)
    elif isinstance(payload, str):
        # The parser kept 8-bit bytes as surrogate escapes: get the bytes back.
        data = payload.encode("utf-8", "surrogateescape")
    else:
        data = payload or b""
    encoding = _transfer_encoding(part)
    if encoding == "base64":
        return _base64(data)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    if encoding in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return part.get_payload(decode=True) or b""
    return data


def _transfer_encoding(part: Message) -> str:
    # "base64 " and "base64;" happen, and the stdlib then leaves the payload encoded.
    value = str(part.get("content-transfer-encoding", "")).strip().lower()
    return re.split(r"[\s;]", value, maxsplit=1)[0]


def _base64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)  # skips line breaks and stray characters itself
    except binascii.Error:  # bad padding: mail-parser repairs it the way mail clients do
        return decode_base64_payload(data.decode("ascii", "ignore"))


def _flatten(message: Message) -> bytes:
    """A parsed (sub)message back as bytes, headers as they came: an attached .eml.

    The stdlib generator re-folds every header through email.header and costs more than
    the whole parse of the mail; this writes the parsed pieces back as they are.
    """
    head = "".join(f"{name}: {value}\n" for name, value in message.raw_items())
    chunks = [head.encode("utf-8", "surrogateescape"), b"\n"]
    payload = message._payload
    if not isinstance(payload, list):
        chunks.append(payload.encode("utf-8", "surrogateescape")
                      if isinstance(payload, str) else payload or b"")
        return b"".join(chunks)
    boundary = message.get_boundary() if message.get_content_maintype() == "multipart" else None
    if boundary is None:  # message/rfc822 and message/delivery-status: parts in a row
        return b"".join(chunks + [_flatten(inner) for inner in payload])
    delimiter = f"--{boundary}".encode("utf-8", "surrogateescape")
    for inner in payload:
        chunks += [delimiter, b"\n", _flatten(inner), b"\n"]
    chunks += [delimiter, b"--\n"]
    return b"".join(chunks)


def _attachment(part: Message, number: int, charsets: MailCharsets,
                attachment_max_bytes: int | None) -> ParsedAttachment:
    content_type = part.get_content_type()
    data = _part_bytes(part)
    content_id = _content_id(part)
    name = _filename(part, charsets) or _unnamed_part_name(part, content_id, charsets)
    filename = _safe_filename(name, content_type, number)
    disposition = part.get_content_disposition()
    over_cap = attachment_max_bytes is not None and len(data) > attachment_max_bytes
    return ParsedAttachment(
        filename=filename,
        content_type=content_type,
        data=b"" if over_cap else data,
        content_id=content_id,
        inline=disposition == "inline" or (disposition is None and content_id is not None),
        size=len(data),
        truncated=over_cap,
    )


def _filename(part: Message, charsets: MailCharsets) -> str:
    """The decoded file name (RFC 2231 or 2047 or raw 8-bit), "" when the part has none."""
    source = _mime_headers(part, charsets)
    for param, header in (("filename", "content-disposition"), ("name", "content-type")):
        value = source.get_param(param, None, header)
        if isinstance(value, tuple):  # RFC 2231: (charset, language, percent-decoded text)
            return _clean(_decode_rfc2231(*value, charsets))
        if value:
            return _clean(_decode_words(value, charsets))
    return ""


def _mime_headers(part: Message, charsets: MailCharsets) -> Message:
    """The part itself, or a header-only copy with raw 8-bit bytes decoded when it has any:
    the stdlib would turn each such byte into U+FFFD before we see the parameters."""
    wanted = [(name, str(value)) for name, value in part.raw_items()
              if name.lower() in ("content-type", "content-disposition")]
    if all(value.isascii() for _name, value in wanted):
        return part
    view = Message()
    for name, value in wanted:
        view[name] = _header_text(value, charsets)
    return view


def _decode_rfc2231(charset: str | None, _language: str | None, text: str,
                    charsets: MailCharsets) -> str:
    try:
        data = text.encode("latin-1")  # percent-decoded bytes, one char each
    except UnicodeEncodeError:
        return text  # raw 8-bit bytes already decoded by _mime_headers
    return charsets.decode(data, charset or None)


def _content_id(part: Message) -> str | None:
    value = _clean(str(part.get("content-id", ""))).strip().strip("<>").strip()
    return value[:998] or None


_RESERVED_FILENAME_CHARS = re.compile(r'[<>:"|?*]')
_KNOWN_EXTENSIONS = {
    "text/plain": ".txt", "text/html": ".html", "message/rfc822": ".eml",
    "message/delivery-status": ".txt", "message/disposition-notification": ".txt",
    "text/rfc822-headers": ".txt", "text/calendar": ".ics", "image/jpeg": ".jpg",
    "image/png": ".png", "image/gif": ".gif", "application/pdf": ".pdf",
    "application/pgp-signature": ".asc", "application/pkcs7-signature": ".p7s",
    "application/octet-stream": ".bin", "message/feedback-report": ".txt",
}


def _safe_filename(name: str, content_type: str, number: int) -> str:
    """A name safe to show and to save: no directories, controls or reserved characters."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    # Category C covers NUL, controls and the bidi overrides that disguise an extension.
    name = "".join(char for char in name if unicodedata.category(char)[0] != "C")
    name = " ".join(_RESERVED_FILENAME_CHARS.sub("_", name).split()).strip(". ")
    if not name:
        return _generated_filename(content_type, number)
    if len(name) <= MAX_FILENAME_CHARS:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and stem and len(extension) <= 16:
        return stem[:MAX_FILENAME_CHARS - len(extension) - 1].rstrip(". ") + "." + extension
    return name[:MAX_FILENAME_CHARS]


def safe_filename(name: str, content_type: str = "application/octet-stream") -> str:
    """The parser's rule for a file name anyone can send us, for uploads too."""
    return _safe_filename(name or "", content_type, 1)


# The names mail clients show for the parts of delivery, read and abuse reports.
_REPORT_PART_NAMES = {
    "message/delivery-status": "delivery-status.txt",
    "message/disposition-notification": "disposition-notification.txt",
    "message/feedback-report": "feedback-report.txt",
    "text/rfc822-headers": "rfc822-headers.txt",
}


def _unnamed_part_name(part: Message, content_id: str | None, charsets: MailCharsets) -> str:
    """The name a technician knows a part without a file name by, "" when there is none:
    an attached mail's subject, a report part's usual name, an inline image's
    Content-ID when that is a file name (Outlook's "image001.png@01DB...")."""
    content_type = part.get_content_type()
    if content_type in ("message/rfc822", "message/global"):
        return _attached_mail_name(part, charsets)
    if content_type in _REPORT_PART_NAMES:
        return _REPORT_PART_NAMES[content_type]
    if content_id:
        name = content_id.split("@", 1)[0].replace("\\", "/").rsplit("/", 1)[-1]
        stem, dot, extension = name.rpartition(".")
        if stem.strip(". ") and len(extension) <= 5 and extension.isascii() \
                and extension.isalnum() and not extension.isdigit():
            return name
    return ""


def _attached_mail_name(part: Message, charsets: MailCharsets) -> str:
    """An attached mail's subject + ".eml", as Outlook saves one; "" without a subject."""
    inner = part._payload[0] if isinstance(part._payload, list) and part._payload else None
    subject = inner.get("subject") if inner is not None else None
    if subject is None:
        return ""
    text = _one_line(_clean(_decode_words(_header_text(str(subject), charsets), charsets)))
    if not any(char.isalnum() for char in text):
        return ""
    return text.replace("/", "_").replace("\\", "_") + ".eml"  # a "/" is no directory here


def _generated_filename(content_type: str, number: int) -> str:
    if content_type == "application/ms-tnef":
        return "winmail.dat"  # the name Outlook users and TNEF tools expect
    extension = _KNOWN_EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type)
    return f"attachment-{number}{extension or '.bin'}"


# --- HTML ----------------------------------------------------------------------------


_HTML_TAGS = (nh3.ALLOWED_TAGS | {"font", "tfoot", "center"}) - {"area", "map"}
_HTML_ATTRIBUTES = {
    "*": {"title", "dir", "lang", "align"},
    "a": {"href", "hreflang"},
    "img": {"src", "alt", "width", "height"},
    "table": {"border", "cellpadding", "cellspacing", "width", "summary"},
    "td": {"colspan", "rowspan", "valign", "width", "headers"},
    "th": {"colspan", "rowspan", "valign", "width", "headers", "scope"},
    "col": {"span", "width"}, "colgroup": {"span", "width"},
    "font": {"color", "face", "size"},
    "ol": {"start"}, "blockquote": {"cite"}, "q": {"cite"},
    "del": {"datetime", "cite"}, "ins": {"datetime", "cite"}, "bdo": {"dir"},
    "hr": {"width", "size"},
}
# cid: lets the web layer show inline images from the attachments; no data: or javascript:.
_URL_SCHEMES = {"http", "https", "mailto", "cid", "tel"}
_CONTENT_DROPPED = {"script", "style", "title", "template", "noscript"}


# An HTML tree builder checks the stack of open elements at every block tag, so deep
# nesting costs depth x tags: 100,000 nested <div> would take minutes. Below this many
# tags even the worst nesting is milliseconds, and the depth is not measured at all.
_HTML_TAGS_BEFORE_DEPTH_CHECK = 5000
MAX_HTML_DEPTH = 200  # real mail nests a few dozen deep; forward chains maybe 100
_HTML_TAG_START = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)")
_HTML_NOT_NESTING = {"br", "img", "hr", "meta", "link", "input", "p", "li", "td", "th", "tr",
                     "dt", "dd", "option", "col", "area", "base", "wbr", "source", "param",
                     "embed", "track"}


def _bounded_markup(markup: str, defects: list[str]) -> str:
    """The markup, cut where its elements nest deeper than MAX_HTML_DEPTH."""
    if markup.count("<") < _HTML_TAGS_BEFORE_DEPTH_CHECK:
        return markup
    depth = 0
    for match in _HTML_TAG_START.finditer(markup):
        closing, name = match.groups()
        if name.lower() in _HTML_NOT_NESTING:
            continue
        depth = max(depth - 1, 0) if closing else depth + 1
        if depth > MAX_HTML_DEPTH:
            _note(defects, f"HTML nested deeper than {MAX_HTML_DEPTH} elements: cut there")
            return markup[:match.start()]
    return markup


def safe_html(markup: str, attribute_filter=None) -> str:
    """HTML safe to show: no scripts, handlers, styles, data: or javascript: URLs.

    ATTRIBUTE_FILTER(tag, attribute, value) -> value or None (drop) lets a page narrow
    this further, e.g. drop remote image sources until the reader asks for them.
    """
    return nh3.clean(markup, tags=_HTML_TAGS, clean_content_tags=_CONTENT_DROPPED,
                     attributes=_HTML_ATTRIBUTES, url_schemes=_URL_SCHEMES,
                     link_rel="noopener noreferrer nofollow", strip_comments=True,
                     attribute_filter=attribute_filter)



# Tags that end a line in rendered HTML; nh3 keeps only these, without attributes.
_LINE_TAGS = {"br", "p", "div", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6",
              "blockquote", "ul", "ol", "table", "hr", "pre", "dd", "dt", "section",
              "article", "header", "footer"}
_TAG = re.compile(r"<(/?)([a-z0-9]+)\s*/?>")
_SPACES = re.compile(r"[ \t\r\n\f\v\xa0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _html_to_text(markup: str) -> str:
    """Readable plain text from HTML: tags gone, line breaks kept, entities decoded."""
    skeleton = nh3.clean(markup, tags=_LINE_TAGS, clean_content_tags=_CONTENT_DROPPED,
                         attributes={}, link_rel=None, strip_comments=True)
    text = _TAG.sub(_tag_as_text, _SPACES.sub(" ", skeleton))  # source newlines are spaces
    lines = (line.strip() for line in html.unescape(text).replace("\xa0", " ").split("\n"))
    return _clean(_BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n"))


def _tag_as_text(match: re.Match) -> str:
    closing, tag = match.groups()
    if tag in ("td", "th"):
        return " "
    if tag == "li":
        return "" if closing else "\n- "
    return "\n"
