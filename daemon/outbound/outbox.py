"""Queue outgoing mail in the caller's transaction: build the message, store it, record it.

Callers (the conversation steps of the pipeline, the web) rely on exactly the signature
of `enqueue`; the sender job (daemon.outbound.sender) delivers what it queues.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import format_datetime, quote
from functools import lru_cache

import nh3
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.outbound.compose import compose, folded_list, header_value, mailbox
from daemon.outbound.config import outbound_config
from daemon.parse import ParsedAttachment, ParsedMail
from daemon.rules.classify import LOOP_HEADER
from daemon.store.models import OutboxMail, Ticket
from daemon.tickets import Inserts, append_message, bound_inserts

LINE_BREAKS_RE = re.compile(r"[\r\n\x00]+")
# local@domain without spaces or the characters that separate or quote addresses.
# No spaces, specials or control characters (a hostile From: may carry any byte).
_ATOM = r'[^\s\x00-\x1f\x7f@<>,;:"()\[\]\\]+'
ADDRESS_RE = re.compile(rf'{_ATOM}@{_ATOM}\.{_ATOM}')
# RFC 2045 token: what a MIME type's halves may be made of.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
# Long threads: keep the first (the thread's root) and the latest references (RFC 5322 3.6.4).
MAX_REFERENCES = 20


@dataclass(frozen=True)
class OutgoingAttachment:
    filename: str
    content_type: str
    data: bytes


def enqueue(session: Session, config: Config, *, kind: str, now: datetime,
            to: list[str], subject: str, text: str, html: str | None = None,
            ticket: Ticket | None = None, cc: list[str] = (), reply_to: str | None = None,
            from_address: str | None = None, from_name: str | None = None,
            in_reply_to: str | None = None, references: list[str] = (),
            auto_submitted: str | None = None,
            attachments: list[OutgoingAttachment] = (),
            message_kind: str = "system", record_on_ticket: bool = True,
            into: Inserts | None = None) -> OutboxMail | dict:
    """Build and queue one mail; returns the pending OutboxMail row, added to the session.

    The row is written when the session flushes (at the latest with the caller's
    commit): a sweep or a pipeline step that queues many mails writes them together.
    With INTO, or in a block where an Inserts is bound to the session (a pipeline
    record), the row and the ticket's copy are added there as plain values instead, and
    those values returned; a mail with attachments is still an ORM row.

    - From: `from_name <from_address>`; from_address defaults to the ticket's mailbox,
      else the first configured mailbox. The envelope sender is the same address.
    - Subject: when `ticket` is given, its tag `[#JAN-12]` is put in front unless present.
    - Message-ID: new, unguessable (random token) at the from_address's domain; stored
      on the OutboxMail and (when record_on_ticket) on a Message(direction="out",
      kind=message_kind) appended to the ticket, so replies to it thread.
    - In-Reply-To / References as given (References ends with in_reply_to).
    - Always our loop header (daemon.rules.classify.LOOP_HEADER); Auto-Submitted when
      `auto_submitted` is given ("auto-replied" for acknowledgements, "auto-generated"
      for notifications); Date from `now`.
    - Header values never contain CR or LF, whatever the caller passes (injection).
    - text is the text/plain part; html, when given, makes multipart/alternative;
      attachments make multipart/mixed.

    Message-IDs are stored and compared without angle brackets, as daemon.parse gives
    them; in_reply_to and references may be passed with or without. An address that
    is not one (after CR/LF removal) raises ValueError rather than being sent.
    """
    outbound = outbound_config(config)
    sender = one_line(from_address or (ticket.mailbox if ticket else None)
                      or config.mailboxes[0].address)
    name = one_line(outbound.from_name if from_name is None else from_name)
    subject = tagged_subject(one_line(subject), ticket)
    message_id = new_message_id(sender)
    parent = bare_id(in_reply_to) if in_reply_to else None
    thread = thread_references(references, parent)
    headers = _headers(sender=sender, name=name, to=to, cc=cc, reply_to=reply_to,
                       subject=subject, message_id=message_id, parent=parent, thread=thread,
                       now=now, config=config, auto_submitted=auto_submitted)
    raw = compose(headers, _body_text(text), None if html is None else _body_text(html),
                  [_attachment(a) for a in attachments])
    values = dict(kind=kind, mail_from=sender, recipients=envelope_recipients(to, cc),
                  subject=subject, message_id=message_id, raw=raw, status="pending",
                  attempts=0, next_attempt_at=now, created_at=now)
    copy = None
    if ticket is not None and record_on_ticket:
        copy = _copy(now=now, text=text, html=html, attachments=attachments,
                     sender=sender, name=name, to=to, cc=cc, reply_to=reply_to, subject=subject,
                     message_id=message_id, parent=parent, thread=thread)
    into = into if into is not None else bound_inserts(session)
    if into is not None and copy is not None and copy.attachments:
        # A copy with files is an ORM Message (its attachments need its id). The rows
        # queued so far are written first, so the ticket's messages keep their order.
        into.write(session)
        into = None
    if into is not None:
        if copy is not None:
            into.message(ticket, copy, kind=message_kind, direction="out", now=now)
        return into.add(OutboxMail, ticket=ticket, **values)
    if ticket is not None and ticket.id is None:
        session.flush()
    row = OutboxMail(ticket_id=ticket.id if ticket else None, **values)
    if copy is not None:
        # append_message adds the Message to the session only after storing attachment
        # blobs; an autoflush in between would warn about the half-attached Message.
        with session.no_autoflush:
            append_message(session, ticket, copy, kind=message_kind, direction="out", now=now)
    session.add(row)
    return row


# -- header values ----------------------------------------------------------------------------
def one_line(value: str | None) -> str:
    """A header value that cannot start another header: CR, LF and NUL become a space."""
    return LINE_BREAKS_RE.sub(" ", value or "").strip()


def bare_id(message_id: str) -> str:
    return one_line(message_id).strip().strip("<>").strip()


def tagged_subject(subject: str, ticket: Ticket | None) -> str:
    if ticket is None:
        return subject
    tag = f"[#{ticket.number}]"
    if tag.lower() in subject.lower():
        return subject
    return f"{tag} {subject}".strip()


def new_message_id(sender: str) -> str:
    """An unguessable Message-ID at the sender's domain, without angle brackets."""
    domain = sender.rpartition("@")[2] or "localhost"
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "localhost"
    # Unguessable (128 random bits), so a Message-ID quoted in a reply proves its writer
    # got our mail. Not email.utils.make_msgid: its time, pid and `random` parts make
    # the header longer than a line, and a folded Message-ID trips up some readers.
    return f"{secrets.token_hex(16)}@{domain}"


