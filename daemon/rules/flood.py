"""Floods: a sender opening more new tickets an hour than the limit has the rest held.

One sender is an address (`[tickets] flood_per_address`) and, for domains no configured
client has and that are not our own mailboxes' domain, a whole domain
(`flood_per_domain`, as "@domain"): a client's thirty shops may all write in one outage
hour, a stranger rotating fifty addresses of one domain may not. Past the limit, the
sender's new mail goes into one held ticket, the bundle (a `Flood` row names it), with no
acknowledgement and no notice per mail; the coordinator hears of the flood once. A flood
ends after an hour without new mail from its sender; the next mail after that is counted
afresh.

Each mail that would open a ticket costs two queries on indexes: the sender's running
flood (floods by sender and last mail), and the tickets it opened in the last hour
(tickets by requester and creation time), counted only up to the limit; for a counted
domain a third, over the last hour's tickets (by creation time) whose requester is in it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, bindparam, func, select
from sqlalchemy.orm import Session

from daemon.config import Config, derived
from daemon.store.models import Flood, Ticket
from daemon.tickets import configured_client, domain_of, read_rows

WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Overflow:
    """A mail over its sender's limit: the flood it joins, or None when it starts one."""

    sender: str                 # the address, or "@domain"
    limit: int
    flood: Flood | None


def senders(config: Config, address: str) -> list[tuple[str, int]]:
    """The senders ADDRESS counts as, with their hourly limits: itself, then its domain."""
    address = address.lower()
    counted = []
    if config.tickets.flood_per_address and address:
        counted.append((address, config.tickets.flood_per_address))
    domain = domain_of(address)
    if config.tickets.flood_per_domain and domain and domain_counted(config, domain):
        counted.append(("@" + domain, config.tickets.flood_per_domain))
    return counted


def domain_counted(config: Config, domain: str) -> bool:
    """Whether mail from DOMAIN counts as one sender: no client's, and not our own."""
    if configured_client(config, "x@" + domain) is not None:
        return False
    own = derived(config, ("own mailbox domains",),
                  lambda: frozenset(domain_of(m.address) for m in config.mailboxes))
    return domain not in own


def overflow(session: Session, config: Config, address: str, now: datetime) -> Overflow | None:
    """Whether a mail from ADDRESS that would open a ticket at NOW goes into a bundle."""
    counted = senders(config, address)
    if not counted:
        return None
    since = now - WINDOW
    running = running_floods(session, [sender for sender, _limit in counted], since)
    for sender, limit in counted:
        if sender in running:
            return Overflow(sender, limit, session.get(Flood, running[sender]))
        if opened_since(session, sender, since, limit) >= limit:
            return Overflow(sender, limit, None)
    return None


# Built once, parameters bound at execution (see daemon/tickets.py `read_rows`).
_FLOODS, _TICKETS = Flood.__table__, Ticket.__table__
_RUNNING = (select(_FLOODS.c.sender, _FLOODS.c.id)
            .where(_FLOODS.c.sender.in_(bindparam("senders", expanding=True)),
                   _FLOODS.c.last_at > bindparam("since"))
            .order_by(_FLOODS.c.last_at))
_LIMIT = bindparam("limit", type_=Integer)
# The tickets a sender opened, counted only up to the limit: the index range read stops there.
_BY_ADDRESS = select(func.count()).select_from(
    select(_TICKETS.c.id).where(_TICKETS.c.requester_email == bindparam("address"),
                                _TICKETS.c.created_at > bindparam("since"))
    .limit(_LIMIT).subquery())
_BY_DOMAIN = select(func.count()).select_from(
    select(_TICKETS.c.id).where(_TICKETS.c.created_at > bindparam("since"),
                                _TICKETS.c.requester_email.like(bindparam("pattern"),
                                                                escape="\\"))
    .limit(_LIMIT).subquery())


def running_floods(session: Session, senders: list[str], since: datetime) -> dict[str, int]:
    """Sender -> the id of its flood that had mail after SINCE (the latest, if two)."""
    rows = read_rows(session, _RUNNING, {"senders": senders, "since": since}, Flood)
    return dict(rows.all())


def opened_since(session: Session, sender: str, since: datetime, limit: int) -> int:
    """How many tickets SENDER opened after SINCE, counted up to LIMIT."""
    if sender.startswith("@"):
        pattern = "%@" + _escaped(sender[1:])
        return read_rows(session, _BY_DOMAIN, {"pattern": pattern, "since": since,
                                               "limit": limit}, Ticket).scalar()
    return read_rows(session, _BY_ADDRESS, {"address": sender, "since": since,
                                            "limit": limit}, Ticket).scalar()


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def start_flood(session: Session, sender: str, bundle: Ticket, now: datetime) -> Flood:
    flood = Flood(sender=sender, ticket=bundle, started_at=now, last_at=now, mails=0)
    session.add(flood)
    return flood


def count_mail(flood: Flood, now: datetime) -> None:
    """One more mail of FLOOD held in its bundle at NOW."""
    flood.mails = (flood.mails or 0) + 1
    flood.last_at = now


BUNDLE_SUBJECT = {"pl": "Zalew poczty od {sender}: wiadomości wstrzymane",
                  "en": "Mail flood from {sender}: messages held"}


def bundle_subject(sender: str, language: str) -> str:
    return BUNDLE_SUBJECT.get(language, BUNDLE_SUBJECT["en"]).format(sender=sender)
