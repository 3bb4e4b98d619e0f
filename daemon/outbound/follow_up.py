"""Which earlier mail a notice to staff follows, so their mail client threads it.

A technician's client files a forwarded customer reply, an SLA notice or a handover under
the assignment notice only when the new mail names it: In-Reply-To the latest mail we
sent that person about the ticket, References the first one (the thread's root) and the
latest one to each recipient (RFC 5322 3.6.4). Threaded mail also helps the technician
prove who they are: answering any of these mails quotes a Message-ID we sent only to
them (daemon.rules.mail_auth).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from daemon.store.models import OutboxMail, Ticket
from daemon.tickets import read_rows

# Built once, bound at execution (see daemon/tickets.py `read_rows`). A ticket has tens of
# mails, not thousands: reading their recipients is cheaper than a JSON query that
# SQLite and PostgreSQL would each write their own way.
_OUTBOX = OutboxMail.__table__
_SENT_ABOUT = (select(_OUTBOX.c.message_id, _OUTBOX.c.recipients)
               .where(_OUTBOX.c.ticket_id == bindparam("ticket")).order_by(_OUTBOX.c.id))


@dataclass(frozen=True)
class Thread:
    """In-Reply-To and References for a new mail; empty when it starts a thread."""

    parent: str | None = None
    references: tuple[str, ...] = ()


def follow_up(session: Session, ticket: Ticket | None, recipients: Iterable[str]) -> Thread:
    """The thread a new mail about TICKET to RECIPIENTS continues.

    Only mail already written counts: a notice queued in the same transaction as this
    one (a handover and an assignment from one technician's mail) is not yet a row.
    """
    if ticket is None or ticket.id is None:
        return Thread()
    wanted = {r.strip().lower() for r in recipients}
    earlier: list[tuple[str, set[str]]] = []     # oldest first: (message_id, its readers)
    for message_id, sent_to in read_rows(session, _SENT_ABOUT, {"ticket": ticket.id},
                                         OutboxMail):
        readers = {r.strip().lower() for r in sent_to or ()} & wanted
        if readers:
            earlier.append((message_id, readers))
    if not earlier:
        return Thread()
    latest = {reader: message_id for message_id, readers in earlier for reader in readers}
    chain = [earlier[0][0], *(m for m, _ in earlier[1:] if m in latest.values())]
    return Thread(parent=earlier[-1][0], references=tuple(dict.fromkeys(chain)))