def thread_references(references, parent: str | None) -> list[str]:
    """References as given, without repeats, ending with the mail we answer."""
    thread: list[str] = []
    for reference in [*references, *([parent] if parent else [])]:
        reference = bare_id(reference)
        if reference and reference not in thread:
            thread.append(reference)
    if parent and thread[-1] != parent:
        thread.remove(parent)
        thread.append(parent)
    if len(thread) > MAX_REFERENCES:
        thread = [thread[0], *thread[-(MAX_REFERENCES - 1):]]
    return thread


def deliverable(address: str) -> bool:
    """Whether ADDRESS can be written into a header and handed to a relay."""
    try:
        _address(address or "")
    except ValueError:
        return False
    return True


def envelope_recipients(to, cc) -> list[str]:
    recipients: list[str] = []
    for address in [*to, *cc]:
        address = one_line(address)
        if address and address.lower() not in (r.lower() for r in recipients):
            recipients.append(address)
    return recipients


@lru_cache(maxsize=4096)
def _address(addr_spec: str, name: str = "") -> str:
    """One mailbox for an address header, quoted as needed; ValueError if it is none."""
    address, name = one_line(addr_spec), one_line(name)
    if not ADDRESS_RE.fullmatch(address):
        raise ValueError(f"not an email address: {addr_spec!r}")
    if not address.isascii():
        # Address() refuses a non-ASCII local part under any policy; the SMTPUTF8
        # policy takes it as header text.
        return f'"{quote(name)}" <{address}>' if name else address
    try:
        return str(Address(display_name=name, addr_spec=address))
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise ValueError(f"not an email address: {addr_spec!r} ({exc})") from None


