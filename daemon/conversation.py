"""The email conversation around a ticket: acknowledgements, notices, relays, commands.

Pipeline steps run inside the record's transaction, so every mail they queue is written
together with the ticket change that caused it. The ticket actions (assign, change tier,
priority or status, internal notes, attaching or splitting held mail) are shared with the web.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.outbound.config import outbound_config
from daemon.outbound.follow_up import follow_up
from daemon.outbound.outbox import OutgoingAttachment, deliverable, enqueue
from daemon.outbound.render import render_mail
from daemon.rules.commands import HELP, Command, parse_commands
from daemon.rules.quotes import REPLY_ABOVE, strip_quoted, strip_signature
from daemon.parse import ParsedMail
from daemon.rules.routing import route_new_ticket
from daemon.ratings import rating_links
from daemon.rules.sla import follow_status, refresh_clocks
from daemon.rules.threading import ThreadMatch, tag_pattern
from daemon.store.models import AutoReplyLog, Blob, Event, Message, RawMessage, Technician, Ticket
from daemon.tickets import (Inserts, add_participant, bound_inserts, is_technician,
                            move_message, open_ticket, read_rows, reading, record_event,
                            refresh_held)

log = logging.getLogger(__name__)
BRAND = "Jantar Helpdesk"
# Mail to staff about a ticket: each follows the last mail its readers got about the
# ticket (daemon.outbound.follow_up), so their client threads it under the first notice.
STAFF_NOTICES = frozenset({"assigned", "forward", "tier_handover", "sla_warning", "sla_breach",
                           "coordinator_new", "coordinator_flood"})


# -- loop protection -------------------------------------------------------------------
_AUTO_LOG = AutoReplyLog.__table__
_AUTO_REPLIES = select(func.count(_AUTO_LOG.c.id)).where(  # built once: see tickets.py
    _AUTO_LOG.c.address == bindparam("address"), _AUTO_LOG.c.sent_at > bindparam("since"))


def may_auto_reply(session: Session, config: Config, address: str, now: datetime, *,
                   limit: int | None = None) -> bool:
    """Count an automatic mail to ADDRESS, unless the hourly limit is reached (then False).

    LIMIT, when given, is a stricter limit for this mail: 1 sends it only when no
    automatic mail went to ADDRESS in the last hour (one notice for a burst of mail).
    """
    address = address.lower()
    rows = bound_inserts(session)
    since = now - timedelta(hours=1)
    # A pending entry is flushed first, and counted.
    sent = read_rows(session, _AUTO_REPLIES, {"address": address, "since": since},
                     AutoReplyLog).scalar()
    if rows is not None:  # and the entries of this record not yet written
        sent += sum(1 for row in rows.pending(AutoReplyLog)
                    if row["address"] == address and row["sent_at"] > since)
    allowed = outbound_config(config).auto_reply_limit_per_hour
    if sent >= (allowed if limit is None else min(limit, allowed)):
        log.warning("<%s> automatic mail suppressed: %d in the last hour", address, sent)
        return False
    if rows is not None:  # a row written with the record's other rows: no ORM object to flush
        rows.add(AutoReplyLog, address=address, sent_at=now)
    else:
        session.add(AutoReplyLog(address=address, sent_at=now))
    return True


# -- sending ----------------------------------------------------------------------------
def ticket_url(config: Config, ticket: Ticket) -> str:
    return f"{config.web_url}/tickets/{ticket.number}"


def _customer_recipients(config: Config, ticket: Ticket) -> tuple[list[str], list[str]]:
    staff = {t.email for t in config.technicians} | config.own_addresses
    cc = [p.email for p in ticket.participants
          if p.role == "cc" and p.email not in staff and p.email != ticket.requester_email]
    return [ticket.requester_email], cc


def _last_customer_message_id(ticket: Ticket) -> str | None:
    ids = [m.message_id for m in ticket.messages
           if m.direction == "in" and m.kind == "customer" and m.message_id]
    return ids[-1] if ids else None


def send_template(session: Session, config: Config, ticket: Ticket | None, template: str, *,
                  kind: str, to: list[str], now: datetime, language: str | None = None,
                  cc: list[str] = (), from_name: str = BRAND, auto_submitted: str | None = None,
                  in_reply_to: str | None = None, attachments=(), message_kind: str = "system",
                  mailbox: str | None = None, into: Inserts | None = None, **context):
    """Render TEMPLATE in the ticket's language and queue it From the ticket's mailbox.

    Addresses no relay would take (``root@localhost``, garbage from a broken header) are
    left out; with no recipient left nothing is queued and None is returned. A staff
    notice (STAFF_NOTICES) answering no mail of its own follows the last mail its
    recipients got about the ticket. INTO: see `enqueue`.
    """
    to, cc = [a for a in to if deliverable(a)], [a for a in cc if deliverable(a)]
    if not to:
        log.info("%s: no deliverable recipient for %s", ticket.number if ticket else "-", kind)
        return None
    language = language or (ticket.language if ticket else config.language)
    mailbox = config.mailbox_or_default(mailbox or (ticket.mailbox if ticket else None)).address
    context.setdefault("ticket", ticket)
    rendered = render_mail(config, template, language, web_url=config.web_url,
                           ticket_url=ticket_url(config, ticket) if ticket else config.web_url,
                           reply_above=REPLY_ABOVE, mailbox=mailbox, **context)
    references = [in_reply_to] if in_reply_to else []
    if in_reply_to is None and kind in STAFF_NOTICES:
        thread = follow_up(session, ticket, [*to, *cc])
        in_reply_to, references = thread.parent, list(thread.references)
    return enqueue(session, config, kind=kind, now=now, to=to, cc=list(cc),
                   subject=rendered.subject, text=rendered.text, html=rendered.html,
                   ticket=ticket, from_address=mailbox,
                   from_name=from_name, in_reply_to=in_reply_to,
                   references=references, auto_submitted=auto_submitted,
                   attachments=list(attachments), message_kind=message_kind, into=into)


def _files(session: Session, config: Config, message: Message | None,
           max_bytes: int | None = None) -> tuple[list[OutgoingAttachment], list[dict]]:
    """A message's stored files: attached up to MAX_BYTES each, as links to the web above it."""
    attached, linked = [], []
    for stored in message.attachments if message else []:
        blob = None
        if stored.blob_sha256 and (max_bytes is None or stored.size <= max_bytes):
            # Only a file small enough to attach is loaded (not a 25 MB one to be linked).
            with reading(session, Blob):  # blob rows are never pending ORM objects
                blob = session.get(Blob, stored.blob_sha256)
        if blob is not None:
            attached.append(OutgoingAttachment(stored.filename, stored.content_type, blob.data))
        else:
            if stored.id is None:
                session.flush()  # a link names the stored file by its id
            linked.append({"filename": stored.filename, "size": stored.size,
                           "url": f"{ticket_url(config, message.ticket)}/attachments/{stored.id}"})
    return attached, linked


