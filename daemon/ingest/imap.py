"""Pull new mail from one IMAP folder into the store, and only then mark it done there.

The cursor (UIDVALIDITY + last UID, in `mailbox_cursors`) is the truth about what was
read; the \\Seen/$Helpdesk flags or the move to a done folder are for humans. Raw records
and the cursor advance in one transaction, so a process killed at any instant either
re-reads a batch (idempotency keys make that harmless) or has it saved; messages saved
but not yet marked on the server are marked on the next poll.

Several processes may share one PostgreSQL: a lease on the cursor row lets only one of
them poll a folder at a time.
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from imapclient import IMAPClient, SocketTimeout
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from daemon.clock import Clock
from daemon.config import Config, Mailbox
from daemon.ingest.intake import Added, add_raw
from daemon.store import Store
from daemon.store.models import MailboxCursor

log = logging.getLogger(__name__)

HELPDESK_KEYWORD = b"$Helpdesk"
SEEN, DELETED = b"\\Seen", b"\\Deleted"
BATCH_MESSAGES = 50
BATCH_BYTES = 32 * 1024 * 1024      # a batch's bodies are held in memory at once
MARK_CHUNK = 500                    # UIDs per STORE/MOVE command line
MIN_LEASE = timedelta(seconds=60)
IDLE_CHECK_SECONDS = 1.0            # how long one idle_check blocks before looking at `stop`
MAX_BACKOFF_SECONDS = 60.0  # after an outage, mail flows again within a minute
CONNECT_TIMEOUT_SECONDS = 30.0
READ_TIMEOUT_SECONDS = 120.0


class LeaseLost(Exception):
    """Another process took this folder's lease; stop writing to its cursor."""


@dataclass(frozen=True)
class SelectedFolder:
    uidvalidity: int
    keywords: bool  # the server keeps keywords such as $Helpdesk on this folder


def default_owner() -> str:
    """Unique per puller: host and pid say who holds a lease, the suffix tells threads apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(owner: str | None) -> bool:
    """Whether OWNER names a process on this host that no longer runs (e.g. SIGKILLed).

    Only a same-host owner can be checked; a lease from another machine is left to expire.
    """
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def batches_by_size(uids: Sequence[int], sizes: dict[int, int], limit: int) -> Iterator[list[int]]:
    """Group UIDs so a batch's bodies stay under `limit` bytes (a big message goes alone)."""
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if batch and total + size > limit:
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


