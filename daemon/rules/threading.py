"""Find the ticket a mail belongs to: subject tag first, then In-Reply-To/References.

Neither match is a key to the ticket. A tag is easy to type or guess, and a customer's
Message-ID travels wherever the customer's mail went: a mail matched either way from a
sender with no tie to the ticket (daemon.tickets.is_tied: requester, on To or Cc of one
of its messages, ours included, a technician, the client's domains) is held for the
coordinator.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from daemon.parse import ParsedMail
from daemon.store.models import Client, Message, Participant, Technician, Ticket
from daemon.tickets import is_tied, read_rows, reading


@dataclass(frozen=True)
class ThreadMatch:
    ticket: Ticket | None       # or the history importer's record of one
    via: str | None = None      # "tag", "reference" or None for a new ticket
    held: bool = False          # matched, but the sender has no tie to the ticket


@lru_cache(maxsize=16)
def tag_pattern(prefix: str) -> re.Pattern[str]:
    # Mail clients fold, re-encode and pad subjects: tolerate spaces inside the tag.
    return re.compile(rf"\[\s*#\s*{re.escape(prefix)}\s*-\s*(\d{{1,12}})\s*\]", re.IGNORECASE)


def tagged_number(subject: str, prefix: str) -> str | None:
    match = tag_pattern(prefix).search(subject or "")
    return f"{prefix}-{int(match.group(1))}" if match else None


# Built once, its list bound at execution (see daemon/tickets.py).
_MESSAGES = Message.__table__
_REFERENCED = select(_MESSAGES.c.message_id, _MESSAGES.c.ticket_id).where(
    _MESSAGES.c.message_id.in_(bindparam("ids", expanding=True)))


class Threads(Protocol):
    """Where the tickets a mail may belong to are looked up.

    The store for live mail (`StoreThreads`); a batch of imported history and the store
    for the history importer (daemon.ingest.history_filing), so both thread by the same
    rules (`match_thread`).
    """

    def ticket_numbered(self, number: str) -> Any | None:
        """The ticket with NUMBER, if any."""

    def ticket_of_message_ids(self, ids: list[str]) -> Any | None:
        """The ticket holding a message of the first of IDS that any ticket holds."""

    def tied(self, ticket: Any, address: str) -> bool:
        """Whether ADDRESS may add to TICKET unheld (see daemon.tickets.is_tied)."""


def referenced_ids(mail: ParsedMail) -> list[str]:
    """The Message-IDs MAIL answers, newest first: In-Reply-To, then References backwards."""
    return list(dict.fromkeys([*mail.in_reply_to, *reversed(mail.references)]))[:100]


class StoreThreads:
    """The store's tickets, for live mail."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def ticket_numbered(self, number: str) -> Ticket | None:
        return self.session.scalar(select(Ticket).where(Ticket.number == number))

    def ticket_of_message_ids(self, ids: list[str]) -> Ticket | None:
        rows = read_rows(self.session, _REFERENCED, {"ids": ids}, Message).all()
        by_id = {message_id: ticket_id for message_id, ticket_id in rows}
        for message_id in ids:
            if message_id in by_id:
                return self.session.get(Ticket, by_id[message_id])
        return None

    def tied(self, ticket: Ticket, address: str) -> bool:
        # Neither a tag nor a reference proves more than this: a customer's own
        # Message-ID travels wherever the customer's mail went (forwards, list archives,
        # CC), and a tag is a number. Mail we sent about the ticket is on it with its To
        # and Cc, so an address we wrote to is tied: answering our mail to it joins.
        return is_tied(self.session, ticket, address)


def referenced_ticket(session: Session, mail: ParsedMail) -> Ticket | None:
    """The ticket holding the newest message this mail replies to or references."""
    ids = referenced_ids(mail)
    return StoreThreads(session).ticket_of_message_ids(ids) if ids else None


def find_thread(session: Session, mail: ParsedMail, prefix: str) -> ThreadMatch:
    """The ticket MAIL belongs to, if any.

    It reads messages, tickets (with their client and assignee), participants and
    technicians; while none of those is pending, no flush could change the answer, so
    the record's pending rows (the claimed raw record) wait for the next flush.
    """
    with reading(session, Message, Ticket, Client, Technician, Participant):
        return match_thread(mail, prefix, StoreThreads(session))


def match_thread(mail: ParsedMail, prefix: str, threads: Threads) -> ThreadMatch:
    """The ticket MAIL belongs to among THREADS: the rules every mail is threaded by."""
    number = tagged_number(mail.subject, prefix)
    ids = referenced_ids(mail)
    referenced = threads.ticket_of_message_ids(ids) if ids else None
    if number:
        # A reply mostly references a message of the very ticket its tag names: numbers
        # are unique, so that ticket is the one the query would return.
        ticket = referenced if referenced is not None and referenced.number == number \
            else threads.ticket_numbered(number)
        if ticket is not None:
            return ThreadMatch(ticket, "tag", held=not threads.tied(ticket, mail.from_email))
    if referenced is not None:
        return ThreadMatch(referenced, "reference",
                           held=not threads.tied(referenced, mail.from_email))
    return ThreadMatch(None)