# -- ticket actions (shared with the web) -------------------------------------------------
def find_technician(session: Session, who: str) -> Technician | list[Technician] | None:
    """A technician by address, or by a short name (first name, surname, local part)."""
    who = who.strip().lower()
    active = list(session.scalars(select(Technician).where(Technician.active)))
    exact = [t for t in active if t.email == who]
    if exact:
        return exact[0]
    matches = [t for t in active if who in (t.email.split("@")[0], *t.name.lower().split(),
                                            t.name.lower())]
    return matches[0] if len(matches) == 1 else (matches or None)


def notify_assignee(session: Session, config: Config, ticket: Ticket, now: datetime,
                    message: Message | None = None) -> None:
    first = message or next((m for m in ticket.messages if m.direction == "in"), None)
    attached, linked = _files(session, config, first, config.tickets.attach_max_bytes)
    send_template(session, config, ticket, "assigned", kind="assigned", now=now,
                  to=[ticket.assignee.email], language=config.language, attachments=attached,
                  auto_submitted="auto-generated", linked=linked, first_message=first,
                  technician=ticket.assignee)


def assign(session: Session, config: Config, ticket: Ticket, technician: Technician, *,
           actor: str, now: datetime) -> None:
    ticket.assignee = technician
    ticket.tier = technician.tier
    if ticket.status == "new":
        ticket.status = "open"
    ticket.updated_at = now
    record_event(session, ticket, "assigned", now, actor=actor, assignee=technician.email,
                 tier=technician.tier)
    refresh_clocks(session, config, ticket, now, reason="assigned")  # the tier may have changed
    notify_assignee(session, config, ticket, now)


