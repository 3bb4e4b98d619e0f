"""Pull new mail from one IMAP folder into the store, and only then mark it done there.

The cursor (UIDVALIDITY + last UID, in `mailbox_cursors`) is the truth about what was
read; the \\Seen/$Helpdesk flags or the move to a done folder are for humans. Raw records
and the cursor advance in one transaction, so a process killed at any instant either
re-reads a batch (idempotency keys make that harmless) or has it saved; messages saved
but not yet marked on the server are marked on the next poll.

Several processes may share one PostgreSQL: a lease on the cursor row lets only one of
them poll a folder at a time.

The mail already in a folder when the helpdesk first connects to it (no UIDVALIDITY
recorded yet) falls under the mailbox's `existing_mail` rule: "archive" (the default)
saves it as history (daemon.ingest.history: closed, imported tickets, nothing sent),
except unseen mail younger than `existing_unseen_live`, which is taken as new mail;
"process" takes it all as new mail; "skip" starts after the highest UID and leaves
that mail unread and unmarked. The cursor remembers the highest UID found and the rule,
so a puller stopped halfway goes on with the same rule. A changed UIDVALIDITY (the
folder recreated or restored) is no first connection: the cursor no longer says what
was read, so the whole folder is read again under the "archive" rule whatever the
mailbox says ("process" would acknowledge old mail without a Message-ID, "skip" would
drop mail that came since the last poll); what the helpdesk holds already is
recognised by its Message-ID, or by its content without one. Mail taken as history is
marked done on the server like any other: \\Seen and $Helpdesk (or moved), so a person
reading the mailbox sees what the helpdesk took.
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from types import MappingProxyType

from imapclient import IMAPClient, SocketTimeout
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from daemon.clock import Clock
from daemon.config import Config, Mailbox
from daemon.ingest.history import HISTORY, HISTORY_LIVE, HistoryImporter, history_envelope
from daemon.ingest.intake import Added, add_raw
from daemon.store import Store
from daemon.store.models import MailboxCursor

log = logging.getLogger(__name__)

HELPDESK_KEYWORD = b"$Helpdesk"
SEEN, ANSWERED, DELETED = b"\\Seen", b"\\Answered", b"\\Deleted"
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


@dataclass(frozen=True)
class CursorState:
    last_uid: int
    existing_through: int | None    # the highest UID found at the first connection
    existing_mail: str | None       # the rule for the mail up to it


@dataclass(frozen=True)
class Existing:
    """How one message that was already in the folder is saved."""

    status: str                     # history, history-live (new mail), pending (process)
    envelope: dict | None = None


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
    # UID -> how a message already there at the first connection is saved (this poll).
    _existing: Mapping[int, Existing] = MappingProxyType({})

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
        cursor = self._sync_uidvalidity(client, folder.uidvalidity)
        last_uid = cursor.last_uid
        self._mark_leftovers_done(client, folder, cursor)
        _take_news(client)  # from here on, any news is about mail the search may miss
        self._existing = self._plan_existing(client, cursor)
        saved = 0
        for batch in self._new_batches(client, last_uid):
            saved += self._save_batch(client, folder, batch)
        self._existing = MappingProxyType({})
        self._import_history()
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
                             cursor: CursorState) -> None:
        """Mark messages saved earlier whose marking failed (killed, disconnected).

        Mail skipped at the first connection was not taken, and is never marked.
        """
        first = 1
        if cursor.existing_mail == "skip":
            first = (cursor.existing_through or 0) + 1
        last_uid = cursor.last_uid
        if last_uid < first:
            return
        criteria: list = ["UID", f"{first}:{last_uid}"]
        if not self.mailbox.imap_done_folder:
            if not folder.keywords:
                return  # without $Helpdesk, "saved but unmarked" cannot be told apart
            criteria += ["UNKEYWORD", HELPDESK_KEYWORD.decode()]
        leftovers = [uid for uid in client.search(criteria) if first <= uid <= last_uid]
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
        existing = self._existing.get(uid)
        return add_raw(
            session, channel="imap", key=f"imap:{m.address}:{self.folder}:{uidvalidity}:{uid}",
            raw=raw, now=self.clock.now(), mailbox=m.address,
            origin=f"imap://{m.imap_user}@{m.imap_host}:{m.imap_port}/{self.folder};UID={uid}",
            status=existing.status if existing else "pending",
            envelope=existing.envelope if existing else None)

    # ------------------------------------------------------ mail already there

    def _plan_existing(self, client: IMAPClient, cursor: CursorState) -> dict[int, Existing]:
        """How each message still to be read from the first connection's mail is saved."""
        through, rule = cursor.existing_through or 0, cursor.existing_mail
        if rule not in ("archive", "process") or through <= cursor.last_uid:
            return {}
        uids = sorted(uid for uid in client.search(["UID", f"{cursor.last_uid + 1}:{through}"])
                      if cursor.last_uid < uid <= through)
        if rule == "process":
            plan = {uid: Existing("pending") for uid in uids}
        else:
            plan = self._archive_plan(client, uids)
        self._log_plan(cursor, plan)
        return plan

    def _archive_plan(self, client: IMAPClient, uids: list[int]) -> dict[int, Existing]:
        """History, but unseen, unanswered mail younger than existing_unseen_live is new
        mail: nobody has answered it yet, and it must not vanish into a closed ticket.
        (\\Answered without \\Seen: answered from a preview, unopened. Somebody did.)"""
        now = self.clock.now()
        young_since = now - self.mailbox.existing_unseen_live
        plan, candidates = {}, []
        for chunk in chunks(uids, MARK_CHUNK):
            for uid, data in client.fetch(chunk, [b"FLAGS", b"INTERNALDATE"]).items():
                arrived = _aware(data.get(b"INTERNALDATE"))
                plan[uid] = Existing(HISTORY, history_envelope(arrived, imap_uid=uid))
                flags = data.get(b"FLAGS", ())
                if SEEN not in flags and ANSWERED not in flags and arrived \
                        and arrived >= young_since:
                    candidates.append(uid)
        for uid, dated in self._dates(client, candidates).items():
            # The mail's own Date must say young too: mail copied onto a server lately
            # has a new INTERNALDATE and an old Date, and is history.
            if dated is None or young_since <= dated:
                plan[uid] = Existing(HISTORY_LIVE)
        return plan

    def _dates(self, client: IMAPClient, uids: list[int]) -> dict[int, datetime | None]:
        """UID -> its Date header (None when it has none that reads)."""
        dates: dict[int, datetime | None] = {}
        for chunk in chunks(uids, MARK_CHUNK):
            for uid, data in client.fetch(chunk, [b"BODY.PEEK[HEADER.FIELDS (DATE)]"]).items():
                header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"")
                dates[uid] = _header_date(bytes(header or b""))
        return dates

    def _log_plan(self, cursor: CursorState, plan: dict[int, Existing]) -> None:
        counts = {status: sum(e.status == status for e in plan.values())
                  for status in (HISTORY, HISTORY_LIVE, "pending")}
        window = _duration(self.mailbox.existing_unseen_live)
        log.info("%s: %s: %d message(s) already there (UIDs up to %d, rule %r): %d archived "
                 "as history, %d taken as new (%s), 0 skipped", self.label,
                 "first connection" if cursor.last_uid == 0 else "going on with the mail "
                 "already there", len(plan), cursor.existing_through, cursor.existing_mail,
                 counts[HISTORY], counts[HISTORY_LIVE] + counts["pending"],
                 f"unseen, younger than {window}" if cursor.existing_mail == "archive"
                 else "existing_mail = process")

    def _import_history(self) -> None:
        """Import the history saved (here or elsewhere) and hand the new mail found with
        it to the pipeline; renews the lease meanwhile, a large INBOX takes a while."""
        importer = HistoryImporter(self.config, self.store, self.clock)
        try:
            done = importer.import_pending(between=self._renew_lease_if_due)
        except OperationalError:
            raise
        except Exception:  # the records wait, as history, for the next poll
            log.exception("%s: importing history failed; trying again at the next poll",
                          self.label)
            return
        if done.get("new mail"):
            self._notify_saved()

    def _renew_lease_if_due(self) -> None:
        if self._lease_due():
            self._take_lease()

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

    def _sync_uidvalidity(self, client: IMAPClient, uidvalidity: int) -> CursorState:
        """Where this UIDVALIDITY was read up to. The first connection, or a changed
        UIDVALIDITY, records the highest UID there and the rule for the mail up to it."""
        with self.store.transaction() as session:
            cursor = session.scalars(select(MailboxCursor).where(self._cursor_filter())).one()
            if cursor.lease_owner != self.owner:
                raise LeaseLost()
            if cursor.uidvalidity == uidvalidity:
                return CursorState(cursor.last_uid, cursor.existing_through,
                                   cursor.existing_mail)
            previous = cursor.uidvalidity
        there = client.search(["ALL"])
        highest = max(there, default=0)
        rule = self.mailbox.existing_mail if previous is None else "archive"
        state = CursorState(highest if rule == "skip" else 0, highest, rule)
        self._record_existing(previous, uidvalidity, state)
        if previous is not None:
            log.warning("%s: UIDVALIDITY changed %s -> %s; reading the folder's mail (UIDs up "
                        "to %d) again as history, unseen mail younger than %s as new; mail "
                        "the helpdesk holds already is recognised by Message-ID",
                        self.label, previous, uidvalidity, highest,
                        _duration(self.mailbox.existing_unseen_live))
        elif rule == "skip":
            log.info("%s: first connection: %d message(s) already there (UIDs up to %d): "
                     "0 archived as history, 0 taken as new, all skipped (left unread and "
                     "unmarked)", self.label, len(there), highest)
        return state

    def _record_existing(self, previous: int | None, uidvalidity: int,
                         state: CursorState) -> None:
        known = (MailboxCursor.uidvalidity.is_(None) if previous is None
                 else MailboxCursor.uidvalidity == previous)
        with self.store.transaction() as session:
            result = session.execute(
                update(MailboxCursor)
                .where(self._cursor_filter(), MailboxCursor.lease_owner == self.owner, known)
                .values(uidvalidity=uidvalidity, last_uid=state.last_uid,
                        existing_through=state.existing_through,
                        existing_mail=state.existing_mail)
                .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            raise LeaseLost()

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


def _duration(span: timedelta) -> str:
    """SPAN as the configuration writes it: 3d, 36h, 90m, 45s."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _aware(moment: datetime | None) -> datetime | None:
    """An IMAP INTERNALDATE as an aware instant (imapclient gives local naive times)."""
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _header_date(header: bytes) -> datetime | None:
    """The date of a fetched "Date: ..." header block, or None."""
    text = header.decode("ascii", "replace").partition(":")[2].strip()
    try:
        moment = parsedate_to_datetime(text) if text else None
    except (TypeError, ValueError, IndexError):
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


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