def backoff_seconds(failures: int) -> float:
    return min(MAX_BACKOFF_SECONDS, 2.0 ** max(0, failures - 1))


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class ImapPuller:
    """Reads one mailbox's IMAP folder into raw records; `run` loops, `poll_once` polls once.

    After `poll_once` from a one-shot command, call `close()` (or use `with`) to log out
    and give the lease back at once rather than when it expires.
    """

    batch_messages = BATCH_MESSAGES
    batch_bytes = BATCH_BYTES

    def __init__(self, config: Config, mailbox: Mailbox, store: Store, clock: Clock,
                 on_saved: Callable[[], None] | None = None, owner: str | None = None,
                 on_refused: Callable[[int], None] | None = None):
        if not mailbox.pulls_imap:
            raise ValueError(f"mailbox {mailbox.address} has no imap_host")
        self.config, self.mailbox, self.store, self.clock = config, mailbox, store, clock
        self.on_saved = on_saved
        self.on_refused = on_refused  # (mails) a fetched batch could not be saved
        self.owner = owner or default_owner()
        self.folder = mailbox.imap_folder
        self.label = f"{mailbox.address}/{self.folder}"
        self.lease_length = max(MIN_LEASE, 2 * config.limits.poll_interval)
        self._client: IMAPClient | None = None
        self._holds_lease: bool | None = None  # None: not asked yet
        self._lease_renewed_at = 0.0  # time.monotonic() of the last renewal

    def __enter__(self) -> ImapPuller:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ----------------------------------------------------------------- the loop

    def run(self, stop: threading.Event) -> None:
        """Poll, wait for mail (IDLE or sleep), repeat until `stop`; never raises."""
        failures = 0
        log.info("%s: puller %s started", self.label, self.owner)
        try:
            while not stop.is_set():
                try:
                    self.poll_once()
                    failures = 0
                    self._wait_for_mail(stop)
                except Exception as exc:  # the thread must outlive any one failure
                    failures += 1
                    self._drop_connection()
                    delay = backoff_seconds(failures)
                    self._log_failure(exc, f"retrying in {delay:.0f} s")
                    stop.wait(delay)
        finally:
            self.close()
            log.info("%s: puller %s stopped", self.label, self.owner)

    def poll_once(self) -> int:
        """Save every message newer than the cursor; returns how many records were new."""
        if not self._take_lease():
            self._drop_connection()  # a standby process should not hold a server session
            return 0
        try:
            return self._poll()
        except LeaseLost:
            log.warning("%s: lease taken over by another process; standing by", self.label)
            self._holds_lease = False
            self._drop_connection()
            return 0
        except Exception as exc:
            self._record_error(exc)
            self._drop_connection()
            raise

    def _poll(self) -> int:
        client = self._connect()
        folder = self._select(client)
        last_uid = self._sync_uidvalidity(folder.uidvalidity)
        self._mark_leftovers_done(client, folder, last_uid)
        _take_news(client)  # from here on, any news is about mail the search may miss
        saved = 0
        for batch in self._new_batches(client, last_uid):
            saved += self._save_batch(client, folder, batch)
        self._record_success()
        return saved

    def _wait_for_mail(self, stop: threading.Event) -> None:
        """Return when new mail may be there, or the wait is over, or `stop` is set."""
        client = self._client
        if client is None or not self._holds_lease or not client.has_capability("IDLE"):
            stop.wait(self.config.limits.poll_interval.total_seconds())
            return
        if _take_news(client):
            return  # announced during our own commands: IDLE would not announce it again
        self._idle(client, stop)

    def _idle(self, client: IMAPClient, stop: threading.Event) -> None:
        client.idle()
        self._idle_until_news(client, stop)
        # Not in a `finally`: after an error the connection is dropped, not asked for DONE.
        client.idle_done()

    def _idle_until_news(self, client: IMAPClient, stop: threading.Event) -> None:
        # Short idle_checks in a loop so a set `stop` is seen within seconds; the IDLE
        # command itself ends after idle_timeout (servers drop longer ones), and after
        # poll_interval at the latest: a message that lands between our last search and
        # the start of IDLE may never be announced, so a poll bounds the wait either way.
        limits = self.config.limits
        deadline = time.monotonic() + min(limits.idle_timeout,
                                          limits.poll_interval).total_seconds()
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            timeout = min(IDLE_CHECK_SECONDS, remaining)
            started = time.monotonic()
            responses = client.idle_check(timeout=timeout)
            if any(_ends_wait(r) for r in responses):
                return
            if not responses and time.monotonic() - started < timeout / 2:
                return  # woken with nothing to read: the server closed; DONE will tell
            if self._lease_due() and not self._take_lease():
                return

    def close(self) -> None:
        """Log out and give the lease back (a clean stop)."""
        self._drop_connection(logout=True)
        if self._holds_lease:
            try:
                self._release_lease()
            except Exception as exc:  # it expires on its own anyway
                log.warning("%s: could not release the lease: %s", self.label, describe_error(exc))

    # ------------------------------------------------------------- the server

    def _connect(self) -> IMAPClient:
        if self._client is not None:
            return self._client
        m = self.mailbox
        # A default context verifies the certificate and host name.
        context = ssl.create_default_context() if m.imap_tls else None
        client = IMAPClient(m.imap_host, port=m.imap_port, ssl=m.imap_tls, ssl_context=context,
                            timeout=SocketTimeout(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS))
        try:
            client.login(m.imap_user, m.imap_password)
            if m.imap_done_folder:
                self._ensure_folder(client, m.imap_done_folder)
        except Exception:
            _shutdown(client)
            raise
        log.info("%s: connected to %s:%d as %s", self.label, m.imap_host, m.imap_port, m.imap_user)
        self._client = client
        return client

    def _drop_connection(self, logout: bool = False) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if logout:
            try:
                client.logout()
                return
            except Exception:
                pass  # a broken connection cannot log out; just close it
        _shutdown(client)

    def _ensure_folder(self, client: IMAPClient, folder: str) -> None:
        if not client.folder_exists(folder):
            log.info("%s: creating done folder %s", self.label, folder)
            client.create_folder(folder)

    def _select(self, client: IMAPClient) -> SelectedFolder:
        info = client.select_folder(self.folder)
        # No PERMANENTFLAGS means every flag is permanent (RFC 3501 7.1).
        permanent = info.get(b"PERMANENTFLAGS", (b"\\*",))
        keywords = b"\\*" in permanent or HELPDESK_KEYWORD in permanent
        return SelectedFolder(uidvalidity=int(info[b"UIDVALIDITY"]), keywords=keywords)

    def _new_batches(self, client: IMAPClient, last_uid: int) -> Iterator[list[int]]:
        # "n:*" always includes the highest UID, even when it is below n.
        uids = sorted(uid for uid in client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid)
        if uids:
            log.info("%s: %d new message(s) after UID %d", self.label, len(uids), last_uid)
        for chunk in chunks(uids, self.batch_messages):
            sizes = {uid: data.get(b"RFC822.SIZE", 0)
                     for uid, data in client.fetch(chunk, [b"RFC822.SIZE"]).items()}
            yield from batches_by_size(chunk, sizes, self.batch_bytes)

    def _fetch(self, client: IMAPClient, uids: list[int]) -> dict[int, bytes]:
        """UID -> raw bytes; BODY.PEEK never sets \\Seen. A UID missing was expunged meanwhile."""
        response = client.fetch(uids, [b"BODY.PEEK[]", b"RFC822.SIZE"])
        bodies = {}
        for uid in uids:
            data = response.get(uid, {})
            raw = data.get(b"BODY[]", data.get(b"RFC822"))
            if raw is None:
                log.warning("%s: UID %d vanished before it could be fetched", self.label, uid)
                continue
            bodies[uid] = bytes(raw)
        return bodies

    def _mark_done(self, client: IMAPClient, folder: SelectedFolder, uids: Sequence[int]) -> None:
        """Tell the server (and the humans reading it) these messages are in the helpdesk."""
        for chunk in chunks(sorted(uids), MARK_CHUNK):
            if self.mailbox.imap_done_folder:
                self._move(client, chunk, self.mailbox.imap_done_folder)
            else:
                flags = [SEEN, HELPDESK_KEYWORD] if folder.keywords else [SEEN]
                client.add_flags(chunk, flags, silent=True)

    def _move(self, client: IMAPClient, uids: list[int], target: str) -> None:
        if client.has_capability("MOVE"):
            client.move(uids, target)
            return
        # Killed between COPY and EXPUNGE, the next poll copies again: a duplicate in
        # the done folder is the price, never a lost message.
        client.copy(uids, target)
        client.add_flags(uids, [DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()  # also removes others' \Deleted mail, as any client closing it would

    def _mark_leftovers_done(self, client: IMAPClient, folder: SelectedFolder,
                             last_uid: int) -> None:
        """Mark messages saved earlier whose marking failed (killed, disconnected)."""
        if last_uid == 0:
            return
        criteria: list = ["UID", f"1:{last_uid}"]
        if not self.mailbox.imap_done_folder:
            if not folder.keywords:
                return  # without $Helpdesk, "saved but unmarked" cannot be told apart
            criteria += ["UNKEYWORD", HELPDESK_KEYWORD.decode()]
        leftovers = [uid for uid in client.search(criteria) if uid <= last_uid]
        if leftovers:
            log.info("%s: marking %d saved message(s) done that were left unmarked",
                     self.label, len(leftovers))
            self._mark_done(client, folder, leftovers)

    # ------------------------------------------------------------- the store

    def _save_batch(self, client: IMAPClient, folder: SelectedFolder, uids: list[int]) -> int:
        bodies = self._fetch(client, uids)
        try:
            with self.store.transaction() as session:
                self._advance_cursor(session, folder.uidvalidity, max(uids))
                saved = [(uid, len(raw), added) for uid, raw in bodies.items()
                         if (added := self._add(session, folder.uidvalidity, uid, raw))]
        except LeaseLost:
            raise
        except Exception:  # not saved, so not marked: the server keeps them for the next poll
            if self.on_refused is not None:
                self.on_refused(len(bodies))
            raise
        # Committed: from here on a crash loses nothing, so the server may be told.
        for uid, size, added in saved:
            log.info("<%s> saved from %s UID %d (%d bytes)",
                     added.message_id or "-", self.label, uid, size)
        if saved:
            self._notify_saved()
        self._mark_done(client, folder, list(bodies))
        return len(saved)

    def _add(self, session: Session, uidvalidity: int, uid: int, raw: bytes) -> Added | None:
        m = self.mailbox
        return add_raw(
            session, channel="imap", key=f"imap:{m.address}:{self.folder}:{uidvalidity}:{uid}",
            raw=raw, now=self.clock.now(), mailbox=m.address,
            origin=f"imap://{m.imap_user}@{m.imap_host}:{m.imap_port}/{self.folder};UID={uid}")

    def _notify_saved(self) -> None:
        if self.on_saved is None:
            return
        try:
            self.on_saved()
        except Exception:  # the pipeline's wake-up must not undo a committed batch
            log.exception("%s: on_saved callback failed", self.label)

    def _cursor_filter(self):
        return ((MailboxCursor.mailbox == self.mailbox.address)
                & (MailboxCursor.folder == self.folder))

    def _ensure_cursor(self) -> None:
        with self.store.transaction() as session:
            if session.scalar(select(MailboxCursor.id).where(self._cursor_filter())):
                return
        try:
            with self.store.transaction() as session:
                session.add(MailboxCursor(mailbox=self.mailbox.address, folder=self.folder,
                                          last_uid=0))
        except IntegrityError:
            pass  # another process created it first

    def _take_lease(self) -> bool:
        """Take or renew the lease when free, ours, or expired; True when we hold it."""
        self._ensure_cursor()
        now = self.clock.now()
        with self.store.transaction() as session:
            holder = session.scalar(select(MailboxCursor.lease_owner).where(self._cursor_filter()))
            # A holder that died on this host (SIGKILL, OOM) would block us for a whole lease.
            dead = [holder] if holder != self.owner and holder_is_dead(holder) else []
            result = session.execute(
                update(MailboxCursor)
                .where(self._cursor_filter(),
                       or_(MailboxCursor.lease_owner.is_(None),
                           MailboxCursor.lease_owner == self.owner,
                           MailboxCursor.lease_owner.in_(dead),
                           MailboxCursor.lease_until.is_(None),
                           MailboxCursor.lease_until < now))
                .values(lease_owner=self.owner, lease_until=now + self.lease_length)
                .execution_options(synchronize_session=False))
        held = result.rowcount == 1
        if held != self._holds_lease:
            log.info("%s: %s (%s)", self.label,
                     "took the lease" if held else "another process holds the lease; standing by",
                     self.owner)
        self._holds_lease = held
        self._lease_renewed_at = time.monotonic()
        return held

    def _lease_due(self) -> bool:
        return time.monotonic() - self._lease_renewed_at >= self.lease_length.total_seconds() / 3

    def _release_lease(self) -> None:
        with self.store.transaction() as session:
            session.execute(
                update(MailboxCursor)
                .where(self._cursor_filter(), MailboxCursor.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False))
        self._holds_lease = False

    def _sync_uidvalidity(self, uidvalidity: int) -> int:
        """The last UID read under this UIDVALIDITY; a new UIDVALIDITY starts over at 0."""
        with self.store.transaction() as session:
            cursor = session.scalars(select(MailboxCursor).where(self._cursor_filter())).one()
            if cursor.lease_owner != self.owner:
                raise LeaseLost()
            if cursor.uidvalidity != uidvalidity:
                if cursor.uidvalidity is not None:
                    log.warning("%s: UIDVALIDITY changed %s -> %s; reading the folder again "
                                "(known Message-IDs are recognised later)",
                                self.label, cursor.uidvalidity, uidvalidity)
                cursor.uidvalidity, cursor.last_uid = uidvalidity, 0
            return cursor.last_uid

    def _advance_cursor(self, session: Session, uidvalidity: int, uid: int) -> None:
        # First statement of the batch transaction: it also row-locks the cursor (on
        # PostgreSQL) and proves the lease is still ours before any record is written.
        result = session.execute(
            update(MailboxCursor)
            .where(self._cursor_filter(), MailboxCursor.lease_owner == self.owner,
                   MailboxCursor.uidvalidity == uidvalidity)
            .values(last_uid=uid, lease_until=self.clock.now() + self.lease_length)
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            raise LeaseLost()

    def _record_success(self) -> None:
        with self.store.transaction() as session:
            session.execute(
                update(MailboxCursor)
                .where(self._cursor_filter(), MailboxCursor.lease_owner == self.owner)
                .values(last_success_at=self.clock.now(), last_error=None)
                .execution_options(synchronize_session=False))

    def _record_error(self, exc: BaseException) -> None:
        try:
            with self.store.transaction() as session:
                session.execute(
                    update(MailboxCursor).where(self._cursor_filter())
                    .values(last_error=describe_error(exc))
                    .execution_options(synchronize_session=False))
        except Exception as store_exc:  # the store may be the thing that failed
            log.warning("%s: could not record the error: %s", self.label, describe_error(store_exc))

    def _log_failure(self, exc: BaseException, what_next: str) -> None:
        if isinstance(exc, (OSError, IMAPClient.Error)):
            log.warning("%s: %s; %s", self.label, describe_error(exc), what_next)
        else:
            log.error("%s: unexpected %s; %s", self.label, describe_error(exc), what_next,
                      exc_info=exc)


def _ends_wait(response: tuple) -> bool:
    """An IDLE response saying the folder grew ((n, b'EXISTS')) or the server is leaving."""
    if response and response[0] == b"BYE":
        return True
    return len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")


def _take_news(client: IMAPClient) -> bool:
    """Did the server announce new mail in answers to our commands since the last call?

    imaplib keeps such unsolicited EXISTS/RECENT lines aside (SELECT clears them); a
    message announced that way before IDLE starts is never announced in the IDLE.
    """
    pending = client._imap.untagged_responses
    announced = [pending.pop(name, None) for name in ("EXISTS", "RECENT")]
    return any(announced)


def _shutdown(client: IMAPClient) -> None:
    try:
        client.shutdown()
    except Exception:
        pass  # already closed
