"""Read mail from files — single .eml files, mbox files, Maildir folders — for `helpdesk ingest`."""
from __future__ import annotations

import functools
import hashlib
import mailbox
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class FileMail:
    origin: str       # file path, plus the message's place in an mbox or Maildir
    raw: bytes
    # When the file says the mail arrived: an mbox's From_ line, else the file's time.
    # Imported history is dated by it when the mail itself names no date.
    filed_at: datetime | None = None

    @functools.cached_property
    def digest(self) -> str:
        """The SHA-256 of the bytes, in hex (worked out once: a mail is hashed for its key
        and its record)."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def key(self) -> str:
        return f"sha256:{self.digest}"   # as daemon.ingest.intake.content_key makes it


class NotMail(Exception):
    """A path that is neither a mail file, an mbox, nor a Maildir."""


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _is_mbox(path: Path) -> bool:
    if path.suffix.lower() in (".eml", ".msg"):
        return False
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def _from_maildir(path: Path) -> Iterator[FileMail]:
    box = mailbox.Maildir(str(path), factory=None, create=False)
    for key in sorted(box.iterkeys()):
        # As get_bytes reads it, and the file's time with it (a Maildir's arrival time).
        with open(os.path.join(box._path, box._lookup(key)), "rb") as handle:
            raw = handle.read()
            filed_at = _file_time(os.fstat(handle.fileno()).st_mtime)
        yield FileMail(f"{path}#{key}", raw, filed_at)


def _from_mbox(path: Path) -> Iterator[FileMail]:
    file_time = _file_time(path.stat().st_mtime)
    with path.open("rb") as handle:
        for index, (from_line, raw) in enumerate(mbox_entries(handle)):
            yield FileMail(f"{path}#{index + 1}", raw, from_line_date(from_line) or file_time)


def _file_time(mtime: float) -> datetime:
    return datetime.fromtimestamp(mtime, timezone.utc)


# "From sender@host Mon Mar  2 07:00:00 2026", with an optional zone before the year or
# after it; seconds are optional. Written in UTC unless a numeric zone says otherwise.
_FROM_LINE_DATE = re.compile(
    rb"\s([A-Z][a-z]{2})\s+(\d{1,2})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    rb"(?:\s+([+-]\d{4}|[A-Z]{3,5}))?\s+(\d{4})(?:\s+([+-]\d{4}))?")
_MONTHS = {m: n for n, m in enumerate((b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul",
                                       b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"), 1)}


def from_line_date(line: bytes) -> datetime | None:
    """The date of an mbox From_ line, or None when it has none that reads as one."""
    match = _FROM_LINE_DATE.search(line)
    if not match or match.group(1) not in _MONTHS:
        return None
    day, hour, minute = map(int, match.group(2, 3, 4))
    try:
        moment = datetime(int(match.group(7)), _MONTHS[match.group(1)], day, hour, minute,
                          int(match.group(5) or 0), tzinfo=timezone.utc)
    except ValueError:
        return None
    zone = next((z for z in (match.group(8), match.group(6)) if z and z[:1] in b"+-"), None)
    if zone:
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        moment -= offset if zone[:1] == b"+" else -offset
    return moment


def mbox_messages(handle: BinaryIO, block: int = 1 << 20) -> Iterator[bytes]:
    """The messages of an mbox file, each as `mailbox.mbox(...).get_bytes` returns it."""
    for _from_line, raw in mbox_entries(handle, block):
        yield raw


def mbox_entries(handle: BinaryIO, block: int = 1 << 20) -> Iterator[tuple[bytes, bytes]]:
    """The messages of an mbox file with their From_ lines: (From_ line, message), the
    message as `mailbox.mbox(...).get_bytes` returns it.

    A message starts at a line beginning with "From " and runs to the next such line;
    the From_ line is not part of it, nor is the empty line before the next one. What
    comes before the first From_ line is not a message. The standard library first
    indexes the whole file line by line (3.8 s of CPU for a 227 MB mbox here, a quarter of
    saving its 5,000 mails); this reads it in blocks and finds the From_ lines with
    `bytes.find` (0.9 s), holding one message and one block at a time.
    """
    buffer = bytearray()
    head = 0        # where the segment being read starts: a From_ line, or the preamble
    first = True    # the segment being read is the file's first: it may be a preamble
    search = 0      # where the next "\nFrom " may start
    while True:
        found = buffer.find(b"\nFrom ", search)
        if found < 0:
            more = handle.read(block)
            if not more:
                break
            del buffer[:head]  # what is yielded; the segment being read stays
            head = 0
            search = max(len(buffer) - len(b"From "), 0)  # "\nFrom " across two blocks
            buffer += more
            continue
        if not first or buffer.startswith(b"From "):
            yield _mbox_message(buffer, head, found + 1)
        head = search = found + 1
        first = False
    if not first or buffer.startswith(b"From "):
        yield _mbox_message(buffer, head, len(buffer))


def _mbox_message(buffer: bytearray, start: int, end: int) -> tuple[bytes, bytes]:
    """The From_ line starting at START, and the message after it whose last line ends at END."""
    newline = buffer.find(b"\n", start, end)
    body = end if newline < 0 else newline + 1
    from_line = bytes(buffer[start:min(body, start + 1000)])
    # mailbox.mbox leaves out the last line when it is empty: the separator before the
    # next From_ line (or the end of the file).
    # (The From_ line's own newline may be the first of the two.)
    if end > body and buffer.startswith(b"\n\n", end - 2):
        end -= 1
    with memoryview(buffer) as view:
        return from_line, bytes(view[body:end])


def _from_folder(path: Path) -> Iterator[FileMail]:
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            if not name.startswith("."):
                yield from read_mail(Path(root) / name)


def read_mail(path: Path) -> Iterator[FileMail]:
    """Every message under PATH, in a stable order; raises NotMail for what cannot be read."""
    if path.is_dir():
        yield from (_from_maildir(path) if _is_maildir(path) else _from_folder(path))
    elif path.is_file():
        if _is_mbox(path):
            yield from _from_mbox(path)
        else:
            yield FileMail(str(path), path.read_bytes(), _file_time(path.stat().st_mtime))
    else:
        raise NotMail(f"{path}: no such file or folder")
