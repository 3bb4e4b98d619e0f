"""Open the store: engine, connection settings per backend, and transactions."""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


log = logging.getLogger(__name__)

# SQLite's own: a commit that takes the write-ahead log past this many pages copies the
# log into the database (and syncs it) before it returns.
WAL_AUTOCHECKPOINT = 1000
# With a checkpoint thread: the writers' own checkpoint is only the net below it, for a
# thread that falls behind (a log of ~40 MB).
WAL_AUTOCHECKPOINT_BEHIND = 10 * WAL_AUTOCHECKPOINT


class StoreUnavailable(Exception):
    """The database cannot be reached or written; callers answer 'try later'."""


def database_place(url: str) -> str:
    """Where URL points, for an operator's message: never its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"the SQLite store {parsed.database or ':memory:'}"
    where = f"{parsed.host or 'localhost'}" + (f":{parsed.port}" if parsed.port else "")
    who = f" as {parsed.username}" if parsed.username else ""
    return f"the {parsed.get_backend_name()} database {parsed.database or ''!r} at {where}{who}"


def unreachable_reason(exc: BaseException) -> str:
    """The driver's own reason, on one line: 'Connection refused', not its 40-frame trace."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = reason[0].strip() if reason else type(exc).__name__
    # psycopg: 'connection failed: connection to server at "h", port p failed: <why>'
    line = line.rsplit(" failed: ", 1)[-1].strip()
    return line.removeprefix("FATAL:").strip() or type(exc).__name__


def cannot_open(url: str, exc: BaseException) -> str:
    """One line for a store that cannot be opened: where, why, and what to check."""
    hint = ("" if make_url(url).get_backend_name() == "sqlite" else
            "; is the server running and the address right? ([helpdesk] database_url, "
            "or HELPDESK_DATABASE_URL)")
    return f"cannot open {database_place(url)}: {unreachable_reason(exc)}{hint}"


def _sqlite_settings(engine: Engine, autocheckpoint: int = WAL_AUTOCHECKPOINT) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):  # pragma: no cover - trivial wiring
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):  # pragma: no cover - trivial wiring
        # IMMEDIATE takes the write lock up front: a deferred transaction that later
        # writes can fail with "database is locked" no matter how long busy_timeout is.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for another backend or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(url: str, *, autocheckpoint: int = WAL_AUTOCHECKPOINT, **kwargs) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if sqlite_file(url) is not None:
            sqlite_file(url).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               **kwargs)
        _sqlite_settings(engine, autocheckpoint)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    # A server that drops packets instead of refusing would otherwise hold each connect
    # (an SMTP session waiting for its 451) for the kernel's TCP timeout, minutes long.
    # A connect_timeout in the URL wins.
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
    connect_args.update(kwargs.pop("connect_args", {}))
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


class WalCheckpointer:
    """Copies a SQLite store's write-ahead log into its database from a thread of its own.

    Left to SQLite, the commit that takes the log past 1,000 pages does that copy and
    its sync itself: one commit in ~50 of a mail's processing took 10–15 ms instead of
    0.2, and that wait was 8% of the processing's time (BENCHMARKS.md, figure 1). Here
    the copy runs beside the writers, which wait for it no more. PASSIVE: it copies
    what no reader still needs and never blocks a writer or a reader. It looks again
    soon while there is work, less often when idle. It stops with its store (`dispose`,
    or when the store is garbage), and a failure is logged, not raised: the writers'
    own checkpoint (`WAL_AUTOCHECKPOINT_BEHIND` pages) remains the net.
    """

    BUSY_INTERVAL = 0.1     # seconds between looks while the log grows
    IDLE_INTERVAL = 2.0     # ... while it does not

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stopped = threading.Event()
        self.checkpoints = 0        # checkpoints that copied pages
        self.last: tuple[int, int] | None = None   # (pages in the log, pages copied)
        self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint {path.name}",
                                        daemon=True)

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        connection = None
        interval = self.BUSY_INTERVAL
        while not self.stopped.wait(interval):
            try:
                if connection is None and self.path.exists():  # never create the file
                    connection = sqlite3.connect(self.path.resolve().as_uri() + "?mode=rw",
                                                 uri=True, timeout=0, isolation_level=None)
                copied = self.checkpoint(connection) if connection is not None else 0
            except sqlite3.Error as exc:
                log.warning("checkpoint of %s failed, retrying: %s", self.path, exc)
                copied = 0
            interval = self.BUSY_INTERVAL if copied else self.IDLE_INTERVAL
        if connection is not None:
            connection.close()

    def checkpoint(self, connection: sqlite3.Connection) -> int:
        """One PASSIVE checkpoint; returns the pages it copied into the database."""
        _busy, log_pages, copied = connection.execute(
            "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.last = (log_pages, copied)
        if copied > 0:
            self.checkpoints += 1
        return max(copied, 0)


class Store:
    """The ticket store. `transaction()` yields a session that commits on success.

    CHECKPOINT_THREAD (a SQLite file only): a `WalCheckpointer` for the store's life,
    what the long-running writers (the daemon, `helpdesk ingest`) open the store with.
    """

    def __init__(self, url: str, *, checkpoint_thread: bool = False, **engine_kwargs):
        self.url = url
        path = sqlite_file(url) if checkpoint_thread else None
        if path is not None:
            engine_kwargs["autocheckpoint"] = WAL_AUTOCHECKPOINT_BEHIND
        self.engine = make_engine(url, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.checkpointer = WalCheckpointer(path).start() if path is not None else None
        if self.checkpointer is not None:
            # A store dropped without dispose() (a command that returns) ends its thread.
            weakref.finalize(self, self.checkpointer.stopped.set)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(select(1))

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
