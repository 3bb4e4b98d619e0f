"""SQLite's write-ahead log is copied into the database by the store's own thread.

The long-running writers open the store with `checkpoint_thread=True`: their commits
leave the copy (and its sync) to that thread, with SQLite's own checkpoint kept only as
a net for a thread that falls behind.
"""
from __future__ import annotations

import gc
import sqlite3
import threading
import time

from sqlalchemy import text

from daemon.cli import _open_store
from daemon.store import Store
from daemon.store.db import WAL_AUTOCHECKPOINT, WAL_AUTOCHECKPOINT_BEHIND, WalCheckpointer

ROW = b"x" * 3000           # about one page a row
ROWS = 1500                  # past SQLite's own 1,000-page checkpoint


def _fill(store: Store, rows: int = ROWS) -> None:
    """One commit per row, as the pipeline writes: ROWS commits of about a page each."""
    with store.transaction() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS filler (n INTEGER, data BLOB)"))
    for n in range(rows):
        with store.transaction() as session:
            session.execute(text("INSERT INTO filler VALUES (:n, :data)"),
                            {"n": n, "data": ROW})


def _autocheckpoint(store: Store) -> int:
    with store.engine.connect() as connection:
        return connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()


def _wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_thread_copies_the_log_and_the_writers_do_not(tmp_path):
    path = tmp_path / "store.db"
    store = Store(f"sqlite:///{path}", checkpoint_thread=True)
    try:
        assert _autocheckpoint(store) == WAL_AUTOCHECKPOINT_BEHIND
        _fill(store)
        assert _wait_for(lambda: store.checkpointer.checkpoints > 0)
        # The thread catches up: its last look found every page of the log copied.
        assert _wait_for(lambda: (last := store.checkpointer.last) and last[0] == last[1]
                         and last[0] > 0)
        with store.transaction() as session:
            assert session.execute(text("SELECT count(*) FROM filler")).scalar() == ROWS
    finally:
        store.dispose()
    assert not store.checkpointer._thread.is_alive()


def test_without_the_thread_sqlite_checkpoints_in_the_commit(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        assert store.checkpointer is None
        assert _autocheckpoint(store) == WAL_AUTOCHECKPOINT
    finally:
        store.dispose()


def test_the_commands_open_a_sqlite_store_with_the_thread(config):
    store = _open_store(config, migrate=True)
    try:
        if store.backend == "sqlite":
            assert store.checkpointer is not None and store.checkpointer._thread.is_alive()
        else:  # PostgreSQL has no such log to copy: no thread
            assert store.checkpointer is None
    finally:
        store.dispose()


def test_a_store_dropped_without_dispose_ends_its_thread(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}", checkpoint_thread=True)
    _fill(store, rows=1)
    thread = store.checkpointer._thread
    store.engine.dispose()
    del store
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_the_thread_never_creates_a_missing_database(tmp_path):
    path = tmp_path / "not-yet.db"
    checkpointer = WalCheckpointer(path).start()
    try:
        time.sleep(3 * WalCheckpointer.BUSY_INTERVAL)
        assert not path.exists()
    finally:
        checkpointer.stop()


def test_a_failing_checkpoint_is_logged_and_retried(tmp_path, caplog, monkeypatch):
    path = tmp_path / "store.db"
    store = Store(f"sqlite:///{path}", checkpoint_thread=True)
    calls, failed = [], threading.Event()
    real = WalCheckpointer.checkpoint

    def flaky(self, connection):
        calls.append(1)
        if len(calls) == 1:
            failed.set()
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, connection)

    monkeypatch.setattr(WalCheckpointer, "checkpoint", flaky)
    monkeypatch.setattr(WalCheckpointer, "IDLE_INTERVAL", WalCheckpointer.BUSY_INTERVAL)
    try:
        _fill(store, rows=1)
        assert failed.wait(10)
        _fill(store, rows=300)
        assert _wait_for(lambda: store.checkpointer.checkpoints > 0)
    finally:
        store.dispose()
    assert any("checkpoint of" in r.getMessage() and "disk I/O error" in r.getMessage()
               for r in caplog.records)