def header_text(value: str) -> str:
    """A one-line value as a header carries it: RFC 2047 words when it needs them."""
    return header_value(one_line(value))


# -- the message -------------------------------------------------------------------------------
def _headers(*, sender: str, name: str, to, cc, reply_to: str | None, subject: str,
             message_id: str, parent: str | None, thread: list[str], now: datetime,
             config: Config, auto_submitted: str | None) -> list[str]:
    if not to:
        raise ValueError("a mail needs at least one recipient")
    _address(sender)  # validates
    headers = [f"From: {mailbox(sender, name, len('From: '))}",
               folded_list("To", [_address(a) for a in to])]
    if cc:
        headers.append(folded_list("Cc", [_address(a) for a in cc]))
    if reply_to:
        headers.append(f"Reply-To: {_address(reply_to)}")
    headers += [f"Subject: {header_value(subject, len('Subject: '))}",
                f"Date: {format_datetime(now.astimezone(config.tz))}",
                f"Message-ID: <{message_id}>"]
    if parent:
        headers.append(f"In-Reply-To: <{parent}>")
    if thread:
        headers.append(folded_list("References", [f"<{r}>" for r in thread], separator=""))
    headers.append(f"{LOOP_HEADER}: {sender}")
    if auto_submitted:
        headers.append(f"Auto-Submitted: {one_line(auto_submitted)}")
        # Outlook/Exchange: do not answer our automatic mail with an out-of-office.
        headers.append("X-Auto-Response-Suppress: All")
    return headers


def _attachment(attachment: OutgoingAttachment) -> tuple[str, str, str, bytes]:
    maintype, _, subtype = one_line(attachment.content_type).lower().partition("/")
    if (maintype in ("message", "multipart", "") or not subtype
            or not _TOKEN_RE.fullmatch(maintype) or not _TOKEN_RE.fullmatch(subtype)):
        # Stored bytes of an attached mail or report would be read as a structure by
        # the recipient's parser, and a type that is not a token cannot be written:
        # ship them as an opaque file.
        maintype, subtype = "application", "octet-stream"
    return one_line(attachment.filename) or "attachment", maintype, subtype, attachment.data


def _body_text(text: str) -> str:
    text = (text or "").replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


# -- the ticket's copy ------------------------------------------------------------------------
def _copy(*, now: datetime, text: str, html: str | None, attachments, sender: str,
          name: str, to, cc, reply_to: str | None, subject: str, message_id: str,
          parent: str | None, thread: list[str]) -> ParsedMail:
    """The mail as the ticket's conversation keeps it, as a parsed incoming mail would be.

    Built from the values the headers were made of (already validated and on one line),
    not read back from the built message, which parses every header again.
    """
    return ParsedMail(
        subject=subject, from_email=sender.lower(), from_name=name,
        to=[one_line(a).lower() for a in to], cc=[one_line(a).lower() for a in cc],
        reply_to=[one_line(reply_to).lower()] if reply_to else [],
        message_id=message_id,
        in_reply_to=[parent] if parent else [],
        references=list(thread),
        date=now, text=_body_text(text),
        # Our own templates, but they may quote what a customer wrote.
        html=nh3.clean(html) if html is not None else None,
        attachments=[ParsedAttachment(filename=a.filename, content_type=a.content_type,
                                      data=a.data) for a in attachments],
    )