def change_tier(session: Session, config: Config, ticket: Ticket, tier: str, *, actor: str,
                now: datetime) -> None:
    previous = ticket.tier
    ticket.tier, ticket.updated_at = tier, now
    if ticket.assignee and ticket.assignee.tier != tier:
        ticket.assignee = None  # the person worked at the old tier; the new tier picks it up
    record_event(session, ticket, "tier_changed", now, actor=actor, previous=previous, tier=tier)
    refresh_clocks(session, config, ticket, now, reason="tier_changed")
    team = [t.email for t in session.scalars(select(Technician).where(
        Technician.active, Technician.tier == tier, Technician.role == "technician"))]
    team = team or [t.email for t in config.coordinators]
    if team:
        send_template(session, config, ticket, "tier_handover", kind="tier_handover", now=now,
                      to=team, language=config.language, auto_submitted="auto-generated",
                      previous_tier=previous, actor=actor)


def change_priority(session: Session, config: Config, ticket: Ticket, priority: str, *,
                    actor: str, now: datetime) -> None:
    record_event(session, ticket, "priority_changed", now, actor=actor,
                 previous=ticket.priority, priority=priority)
    ticket.priority, ticket.updated_at = priority, now
    refresh_clocks(session, config, ticket, now, reason="priority_changed")


def change_contract(session: Session, config: Config, ticket: Ticket, contract: str, *,
                    actor: str, now: datetime) -> None:
    """Put the ticket under another contract; its clocks are recomputed from arrival."""
    record_event(session, ticket, "contract_changed", now, actor=actor,
                 previous=ticket.contract, contract=contract)
    ticket.contract, ticket.updated_at = contract, now
    refresh_clocks(session, config, ticket, now, reason="contract_changed")


def change_status(session: Session, config: Config, ticket: Ticket, status: str, *, actor: str,
                  now: datetime) -> None:
    if status == ticket.status:
        return
    previous = ticket.status
    record_event(session, ticket, "status_changed", now, actor=actor, previous=previous,
                 status=status)
    ticket.status, ticket.updated_at = status, now
    # Sets resolved_at on resolve; pauses, resumes or stops the SLA clocks.
    follow_status(session, config, ticket, previous, now)
    if status == "resolved":
        to, cc = _customer_recipients(config, ticket)
        send_template(session, config, ticket, "resolved", kind="resolved", now=now, to=to, cc=cc,
                      auto_submitted="auto-generated", in_reply_to=_last_customer_message_id(ticket),
                      reopen_days=config.tickets.reopen_days,
                      rating_links=rating_links(config, ticket, now))


def add_internal_note(session: Session, ticket: Ticket, text: str, *, author_email: str,
                      author_name: str = "", now: datetime) -> Message:
    """A note for staff, kept on the ticket and mailed to no customer (like `#internal`)."""
    # direction "in" as for an #internal mail: it reached the helpdesk, it did not leave it.
    note = Message(ticket=ticket, direction="in", kind="internal", from_email=author_email,
                   from_name=author_name, subject=ticket.subject, text=text.replace("\x00", ""),
                   sent_at=now, created_at=now)
    session.add(note)
    ticket.message_count = (ticket.message_count or 0) + 1
    ticket.updated_at = now
    record_event(session, ticket, "internal_note", now, actor=author_email)
    return note


# -- held messages: the coordinator's decision ------------------------------------------
def attach_held(session: Session, config: Config, message: Message, *, actor: str,
                now: datetime) -> None:
    """Accept a held message on its ticket: its sender joins the conversation (CC).

    A held mail whose From names a staff member never proved who wrote it: accepted, it
    is kept as an internal note. Its commands do not run and nothing of it is relayed;
    the coordinator acts on it from the ticket page, or its writer answers our notice.
    """
    ticket = message.ticket
    message.held = False
    refresh_held(ticket)
    staff = is_technician(session, message.from_email)
    if staff:
        message.kind = "internal"
    else:
        add_participant(session, ticket, message.from_email, message.from_name)
    record_event(session, ticket, "held_attached", now, actor=actor, email=message.from_email,
                 message_id=message.message_id, internal=staff)
    if message.kind == "customer":
        forward_customer_message(session, config, ticket, message, now)


