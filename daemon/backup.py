"""Back up a SQLite store while the daemon runs, and restore it: `helpdesk backup` / `restore`.

A backup is a folder: `helpdesk.db` (a consistent copy taken with SQLite's online backup,
one read snapshot, so writers carry on), `secret_key` from the data folder when there is
one (rating links and sessions stay valid), and `manifest.json` (what is inside and its
SHA-256). Attachments live in the store's `blobs` table, so the database is all the data.
PostgreSQL is backed up with pg_dump; these commands say so and stop.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from daemon.config import Config

DATABASE_FILE = "helpdesk.db"
SECRET_FILE = "secret_key"  # as webform.setup names it
MANIFEST_FILE = "manifest.json"
COUNTED_TABLES = ("tickets", "messages", "attachments", "blobs", "raw_messages", "outbox", "calls")
PG_BACKUP_HELP = """\
the store is PostgreSQL: back it up with pg_dump, e.g.
  pg_dump --format=custom --file=helpdesk.dump "$DATABASE_URL"
and restore into an empty database with
  pg_restore --no-owner --dbname="$DATABASE_URL" helpdesk.dump && helpdesk migrate
(see "Backup and restore" in the README); copy <data_dir>/secret_key alongside."""


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class BackupReport:
    path: Path
    counts: dict[str, int]
    files: tuple[str, ...]


def sqlite_path(config: Config) -> Path:
    """The SQLite database file, or BackupError explaining pg_dump for PostgreSQL."""
    url = make_url(config.database_url)
    if url.get_backend_name() != "sqlite":
        raise BackupError(PG_BACKUP_HELP)
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory store has nothing to back up")
    return Path(url.database)


# -- backup ---------------------------------------------------------------------------------
def backup(config: Config, target: Path, now: datetime, *, force: bool = False) -> BackupReport:
    """Write a backup folder at TARGET: built beside it under a temporary name, then renamed."""
    source = sqlite_path(config)
    if not source.exists():
        raise BackupError(f"no store at {source}: nothing to back up")
    if target.exists() and not force:
        raise BackupError(f"{target} exists: choose a new path, or --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    draft = target.with_name(f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    draft.mkdir()
    try:
        copy_database(source, draft / DATABASE_FILE)
        files = [DATABASE_FILE]
        if _copy_secret(Path(config.data_dir) / SECRET_FILE, draft / SECRET_FILE):
            files.append(SECRET_FILE)
        counts = table_counts(draft / DATABASE_FILE)
        _write_manifest(draft, files, counts, now)
        _fsync_folder(draft)
        _replace(draft, target)
    except BaseException:
        shutil.rmtree(draft, ignore_errors=True)
        raise
    return BackupReport(target, counts, tuple(files))


def copy_database(source: Path, destination: Path) -> None:
    """SQLite's online backup in one step: one read snapshot, consistent, writers unblocked."""
    reader = sqlite3.connect(source, timeout=30)
    writer = sqlite3.connect(destination)
    try:
        with writer:
            reader.backup(writer)
        writer.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        problem = writer.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise BackupError(f"the copy of {source} failed its check: {problem}")
    finally:
        writer.close()
        reader.close()
    with open(destination, "rb+") as handle:
        os.fsync(handle.fileno())


def table_counts(database: Path) -> dict[str, int]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        present = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        return {table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                for table in COUNTED_TABLES if table in present}
    finally:
        connection.close()


def _copy_secret(source: Path, destination: Path) -> bool:
    if not source.is_file():
        return False
    descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(source.read_bytes())
        os.fsync(file.fileno())
    return True


def _write_manifest(folder: Path, files: list[str], counts: dict[str, int], now: datetime) -> None:
    manifest = {"format": 1, "created_at": now.isoformat(), "counts": counts,
                "sha256": {name: _sha256(folder / name) for name in files}}
    with open(folder / MANIFEST_FILE, "w", encoding="utf-8") as file:
        json.dump(manifest, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _replace(draft: Path, target: Path) -> None:
    """Rename DRAFT to TARGET; an older TARGET (--force) is moved aside first, then removed."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        target.rename(old)
    draft.rename(target)
    _fsync_folder(target.parent)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


# -- restore --------------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict:
    """The manifest of a backup folder, its files checked against their SHA-256."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{folder}: not a helpdesk backup (no {MANIFEST_FILE})") from None
    except (ValueError, OSError) as exc:
        raise BackupError(f"{folder / MANIFEST_FILE}: unreadable: {exc}") from None
    for name, digest in manifest.get("sha256", {}).items():
        if Path(name).name != name or not (folder / name).is_file():
            raise BackupError(f"{folder}: {name} is missing")
        if _sha256(folder / name) != digest:
            raise BackupError(f"{folder / name}: damaged (its SHA-256 differs from the manifest)")
    if DATABASE_FILE not in manifest.get("sha256", {}):
        raise BackupError(f"{folder}: the manifest lists no {DATABASE_FILE}")
    return manifest


def store_has_data(database: Path) -> bool:
    if not database.exists() or database.stat().st_size == 0:
        return False
    counts = table_counts(database)
    return any(counts.get(t) for t in ("tickets", "raw_messages"))


def restore(config: Config, folder: Path, *, force: bool = False) -> dict:
    """Put a backup folder's store (and secret key) in place of the configured ones.

    Written with SQLite's backup API into the configured file, so a -wal file left beside
    it cannot be replayed over the restored pages. Run `helpdesk migrate` afterwards (the
    command does) to bring an older backup to the current schema.
    """
    target = sqlite_path(config)
    manifest = read_manifest(folder)
    if store_has_data(target) and not force:
        raise BackupError(f"{target} already holds tickets or mail: stop the daemon and use "
                          "--force to replace them with the backup")
    target.parent.mkdir(parents=True, exist_ok=True)
    reader = sqlite3.connect(f"file:{folder / DATABASE_FILE}?mode=ro", uri=True)
    writer = sqlite3.connect(target, timeout=30)
    try:
        with writer:
            reader.backup(writer)
        writer.execute("PRAGMA journal_mode=WAL")
    finally:
        writer.close()
        reader.close()
    restored_secret = _restore_secret(folder, Path(config.data_dir), force=force)
    return {"counts": table_counts(target), "secret_key": restored_secret,
            "created_at": manifest.get("created_at")}


def _restore_secret(folder: Path, data_dir: Path, *, force: bool) -> str:
    source, target = folder / SECRET_FILE, data_dir / SECRET_FILE
    if not source.is_file():
        return "not in the backup"
    if target.exists() and target.read_bytes() == source.read_bytes():
        return "unchanged"
    if target.exists() and not force:
        return f"kept the existing {target} (--force replaces it)"
    data_dir.mkdir(parents=True, exist_ok=True)
    draft = target.with_name(f".{SECRET_FILE}.restore-{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(source.read_bytes())
        os.fsync(file.fileno())
    draft.replace(target)
    return "restored"
