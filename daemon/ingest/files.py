"""Read mail from files — single .eml files, mbox files, Maildir folders — for `helpdesk ingest`."""
from __future__ import annotations

import mailbox
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.ingest.intake import content_key


@dataclass(frozen=True)
class FileMail:
    origin: str       # file path, plus the message's place in an mbox or Maildir
    raw: bytes

    @property
    def key(self) -> str:
        return content_key(self.raw)


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
        yield FileMail(f"{path}#{key}", box.get_bytes(key))


def _from_mbox(path: Path) -> Iterator[FileMail]:
    box = mailbox.mbox(str(path), factory=None, create=False)
    try:
        for index, key in enumerate(box.iterkeys()):
            yield FileMail(f"{path}#{index + 1}", box.get_bytes(key))
    finally:
        box.close()


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
            yield FileMail(str(path), path.read_bytes())
    else:
        raise NotMail(f"{path}: no such file or folder")
