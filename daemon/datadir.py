"""Check, before the store is touched, that the data folder can be written and has room.

A read-only or full disk found half-way through a migration leaves a half-written store;
found here, it is one clear sentence and a non-zero exit.
"""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url

from daemon.config import Config

PROBE_BYTES = 4096


class DataDirError(Exception):
    """The data folder (or the SQLite store's folder) cannot take writes."""


def folders_to_check(config: Config) -> list[Path]:
    """The data folder, and the SQLite database's folder when it is elsewhere."""
    folders = [Path(config.data_dir)]
    url = make_url(config.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        database_folder = Path(url.database).parent
        if database_folder.resolve() != folders[0].resolve():
            folders.append(database_folder)
    return folders


def check_data_dirs(config: Config) -> None:
    """Raise DataDirError naming the folder that is not writable or short of space."""
    for folder in folders_to_check(config):
        check_writable(folder, config.limits.min_free_bytes)


def check_writable(folder: Path, min_free_bytes: int) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"data folder {folder}: cannot be created: {_reason(exc)}") from None
    _probe_write(folder)
    free = free_bytes(folder)
    if free < min_free_bytes:
        raise DataDirError(f"data folder {folder}: only {_mib(free)} free, less than "
                           f"[limits] min_free_bytes ({_mib(min_free_bytes)}); free some space")


def _probe_write(folder: Path) -> None:
    """Write, sync and delete a small file: catches read-only mounts and a full disk alike."""
    probe = folder / f".write-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, b"\0" * PROBE_BYTES)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise DataDirError(f"data folder {folder}: not writable: {_reason(exc)}") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"
