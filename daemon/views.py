"""Tickets as plain dicts for JSON output (CLI now, the web later)."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from daemon.call_views import calls_on_ticket
from daemon.clock import iso, utcnow
from daemon.rules.sla import ticket_sla
from daemon.store.models import Attachment, Event, Message, RawMessage, Ticket


def ticket_summary(ticket: Ticket, tz: ZoneInfo, now: datetime | None = None) -> dict:
    """The ticket's fields; its SLA clocks as they stand at NOW (default: the present)."""
    return {
        "number": ticket.number,
        "subject": ticket.subject,
        "status": ticket.status,
        "tier": ticket.tier,
        "priority": ticket.priority,
        "category": ticket.category,
        "client": ticket.client.name if ticket.client else None,
        "requester": ticket.requester_email,
        "requester_name": ticket.requester_name,
        "assignee": ticket.assignee.email if ticket.assignee else None,
        "channel": ticket.channel,
        "mailbox": ticket.mailbox,
        "language": ticket.language,
        "created_at": iso(ticket.created_at, tz),
        "updated_at": iso(ticket.updated_at, tz),
        "held": ticket.held,
        "message_count": ticket.message_count,
        # History filed by `ingest --archive` or a mailbox's first connection: nothing was
        # sent for it and no SLA clock ran.
        "imported": bool(ticket.imported),
        "cc": [p.email for p in ticket.participants if p.role == "cc"],
        "rating": ticket.rating,
        "rating_comment": ticket.rating_comment,
        "rated_at": iso(ticket.rated_at, tz),
        **sla_view(ticket, tz, now or utcnow()),
    }


def sla_view(ticket: Ticket, tz: ZoneInfo, now: datetime) -> dict:
    sla = ticket_sla(ticket, now)
    return {
        "contract": ticket.contract,
        "first_response_due": iso(ticket.first_response_due, tz),
        "resolution_due": iso(ticket.resolution_due, tz),
        "sla_state": sla["state"],
        "first_responded_at": iso(ticket.first_responded_at, tz),
        "resolved_at": iso(ticket.resolved_at, tz),
        "resolved_tier": ticket.resolved_tier,
        "paused_seconds": sla["paused_seconds"],
        "paused_since": iso(sla["paused_since"], tz),
        "sla": {"calendar": ticket.sla_calendar,
                **{clock: {"due": iso(view["due"], tz), "warn_at": iso(view["warn_at"], tz),
                           "stopped_at": iso(view["stopped_at"], tz), "state": view["state"]}
                   for clock, view in sla["clocks"].items()}},
    }


def attachment_view(attachment: Attachment) -> dict:
    return {"filename": attachment.filename, "content_type": attachment.content_type,
            "size": attachment.size, "stored": attachment.blob_sha256 is not None,
            "sha256": attachment.sha256 or None}


def message_view(message: Message, tz: ZoneInfo) -> dict:
    return {
        "direction": message.direction,
        "kind": message.kind,
        "from": message.from_email,
        "from_name": message.from_name,
        "to": message.to,
        "cc": message.cc,
        "subject": message.subject,
        "message_id": message.message_id,
        "in_reply_to": message.in_reply_to,
        "text": message.text,
        "held": message.held,
        "created_at": iso(message.created_at, tz),
        "sent_at": iso(message.sent_at, tz),
        "attachments": [attachment_view(a) for a in message.attachments],
    }


def event_view(event: Event, tz: ZoneInfo) -> dict:
    return {"at": iso(event.at, tz), "actor": event.actor, "action": event.action,
            "detail": event.detail}


def ticket_detail(ticket: Ticket, tz: ZoneInfo, now: datetime | None = None) -> dict:
    return {**ticket_summary(ticket, tz, now),
            "messages": [message_view(m, tz) for m in ticket.messages],
            "events": [event_view(e, tz) for e in ticket.events],
            "calls": calls_on_ticket(ticket, tz)}


def quarantine_view(raw: RawMessage, tz: ZoneInfo) -> dict:
    return {"id": raw.id, "channel": raw.channel, "mailbox": raw.mailbox, "origin": raw.origin,
            "message_id": raw.message_id, "size": raw.size, "reason": raw.reason,
            "attempts": raw.attempts, "received_at": iso(raw.received_at, tz),
            "status": raw.status}