def split_held(session: Session, config: Config, message: Message, *, actor: str,
               now: datetime) -> Ticket:
    """Move a held message into a new ticket of its own, requested by its sender.

    The new ticket takes nobody from the held mail's CC: a guessed ticket tag must not
    put the old ticket's people on a stranger's conversation, nor the other way round.
    """
    original = message.ticket
    subject = tag_pattern(config.ticket_prefix).sub("", message.subject or "")
    mail = ParsedMail(subject=" ".join(subject.split()), from_email=message.from_email,
                      from_name=message.from_name, to=list(message.to), cc=[], reply_to=[],
                      message_id=message.message_id, in_reply_to=[], references=[],
                      date=message.sent_at, text=message.text, html=message.html)
    raw = session.get(RawMessage, message.raw_id) if message.raw_id else None
    # Held mail only comes from the mail pipeline, which files everything as "email".
    ticket = open_ticket(session, config, mail, channel="email",
                         mailbox=raw.mailbox if raw else original.mailbox, now=now)
    message.held = False
    move_message(session, message, ticket, now)
    record_event(session, original, "held_split", now, actor=actor, email=message.from_email,
                 message_id=message.message_id, new_ticket=ticket.number)
    record_event(session, ticket, "split_from", now, actor=actor, original=original.number)
    route_new_ticket(session, config, ticket, mail, now)
    if message.kind == "customer" and may_auto_reply(session, config, ticket.requester_email, now):
        send_template(session, config, ticket, "ack", kind="ack", now=now,
                      to=[ticket.requester_email], auto_submitted="auto-replied",
                      in_reply_to=message.message_id, requester_name=ticket.requester_name)
    return ticket


def apply_command(session: Session, config: Config, ticket: Ticket, command: Command, *,
                  actor: str, now: datetime) -> None:
    if command.name == "resolve":
        change_status(session, config, ticket, "resolved", actor=actor, now=now)
    elif command.name == "wait":
        change_status(session, config, ticket, "waiting", actor=actor, now=now)
    elif command.name == "tier":
        change_tier(session, config, ticket, command.argument, actor=actor, now=now)
    elif command.name == "priority":
        change_priority(session, config, ticket, command.argument, actor=actor, now=now)
    elif command.name == "assign":
        assign(session, config, ticket, find_technician(session, command.argument),
               actor=actor, now=now)
    record_event(session, ticket, "command", now, actor=actor, line=command.line)


# -- pipeline steps ---------------------------------------------------------------------
def form_link(config: Config, mail) -> str:
    query = {"email": mail.from_email, "name": mail.from_name, "subject": mail.subject}
    return f"{config.web_url}/?{urlencode({k: v for k, v in query.items() if v})}"


def apply_mailbox_policy(intake) -> None:
    """On a `new_mail = "form"` mailbox new problems are sent to the web form, not ticketed."""
    mailbox = intake.config.mailbox_or_default(intake.raw.mailbox)
    if intake.ticket is not None or intake.kind == "technician" or mailbox.new_mail != "form" \
            or intake.raw.channel == "web":  # the form itself: never answer it with a form link
        return
    intake.raw.status, intake.done = "processed", True
    intake.raw.reason = "new mail on a form-only mailbox: answered with a link to the web form"
    if intake.automatic or not may_auto_reply(intake.session, intake.config,
                                              intake.mail.from_email, intake.now):
        intake.raw.reason = "new mail on a form-only mailbox: not answered (automatic or limit)"
        return
    send_template(intake.session, intake.config, None, "form_invite", kind="form_invite",
                  now=intake.now, to=[intake.mail.from_email], mailbox=mailbox.address,
                  language=mailbox.language or intake.config.language,
                  auto_submitted="auto-replied", in_reply_to=intake.mail.message_id,
                  form_url=form_link(intake.config, intake.mail), mail=intake.mail)
    log.info("<%s> new mail on form-only %s: invited to the web form", intake.mail.message_id,
             mailbox.address)


def reopen_or_split(intake) -> None:
    """A customer reply to a resolved ticket reopens it within the window, else opens a new one."""
    ticket = intake.ticket
    if ticket is None or ticket.status not in ("resolved", "closed") or intake.kind != "customer" \
            or intake.match.held or intake.unproven_staff:  # held where it landed instead
        return
    window = timedelta(days=intake.config.tickets.reopen_days)
    if ticket.status == "resolved" and ticket.resolved_at and intake.now - ticket.resolved_at <= window:
        record_event(intake.session, ticket, "reopened", intake.now, actor=intake.mail.from_email)
        ticket.status = "open"
        # Clears resolved_at; the resolved stretch counts as a pause of the resolution clock.
        follow_status(intake.session, intake.config, ticket, "resolved", intake.now)
        return
    intake.notes["follows"] = ticket
    intake.ticket, intake.match = None, ThreadMatch(None)


