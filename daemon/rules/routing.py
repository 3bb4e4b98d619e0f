"""Route a new ticket: tier, priority and assignee (defaults now; ordered rules later)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.parse import ParsedMail
from daemon.store.models import Ticket
from daemon.tickets import record_event

DEFAULT_TIER = "L1"
DEFAULT_PRIORITY = "normal"


def route_new_ticket(session: Session, config: Config, ticket: Ticket, mail: ParsedMail,
                     now: datetime) -> None:
    ticket.tier = ticket.tier or DEFAULT_TIER
    ticket.priority = ticket.priority or DEFAULT_PRIORITY
    record_event(session, ticket, "routed", now, tier=ticket.tier, priority=ticket.priority,
                 rules=[])
