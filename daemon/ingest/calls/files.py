"""Read call-record files as a stream of lines, and remember how far each file was read.

A file is never loaded whole: lines are read from the binary file one at a time and
decoded on their own (every encoding we take — UTF-8, Windows-1250 and the like —
keeps a line break a single byte), so the byte offset of each row end is known. A
file's cursor is that offset plus fingerprints of the bytes before it: when the bytes
are unchanged and the file only grew, reading resumes there; when the file was
rewritten or truncated (a PBX that regenerates today's export), it is read again from
the start and rows already stored are recognised by their call id.
"""
from __future__ import annotations

import codecs
import glob
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

BOM = codecs.BOM_UTF8
FINGERPRINT_BYTES = 4096


class FileProblem(Exception):
    """A whole file cannot be read (missing columns, unreadable): reported, not imported."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.line = line


class TextLines:
    """Decoded lines of a binary stream, counting bytes and line numbers as it goes."""

    def __init__(self, handle: BinaryIO, encoding: str, *, offset: int = 0, line: int = 0):
        self.handle, self.encoding = handle, encoding
        self.offset, self.line = offset, line
        self.complete_offset, self.complete_line = offset, line  # after the last full line
        self.undecodable: set[int] = set()
        self._utf8 = codecs.lookup(encoding).name == "utf-8"

    def __iter__(self) -> Iterator[str]:
        encoding, utf8 = self.encoding, self._utf8
        for raw in self.handle:
            if utf8 and self.offset == 0 and raw.startswith(BOM):
                raw_text = raw[len(BOM):]
            else:
                raw_text = raw
            self.offset += len(raw)
            self.line += 1
            if raw.endswith(b"\n"):
                self.complete_offset, self.complete_line = self.offset, self.line
            try:   # _decode, inline: once per line of the file
                text = raw_text.decode(encoding)
            except UnicodeDecodeError:
                text = self._decode(raw_text)
            yield text

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError:
            self.undecodable.add(self.line)
            return raw.decode(self.encoding, "replace")

    def readline(self) -> str | None:
        """One line outside the csv reader (a title line, the header); None at the end."""
        return next(iter(self), None)


@dataclass
class FileCursor:
    """How far one file was read; stored as JSON in the source's state."""

    size: int = 0
    mtime_ns: int = 0
    offset: int = 0          # after the last complete line read
    line: int = 0            # its line number
    head: str = ""           # sha256 of the first bytes (up to FINGERPRINT_BYTES)
    tail: str = ""           # sha256 of the bytes just before `offset`
    extra: dict = field(default_factory=dict)  # the reader's own notes: header, delimiter

    @classmethod
    def of(cls, data: dict | None) -> FileCursor | None:
        return cls(**data) if data else None

    def as_dict(self) -> dict:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "offset": self.offset,
                "line": self.line, "head": self.head, "tail": self.tail, "extra": self.extra}


def matching_files(pattern: str) -> list[str]:
    """Files the source's path pattern names, in a stable order."""
    return sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))


def unchanged(path: str, cursor: FileCursor | None) -> bool:
    stat = os.stat(path)
    return cursor is not None and (stat.st_size, stat.st_mtime_ns) == (cursor.size, cursor.mtime_ns)


def resume_point(handle: BinaryIO, size: int, cursor: FileCursor | None) -> FileCursor | None:
    """CURSOR when the file only grew since (same bytes before its offset), else None."""
    if cursor is None or cursor.offset == 0 or size < cursor.offset:
        return None
    head, tail = fingerprints(handle, cursor.offset)
    return cursor if (head, tail) == (cursor.head, cursor.tail) else None


def fingerprints(handle: BinaryIO, offset: int) -> tuple[str, str]:
    """sha256 of the first and of the last FINGERPRINT_BYTES before OFFSET."""
    handle.seek(0)
    head = hashlib.sha256(handle.read(min(offset, FINGERPRINT_BYTES))).hexdigest()
    start = max(offset - FINGERPRINT_BYTES, 0)
    handle.seek(start)
    tail = hashlib.sha256(handle.read(offset - start)).hexdigest()
    return head, tail


def cursor_after(handle: BinaryIO, path: str, lines: TextLines, extra: dict) -> FileCursor:
    """The cursor for PATH once LINES were read: a partial last line is read again next time."""
    stat = os.fstat(handle.fileno()) if hasattr(handle, "fileno") else os.stat(path)
    head, tail = fingerprints(handle, lines.complete_offset)
    return FileCursor(size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                      offset=lines.complete_offset, line=lines.complete_line,
                      head=head, tail=tail, extra=extra)


def sniff_delimiter(line: str) -> str:
    """The separator a header (or first) line uses: ';', ',' or a tab; ';' when unsure."""
    counts = {sep: line.count(sep) for sep in (";", ",", "\t")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ";"