def converse(intake) -> None:
    """What the conversation does once the mail is filed on its ticket."""
    if intake.message.held:  # the coordinator decides first
        if intake.flood is not None and intake.created:
            _notify_coordinators_of_flood(intake)
        elif intake.unproven_staff and not intake.automatic:
            _tell_staff_of_held_mail(intake)
        return
    if intake.created:
        _new_ticket(intake)
    elif intake.kind == "technician":
        _technician_mail(intake)
    elif intake.kind == "customer":
        _customer_mail(intake)


def _new_ticket(intake) -> None:
    session, config, ticket, now = intake.session, intake.config, intake.ticket, intake.now
    previous = intake.notes.get("follows")
    if previous is not None:
        ticket.linked_ticket_id = previous.id
        record_event(session, ticket, "follows", now, previous=previous.number)
    if intake.kind == "customer" and not intake.automatic:
        _acknowledge(intake)
    if ticket.assignee is not None:
        notify_assignee(session, config, ticket, now, message=intake.message)
    elif config.tickets.coordinator_digest is None:
        _notify_coordinators(intake)


def _acknowledge(intake) -> None:
    ticket = intake.ticket
    if not may_auto_reply(intake.session, intake.config, ticket.requester_email, intake.now):
        record_event(intake.session, ticket, "ack_suppressed", intake.now,
                     reason="automatic mail limit per hour reached")
        return
    send_template(intake.session, intake.config, ticket, "ack", kind="ack", now=intake.now,
                  to=[ticket.requester_email], auto_submitted="auto-replied",
                  in_reply_to=intake.mail.message_id, requester_name=ticket.requester_name,
                  follows=intake.notes.get("follows"))


def _notify_coordinators(intake) -> None:
    coordinators = [t.email for t in intake.config.coordinators]
    if not coordinators:
        log.warning("%s: no coordinator configured to hear of it", intake.ticket.number)
        return
    attached, linked = _files(intake.session, intake.config, intake.message,
                              intake.config.tickets.attach_max_bytes)
    send_template(intake.session, intake.config, intake.ticket, "coordinator_new",
                  kind="coordinator_new", now=intake.now, to=coordinators,
                  language=intake.config.language, auto_submitted="auto-generated",
                  attachments=attached, linked=linked, message=intake.message,
                  help_lines=HELP)
    record_event(intake.session, intake.ticket, "coordinator_notified", intake.now)


def _notify_coordinators_of_flood(intake) -> None:
    """One notice for a whole flood: its bundle, and the first mail held in it (no files)."""
    coordinators = [t.email for t in intake.config.coordinators]
    if not coordinators:
        log.warning("%s: no coordinator configured to hear of a flood", intake.ticket.number)
        return
    send_template(intake.session, intake.config, intake.ticket, "coordinator_flood",
                  kind="coordinator_flood", now=intake.now, to=coordinators,
                  language=intake.config.language, auto_submitted="auto-generated",
                  sender=intake.flood.sender, limit=intake.flood.limit, message=intake.message)
    record_event(intake.session, intake.ticket, "coordinator_notified", intake.now,
                 flood=intake.flood.sender)


def _tell_staff_of_held_mail(intake) -> None:
    """A short mail to the staff address a held mail named: it was held, and a reply to
    this mail counts. One an hour at most: a burst of forged mail makes one notice."""
    session, config, now = intake.session, intake.config, intake.now
    address = intake.mail.from_email.lower()
    if not may_auto_reply(session, config, address, now, limit=1):
        return
    send_template(session, config, intake.ticket, "staff_held", kind="staff_held", now=now,
                  to=[address], language=config.language, auto_submitted="auto-replied",
                  in_reply_to=intake.mail.message_id, address=address,
                  held_subject=intake.mail.subject)


def _customer_mail(intake) -> None:
    forward_customer_message(intake.session, intake.config, intake.ticket, intake.message,
                             intake.now)


def forward_customer_message(session: Session, config: Config, ticket: Ticket, message: Message,
                             now: datetime) -> None:
    """A customer's message wakes a waiting ticket and goes to its technician (or coordinators)."""
    if ticket.status == "waiting":
        change_status(session, config, ticket, "open", actor=message.from_email, now=now)
    staff = [ticket.assignee.email] if ticket.assignee else [t.email for t in config.coordinators]
    if not staff:
        return
    attached, linked = _files(session, config, message, config.tickets.attach_max_bytes)
    sender = message.from_name or message.from_email
    send_template(session, config, ticket, "forward", kind="forward", now=now, to=staff,
                  language=config.language, from_name=f"{sender} via {BRAND}",
                  attachments=attached, linked=linked, message=message,
                  text=strip_quoted(message.text))


