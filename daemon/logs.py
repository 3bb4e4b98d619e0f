"""The command line's logging: our lines at INFO, the libraries' chatter only with -v,
and levels journald understands when systemd runs the daemon.

Our own lines lead with what they are about: the ticket number (`JAN-12 …`), the
Message-ID (`<…> …`), the mailbox and folder of a puller, the job's name (`send: …`).
The libraries' routine lines (APScheduler's "Running job …"/"executed successfully" per
run, aiosmtpd's whole SMTP conversation and its start-up self-probe "Connection lost",
Werkzeug's line per request, Alembic's steps) say nothing an operator acts on and would
drown those lines: their INFO is written down to DEBUG, shown only with `-v`; their
warnings and errors always show.
"""
from __future__ import annotations

import logging
import os
import sys

# Loggers (and their children) whose INFO is routine; their warnings and errors still show.
CHATTY_LIBRARIES = ("apscheduler", "mail.log", "werkzeug", "alembic", "urllib3", "asyncio")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# journald stamps the time itself, and reads a leading <N> as the line's priority
# (sd-daemon(3)), so `journalctl -p warning` finds our warnings.
JOURNAL_FORMAT = "%(syslog_priority)s%(levelname)s %(name)s: %(message)s"
SYSLOG_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                     logging.CRITICAL: 2}


class _LibraryChatterAtDebug(logging.Filter):
    """The chatty libraries' INFO records become DEBUG records: dropped unless VERBOSE."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _chatty(record.name):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return self.verbose


def _chatty(name: str) -> bool:
    return any(name == library or name.startswith(library + ".") for library in CHATTY_LIBRARIES)


class _JournalPriority(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        level = max((lv for lv in SYSLOG_PRIORITIES if lv <= record.levelno), default=10)
        record.syslog_priority = f"<{SYSLOG_PRIORITIES[level]}>"
        return True


def stderr_is_journal(stream=sys.stderr) -> bool:
    """Whether STREAM is the journal systemd connected (its JOURNAL_STREAM, systemd.exec(5))."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


def configure_logging(verbose: bool, stream=sys.stderr) -> None:
    """Our loggers at INFO (DEBUG with VERBOSE); the chatty libraries' INFO at DEBUG."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(_LibraryChatterAtDebug(verbose))
    if stderr_is_journal(stream):
        handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
        handler.addFilter(_JournalPriority())
    else:
        handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a host's (pytest's) handlers stay
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
