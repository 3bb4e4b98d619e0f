"""What an operator's monitor asks of /healthz: is the store, each mailbox and the intake well.

Asked often, so every check is cheap: `SELECT 1`, the cursors, a look at the data folder
(no write), and the intake's refusals from this process's memory.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from daemon.config import Config
from daemon.datadir import folders_to_check
from daemon.ingest.refusals import IntakeRefusals, RefusalsSeen
from daemon.store import Store
from daemon.store.db import sqlite_file
from daemon.store.models import MailboxCursor

log = logging.getLogger(__name__)
STORE_TIMEOUT_SECONDS = 3.0


# -- health ---------------------------------------------------------------------------------
@dataclass
class Health:
    """The answer of /healthz: `failing` names each part that is not well."""

    store: str = "ok"
    intake: dict = field(default_factory=dict)
    mailboxes: list[dict] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.failing

    def as_dict(self) -> dict:
        return {"status": "ok" if self.healthy else "failing", "failing": self.failing,
                "store": self.store, "intake": self.intake, "mailboxes": self.mailboxes}


def ping_store(store: Store, timeout: float = STORE_TIMEOUT_SECONDS) -> str | None:
    """None when `SELECT 1` answers within TIMEOUT, else why not (no URL, no secret)."""
    outcome: list[str | None] = []

    def select_one() -> None:
        try:
            # A raw DB-API connection: no BEGIN IMMEDIATE, so a busy writer cannot block it.
            connection = store.engine.raw_connection()
            try:
                cursor = connection.cursor()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                cursor.close()
            finally:
                connection.close()
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"
            log.warning("health check: store unreachable: %s", exc)
            outcome.append(f"unreachable ({type(exc).__name__})")

    worker = threading.Thread(target=select_one, name="health-ping", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g}s"


def check_health(config: Config, store: Store, now: datetime, *, since: datetime,
                 refusals: IntakeRefusals, timeout: float = STORE_TIMEOUT_SECONDS) -> Health:
    """Store reachable, intake able to commit, every IMAP mailbox polled within the stale limit.

    SINCE is when this process started: a mailbox never polled yet counts its lag from then.
    """
    health = Health()
    problem = ping_store(store, timeout)
    if problem:
        health.store = problem
        health.failing.append("store")
    health.intake = intake_state(config, refusals.seen(), now, store_reachable=not problem)
    if health.intake["state"] != "ok":
        health.failing.append("intake")
    if problem:
        return health
    with store.transaction() as session:
        cursors = {(c.mailbox, c.folder): c for c in session.scalars(select(MailboxCursor))}
    limit = config.limits.poll_stale_limit
    for mailbox in (m for m in config.mailboxes if m.pulls_imap):
        cursor = cursors.get((mailbox.address, mailbox.imap_folder))
        state = _poller_state(mailbox.address, mailbox.imap_folder, cursor, now, since, limit)
        health.mailboxes.append(state)
        if not state["ok"]:
            health.failing.append(f"mailbox {mailbox.address}")
    return health


# -- intake -------------------------------------------------------------------------------------
def intake_state(config: Config, seen: RefusalsSeen, now: datetime, *,
                 store_reachable: bool) -> dict:
    """Can intake commit a mail now? `why` names each reason it cannot, in codes only.

    A refusal keeps intake failing for `[limits] intake_unhealthy_for`: a monitor polling
    every minute still sees a refusal that happened between two of its polls.
    """
    window = config.limits.intake_unhealthy_for
    why = [] if store_reachable else ["store_unreachable"]
    if seen.last_at is not None and now - seen.last_at < window:
        why.append("recent_refusal")
    why += [problem for problem in data_dir_problems(config) if problem not in why]
    return {"state": "failing" if why else "ok", "why": why,
            "last_failure_at": seen.last_at.isoformat() if seen.last_at else None,
            "unhealthy_for_seconds": round(window.total_seconds()), "refusals": seen.counts}


def data_dir_problems(config: Config) -> list[str]:
    """What keeps the data folder (and the SQLite store's) from taking a mail, without writing.

    `run` writes and syncs a probe at start (daemon.datadir); here a poll must stay cheap,
    so it asks the file system: mounted read-only, not writable by us, short of space.
    """
    problems = []
    for folder in folders_to_check(config):
        problem = _folder_problem(folder, config.limits.min_free_bytes)
        if problem and problem not in problems:
            problems.append(problem)
    database = sqlite_file(config.database_url)
    if problems or database is None:
        return problems  # a read-only folder makes its files read-only too: said once
    if database.exists() and not os.access(database, os.W_OK):
        log.warning("health check: store file %s is not writable", database)
        problems.append("store_not_writable")
    return problems


def _folder_problem(folder: Path, min_free_bytes: int) -> str | None:
    existing = _nearest_existing(folder)
    try:
        stats = os.statvfs(existing)
    except OSError as exc:
        log.warning("health check: data folder %s: %s", folder, exc)
        return "data_dir_not_writable"
    free = stats.f_bavail * stats.f_frsize
    if stats.f_flag & os.ST_RDONLY:
        problem = "data_dir_read_only"
    elif not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problem = "data_dir_not_writable"
    elif free < max(min_free_bytes, 1):  # 0 free is full whatever the threshold
        problem = "data_dir_low_on_space"
    else:
        return None
    log.warning("health check: data folder %s: %s (%d bytes free)", folder, problem, free)
    return problem


def _nearest_existing(folder: Path) -> Path:
    """FOLDER, or the parent its first writer would create it in (`run` makes it at start)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


# -- mailboxes ----------------------------------------------------------------------------------
def _poller_state(address: str, folder: str, cursor: MailboxCursor | None, now: datetime,
                  since: datetime, limit: timedelta) -> dict:
    last = cursor.last_success_at if cursor else None
    lag = (now - (last or since)).total_seconds()
    # The error text stays in the log and the store: it may name hosts or server replies.
    return {"mailbox": address, "folder": folder,
            "last_success_at": last.isoformat() if last else None,
            "lag_seconds": max(0, round(lag)), "limit_seconds": round(limit.total_seconds()),
            "last_poll_failed": bool(cursor and cursor.last_error),
            "ok": lag <= limit.total_seconds()}
