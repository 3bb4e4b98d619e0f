"""Tickets as plain dicts for JSON output (CLI now, the web later)."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from daemon.store.models import Attachment, Event, Message, RawMessage, Ticket


def iso(moment: datetime | None, tz: ZoneInfo) -> str | None:
    return moment.astimezone(tz).isoformat() if moment else None


def ticket_summary(ticket: Ticket, tz: ZoneInfo) -> dict:
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
        "cc": [p.email for p in ticket.participants if p.role == "cc"],
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


def ticket_detail(ticket: Ticket, tz: ZoneInfo) -> dict:
    return {**ticket_summary(ticket, tz),
            "messages": [message_view(m, tz) for m in ticket.messages],
            "events": [event_view(e, tz) for e in ticket.events]}


def quarantine_view(raw: RawMessage, tz: ZoneInfo) -> dict:
    return {"id": raw.id, "channel": raw.channel, "mailbox": raw.mailbox, "origin": raw.origin,
            "message_id": raw.message_id, "size": raw.size, "reason": raw.reason,
            "attempts": raw.attempts, "received_at": iso(raw.received_at, tz),
            "status": raw.status}