def _technician_mail(intake) -> None:
    session, config, ticket, mail, now = (intake.session, intake.config, intake.ticket,
                                          intake.mail, intake.now)
    parsed = parse_commands(strip_quoted(mail.text))
    for command in parsed.commands:
        if command.name == "assign" and not isinstance(find_technician(session, command.argument),
                                                       Technician):
            parsed.errors.append(f"{command.line!r}: no single technician matches "
                                 f"{command.argument!r}")
    if parsed.errors:
        _reject_commands(intake, parsed.errors)
        return
    # The relay is signed by us (name, helpdesk, ticket): the technician's own signature
    # would sign it twice, and give the customer the direct line the mailbox stands for.
    body = strip_signature(parsed.body, config.language)
    if parsed.has("internal"):
        intake.message.kind = "internal"
    elif body.strip():
        _relay_to_customer(intake, body)  # before #resolve, so the answer comes first
    for command in parsed.commands:
        apply_command(session, config, ticket, command, actor=mail.from_email, now=now)


def _reject_commands(intake, errors: list[str]) -> None:
    intake.message.kind = "internal"  # kept on the ticket, relayed to nobody
    record_event(intake.session, intake.ticket, "commands_rejected", intake.now,
                 actor=intake.mail.from_email, errors=errors)
    if may_auto_reply(intake.session, intake.config, intake.mail.from_email, intake.now):
        send_template(intake.session, intake.config, intake.ticket, "command_error",
                      kind="command_error", now=intake.now, to=[intake.mail.from_email],
                      language=intake.config.language, auto_submitted="auto-replied",
                      in_reply_to=intake.mail.message_id, errors=errors, help_lines=HELP)


def _relay_to_customer(intake, body: str) -> None:
    attachments, _too_large = _files(intake.session, intake.config, intake.message)
    relay_to_customer(intake.session, intake.config, intake.ticket, body,
                      author_email=intake.mail.from_email, author_name=intake.mail.from_name,
                      attachments=attachments, now=intake.now)


def relay_to_customer(session: Session, config: Config, ticket: Ticket, body: str, *,
                      author_email: str, author_name: str = "",
                      attachments: list[OutgoingAttachment] = (), now: datetime):
    """Send a technician's answer to the requester and CC, From the ticket's mailbox.

    The mail path (a technician's reply) and the web's reply form both come here; the
    first answer counts as the ticket's first response.
    """
    technician = session.scalar(select(Technician).where(Technician.email == author_email.lower()))
    name = technician.name if technician else (author_name or "Jantar")
    to, cc = _customer_recipients(config, ticket)
    queued = send_template(session, config, ticket, "relay", kind="relay", now=now, to=to, cc=cc,
                           from_name=f"{name} ({BRAND})",
                           in_reply_to=_last_customer_message_id(ticket),
                           attachments=attachments, message_kind="technician", body=body,
                           technician_name=name)
    if ticket.first_responded_at is None:
        ticket.first_responded_at = now
        record_event(session, ticket, "first_response", now, actor=author_email)
        refresh_clocks(session, config, ticket, now)  # the first clock stops: no more notices
    if ticket.status == "new":
        change_status(session, config, ticket, "open", actor=author_email, now=now)
    return queued


# -- periodic job ------------------------------------------------------------------------
def send_coordinator_digest(config: Config, store, clock) -> int:
    """One mail to the coordinators listing new unassigned tickets not yet announced.

    Safe to run twice or in two processes: the tickets are locked (SKIP LOCKED on
    PostgreSQL) and marked with a `coordinator_notified` event in the same transaction.
    """
    coordinators = [t.email for t in config.coordinators]
    if not coordinators:
        return 0
    now = clock.now()
    with store.transaction() as session:
        announced = select(Event.ticket_id).where(Event.action == "coordinator_notified")
        query = (select(Ticket).where(Ticket.assignee_id.is_(None), Ticket.status == "new",
                                      Ticket.held.is_(False), Ticket.id.not_in(announced))
                 .order_by(Ticket.id).limit(200))
        if store.backend == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Ticket)
        tickets = list(session.scalars(query).unique())
        if not tickets:
            return 0
        send_template(session, config, None, "coordinator_digest", kind="coordinator_digest",
                      now=now, to=coordinators, language=config.language,
                      auto_submitted="auto-generated", tickets=tickets,
                      triage_url=f"{config.web_url}/tickets")
        for ticket in tickets:
            record_event(session, ticket, "coordinator_notified", now, digest=True)
    return len(tickets)
