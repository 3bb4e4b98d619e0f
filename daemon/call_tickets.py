"""A ticket opened from a call record: what the caller told the technician who answered.

It is made the way the pipeline makes a ticket for mail (`open_ticket`, the first message,
`route_new_ticket` for the rules and the SLA clocks), with channel `phone`; the call is
linked to it and an `opened_from_call` event names the technician and the call. A caller
who gave an address gets the usual acknowledgement with the ticket number; one who did
not is the ticket's requester by number, as on a callback ticket.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.conversation import may_auto_reply, notify_assignee, send_template
from daemon.parse import ParsedMail
from daemon.rules.callbacks import call_detail
from daemon.rules.routing import route_new_ticket
from daemon.store.models import Call, Client, Ticket
from daemon.tickets import append_message, open_ticket, record_event

log = logging.getLogger(__name__)
DIRECTION_WORDS = {"in": "przychodzące", "out": "wychodzące", "internal": "wewnętrzne"}


@dataclass(frozen=True)
class PhoneReport:
    """What the technician wrote down during or after the call."""

    subject: str
    description: str
    name: str = ""
    email: str = ""                  # "" when the caller gave none: the number stands in
    client: str | None = None        # a configured client's name; None: as the address says
    category: str | None = None      # one of the web form's category keys


class CallHasTicket(Exception):
    """The call is on a ticket already (one opened from it, or its callback ticket)."""

    def __init__(self, number: str):
        super().__init__(number)
        self.number = number


def external_number(call: Call) -> str | None:
    """The other end: who called in, or the number called out to (None: withheld)."""
    return call.callee if call.direction == "out" else call.caller


def may_open_ticket(call: Call) -> bool:
    """Only a conversation that happened gives a technician something to write down; a
    missed call has its callback ticket instead."""
    return call.ticket_id is None and call.outcome == "answered"


def locked_call(session: Session, call_id: int) -> Call | None:
    """The call, its row locked until the transaction ends: a double click makes one ticket.

    (Only the calls row: FOR UPDATE cannot take the outer-joined client and technician.)
    """
    if session.scalar(select(Call.id).where(Call.id == call_id).with_for_update()) is None:
        return None
    return session.get(Call, call_id, populate_existing=True)


def open_ticket_from_call(session: Session, config: Config, call: Call, report: PhoneReport, *,
                          actor: str, actor_name: str, now: datetime) -> Ticket:
    """A new `phone` ticket for what was said on CALL, routed and on the clocks like any."""
    if call.ticket is not None:
        raise CallHasTicket(call.ticket.number)
    mail = phone_mail(config, call, report, actor=actor, actor_name=actor_name)
    client = session.scalar(select(Client).where(Client.name == report.client)) \
        if report.client else None
    ticket = open_ticket(session, config, mail, channel="phone", mailbox=None, now=now,
                         client=client or call.client)
    ticket.requester_email = ticket.requester_email or external_number(call) or ""
    ticket.category = report.category or None
    message = append_message(session, ticket, mail, kind="customer", direction="in", now=now)
    call.ticket = ticket
    record_event(session, ticket, "opened_from_call", now, actor=actor, **call_detail(call))
    route_new_ticket(session, config, ticket, mail, now)
    if ticket.assignee is not None:
        notify_assignee(session, config, ticket, now, message=message)
    if report.email and may_auto_reply(session, config, report.email, now):
        send_template(session, config, ticket, "ack", kind="ack", now=now, to=[report.email],
                      auto_submitted="auto-generated", requester_name=ticket.requester_name)
    log.info("%s opened by %s from call %s/%s (%s)", ticket.number, actor, call.source,
             call.call_id, external_number(call) or "withheld")
    return ticket


def phone_mail(config: Config, call: Call, report: PhoneReport, *, actor: str,
               actor_name: str) -> ParsedMail:
    """The report as the first message: the caller's words, then where they came from."""
    number = external_number(call)
    started = call.started_at.astimezone(config.tz).strftime("%Y-%m-%d %H:%M:%S")
    direction = DIRECTION_WORDS.get(call.direction, call.direction)
    text = "\n".join([report.description, "", "-- ", "Zgłoszenie telefoniczne",
                      f"Połączenie: {started} ({direction}), {number or 'numer zastrzeżony'}",
                      f"Przyjął(-ęła): {actor_name or actor} <{actor}>"]) + "\n"
    return ParsedMail(subject=report.subject, from_email=report.email.lower(),
                      from_name=report.name or ("" if report.email else number or ""),
                      to=[], cc=[], reply_to=[],
                      message_id=None, in_reply_to=[], references=[], date=call.started_at,
                      text=text, html=None)
