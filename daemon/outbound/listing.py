"""The outbox as plain dicts for JSON output (`helpdesk outbox` now, the web later)."""
from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.store.models import OutboxMail, Ticket
from daemon.views import iso

STATUSES = ("pending", "sent", "failed")


def outbox_view(mail: OutboxMail, ticket_number: str | None, tz: ZoneInfo) -> dict:
    return {
        "id": mail.id,
        "to": mail.recipients,
        "from": mail.mail_from,
        "subject": mail.subject,
        "status": mail.status,
        "attempts": mail.attempts,
        "ticket": ticket_number,
        "kind": mail.kind,
        "message_id": mail.message_id,
        "last_error": mail.last_error,
        "created_at": iso(mail.created_at, tz),
        "sent_at": iso(mail.sent_at, tz),
        # Only a pending mail has a next attempt; a claimed one shows its lease's end.
        "next_attempt_at": iso(mail.next_attempt_at, tz) if mail.status == "pending" else None,
    }


def list_outbox(session: Session, tz: ZoneInfo, status: str | None = None) -> list[dict]:
    """Outgoing mail, oldest first, optionally only those with STATUS."""
    query = (select(OutboxMail, Ticket.number)
             .outerjoin(Ticket, Ticket.id == OutboxMail.ticket_id).order_by(OutboxMail.id))
    if status:
        query = query.where(OutboxMail.status == status)
    return [outbox_view(mail, number, tz) for mail, number in session.execute(query)]
