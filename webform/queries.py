"""The triage list's reads: filters, counts, and keyset pages that stay fast on a big store.

A page is found by where the previous one ended (its sort key and ticket id, the
`after=` cursor), never by OFFSET, so page 2,000 costs what page 1 does. The default
order is by SLA due when the store has the SLA columns, else newest first.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from sqlalchemy import (and_, bindparam, case, false, func, literal_column, null, or_,
                        select, tuple_)
from sqlalchemy.engine import Row
from sqlalchemy.sql import Select, Subquery
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from daemon.config import PRIORITIES, TIERS, parse_duration
from daemon.store.models import Client, Message, Technician, Ticket
from webform import params

STATUSES = ("new", "open", "waiting", "resolved", "closed")
ACTIVE = ("new", "open", "waiting")
CHANNELS = ("email", "web", "phone")        # the default view: work not yet done
SORTS = ("sla", "newest")
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
DUE_SOON = timedelta(hours=4)              # "SLA due soon" in the counts and the filter
SEARCH_HEAD = 1000                         # tickets a search on PostgreSQL checks one by one first
CURSOR_TIME = "%Y%m%dT%H%M%S%f"
_CURSOR_RE = re.compile(r"^(?:(\d{8}T\d{12})|none)\.(\d{1,19})$")


class BadQuery(ValueError):
    """A filter or cursor value that cannot be right (the page answers 400)."""


def literal_in(column: ColumnElement, values: tuple[str, ...]) -> ColumnElement:
    """COLUMN IN ('a', 'b') with the values written into the SQL, not bound: a partial
    index or an index on an expression is used only when the query says the very same
    thing (migration 0006 indexes the active tickets and their SLA due time)."""
    return column.in_(bindparam(f"literal_{column.key}_{len(values)}", list(values),
                                literal_execute=True))


def active_condition() -> ColumnElement:
    return literal_in(Ticket.status, ACTIVE)


def has_sla() -> bool:
    """Whether the store's tickets carry SLA due times (they arrive with the SLA issue)."""
    return hasattr(Ticket, "resolution_due")


def sla_due_expression() -> ColumnElement | None:
    """The instant the ticket's next SLA clock runs out; NULL when none is running.

    Before the first answer that is the first-response due time, after it the resolution
    due time. Resolved and closed tickets have nothing left to be late for, and a paused
    clock (waiting for the customer) gets a new due time when it resumes.
    """
    if not has_sla():
        return None
    resolution = Ticket.resolution_due
    first = getattr(Ticket, "first_response_due", None)
    paused = getattr(Ticket, "sla_paused_at", None)
    whens = [(literal_in(Ticket.status, ("resolved", "closed")), null())]
    if paused is not None:
        whens.append((paused.is_not(None), null()))
    if first is not None:
        whens.append((and_(Ticket.first_responded_at.is_(None), first.is_not(None)), first))
    return case(*whens, else_=resolution)


FILTER_CHOICES = {"status": ("all", *STATUSES), "tier": TIERS, "priority": PRIORITIES,
                  "held": ("0", "1"), "sla": ("overdue", "soon"), "sort": SORTS,
                  "channel": CHANNELS}


@dataclass(frozen=True)
class TriageFilter:
    """The list's query parameters, checked; empty strings mean "any"."""

    status: str = ""          # "" = active (new, open, waiting), "all", or one status
    tier: str = ""
    priority: str = ""
    client: str = ""          # a client's name, or "none"
    assignee: str = ""        # a technician's email, or "none"
    requester: str = ""       # part of the requester's address or name
    channel: str = ""
    held: str = ""            # "1" held only, "0" not held
    older_than: str = ""      # a duration like "2d": created before now minus it
    sla: str = ""             # "overdue" or "soon" (with SLA columns)
    q: str = ""               # text in number, subject, requester or any message's text
    sort: str = ""            # "sla" or "newest"; "" = sla when available
    after: str = ""           # the keyset cursor of the page to show
    limit: int = PAGE_SIZE

    FIELDS = ("status", "tier", "priority", "client", "assignee", "requester", "channel", "held",
              "older_than", "sla", "q", "sort")

    @classmethod
    def from_args(cls, args) -> TriageFilter:
        """From request.args; raises webform.params.BadParameter (a 400 naming it) for a
        value no form of ours would send."""
        values = {name: params.choice(args, name, FILTER_CHOICES[name])
                  if name in FILTER_CHOICES else params.line(args, name) for name in cls.FIELDS}
        params.duration(args, "older_than")  # within bounds, so older_than_delta is too
        values["after"] = params.line(args, "after", max_chars=60)
        values["limit"] = params.whole_number(args, "limit", default=PAGE_SIZE, low=1,
                                              high=MAX_PAGE_SIZE)
        chosen = cls(**values)
        if chosen.after:
            try:
                decode_cursor(chosen.after, chosen.effective_sort)
            except BadQuery:
                raise params.BadParameter("after", "to nie jest kursor tej listy",
                                          "not a cursor of this list") from None
        return chosen

    @property
    def older_than_delta(self) -> timedelta | None:
        return parse_duration(self.older_than) if self.older_than else None

    @property
    def effective_sort(self) -> str:
        if self.sort == "sla" or (not self.sort and has_sla()):
            return "sla" if has_sla() else "newest"
        return "newest"

    def query_args(self, **changes) -> dict[str, str]:
        """The non-empty parameters (for links and for returning after an action)."""
        chosen = replace(self, **changes)
        args = {name: getattr(chosen, name) for name in (*self.FIELDS, "after")}
        if chosen.limit != PAGE_SIZE:
            args["limit"] = str(chosen.limit)
        return {k: v for k, v in args.items() if v}


# -- cursor ------------------------------------------------------------------------------------
def encode_cursor(sort: str, due: datetime | None, ticket_id: int) -> str:
    """`<id>` when newest first; `<due as YYYYmmddTHHMMSSffffff UTC>.<id>` or `none.<id>` by SLA."""
    if sort == "newest":
        return str(ticket_id)
    stamp = due.astimezone(timezone.utc).strftime(CURSOR_TIME) if due else "none"
    return f"{stamp}.{ticket_id}"


def decode_cursor(cursor: str, sort: str) -> tuple[datetime | None, int]:
    if sort == "newest":
        if not cursor.isdigit() or len(cursor) > 19:
            raise BadQuery("after: not a cursor of this list")
        return None, int(cursor)
    match = _CURSOR_RE.match(cursor)
    if not match:
        raise BadQuery("after: not a cursor of this list")
    stamp, ticket_id = match.groups()
    due = datetime.strptime(stamp, CURSOR_TIME).replace(tzinfo=timezone.utc) if stamp else None
    return due, int(ticket_id)


def _after(due_column: ColumnElement, due: datetime | None, ticket_id: int) -> ColumnElement:
    """Rows after (due, id) in the order `due ASC NULLS LAST, id ASC`.

    Written as one row comparison on the three keys of ix_tickets_triage_due, so that
    PostgreSQL starts its index walk at the cursor (as `a > x OR (a = x AND id > y) OR a
    IS NULL` it walked from the top and filtered: 2,500 rows read for page 51). SQLite
    walks that index from the top either way, checking the index's own keys (0.3 ms for
    page 51). The first key, `due IS NULL`, is false at the cursor, so every ticket
    without a due time (true > false) comes after it, and `due` is never compared with
    NULL.
    """
    if due is None:
        return and_(due_column.is_(None), Ticket.id > ticket_id)
    return tuple_(due_column.is_(None), due_column, Ticket.id) > tuple_(false(), due, ticket_id)


# -- filters -------------------------------------------------------------------------------------
def written_by_people() -> ColumnElement:
    """Messages a person wrote: not the daemon's own notices (kind 'system'), whose text is
    a template around what is on the ticket already. The condition is a literal, the
    trigram index's own WHERE, so PostgreSQL can use that partial index."""
    return Message.kind != literal_column("'system'")


def _text_match(q: str, per_ticket: bool = False, of=Ticket) -> ColumnElement:
    """Number, subject, requester, or the text of a message a person wrote (an EXISTS per
    ticket).

    PER_TICKET keeps PostgreSQL from answering the EXISTS by first collecting every
    matching message (a "hashed subplan", from the trigram index): OFFSET 0 in an EXISTS
    is the documented fence, so each ticket's own messages are checked as the list is
    walked, which stops at the page's last row. SQLite always checks per ticket. OF is
    where the ticket's columns come from: the table, or a subquery of its rows.
    """
    in_messages = select(Message.id).where(Message.ticket_id == of.id, written_by_people(),
                                           Message.text.icontains(q, autoescape=True))
    if per_ticket:
        in_messages = in_messages.offset(0)
    return or_(of.number == q.upper(), of.subject.icontains(q, autoescape=True),
               of.requester_email.icontains(q, autoescape=True), in_messages.exists())


def conditions(chosen: TriageFilter, now: datetime, due_column: ColumnElement | None,
               text_per_ticket: bool = False) -> list[ColumnElement]:
    where: list[ColumnElement] = []
    if chosen.status == "":
        where.append(active_condition())
    elif chosen.status != "all":
        where.append(Ticket.status == chosen.status)
        if chosen.status in ACTIVE:
            where.append(active_condition())  # implied, but it lets the partial indexes serve
    for name in ("tier", "priority", "channel"):
        if getattr(chosen, name):
            where.append(getattr(Ticket, name) == getattr(chosen, name))
    if chosen.client == "none":
        where.append(Ticket.client_id.is_(None))
    elif chosen.client:
        where.append(Ticket.client_id.in_(select(Client.id).where(Client.name == chosen.client)))
    if chosen.assignee == "none":
        where.append(Ticket.assignee_id.is_(None))
    elif chosen.assignee:
        where.append(Ticket.assignee_id.in_(
            select(Technician.id).where(Technician.email == chosen.assignee.lower())))
    if chosen.requester:
        where.append(or_(Ticket.requester_email.icontains(chosen.requester, autoescape=True),
                         Ticket.requester_name.icontains(chosen.requester, autoescape=True)))
    if chosen.held:
        where.append(Ticket.held == (chosen.held == "1"))
    if chosen.older_than:
        where.append(Ticket.created_at < now - chosen.older_than_delta)
    if chosen.sla:
        where.append(_sla_condition(chosen.sla, now, due_column))
    if chosen.q:
        where.append(_text_match(chosen.q, text_per_ticket))
    return where


def _sla_condition(which: str, now: datetime, due_column: ColumnElement | None) -> ColumnElement:
    if due_column is None:
        return false()  # no SLA clocks in this store: nothing is due
    if which == "overdue":
        return due_column < now
    return and_(due_column >= now, due_column < now + DUE_SOON)


# -- the page ----------------------------------------------------------------------------------------
@dataclass
class TriageRow:
    ticket: Row           # the listed columns (LIST_COLUMNS), client_name and assignee_name
    sla_due: datetime | None
    held_message_id: int | None = None   # the first held message, for one-click attach/split


@dataclass
class TriagePage:
    rows: list[TriageRow]
    next_cursor: str | None
    sort: str
    has_sla: bool
    counts: dict[str, int | None] = field(default_factory=dict)


def _list_columns() -> list[ColumnElement]:
    """What a row of the list shows: plain columns, not ORM tickets (a page of 50 loads
    in a tenth of the time, and no relationship can fire a query per row)."""
    names = ["id", "number", "subject", "status", "tier", "priority", "requester_email",
             "requester_name", "channel", "held", "created_at", "client_id", "assignee_id",
             "sla_paused_at"]
    return [getattr(Ticket, name) for name in names]


def triage_page(session: Session, chosen: TriageFilter, now: datetime,
                due_column: ColumnElement | None = None) -> TriagePage:
    """One page of the list: up to chosen.limit tickets after the cursor, in order."""
    due_column = due_column if due_column is not None else sla_due_expression()
    sort = chosen.effective_sort if due_column is not None else "newest"
    if chosen.q and session.get_bind().dialect.name == "postgresql":
        found = _searched_rows(session, chosen, now, due_column, sort)
    else:
        found = session.execute(_page_query(chosen, now, due_column, sort)).all()
    rows = [TriageRow(row, row.sla_due) for row in found[:chosen.limit]]
    _mark_held(session, rows)
    more = len(found) > chosen.limit
    last = rows[-1] if rows else None
    cursor = encode_cursor(sort, last.sla_due, last.ticket.id) if more and last else None
    return TriagePage(rows, cursor, sort, due_column is not None)


def _order(due_column: ColumnElement | None, sort: str) -> list[ColumnElement]:
    if sort == "sla":
        # (due IS NULL, due, id): the order of the index on active tickets (no NULLS LAST,
        # which SQLite's indexes cannot give), tickets without a running clock last.
        return [due_column.is_(None), due_column.asc(), Ticket.id.asc()]
    return [Ticket.id.desc()]


def _candidates(chosen: TriageFilter, now: datetime, due_column: ColumnElement | None,
                sort: str, text_per_ticket: bool = False) -> list[ColumnElement]:
    """The WHERE of the page: the filters and the cursor."""
    where = conditions(chosen, now, due_column, text_per_ticket)
    if chosen.after:
        due, ticket_id = decode_cursor(chosen.after, sort)
        where.append(_after(due_column, due, ticket_id) if sort == "sla"
                     else Ticket.id < ticket_id)
    return where


def _page_query(chosen: TriageFilter, now: datetime, due_column: ColumnElement | None,
                sort: str, text_per_ticket: bool = False) -> Select:
    """The page's rows (one more than the page, to know whether another follows)."""
    due_value = due_column if due_column is not None else null()
    # Aliased, so that the client filter's subquery (WHERE client_id IN (SELECT id FROM
    # clients ...)) stays a subquery of its own and is not correlated to this join.
    listed_client = aliased(Client, name="listed_client")
    listed_assignee = aliased(Technician, name="listed_assignee")
    query = (select(*_list_columns(), listed_client.name.label("client_name"),
                    listed_assignee.name.label("assignee_name"), due_value.label("sla_due"))
             .select_from(Ticket)
             .outerjoin(listed_client, listed_client.id == Ticket.client_id)
             .outerjoin(listed_assignee, listed_assignee.id == Ticket.assignee_id)
             .where(*_candidates(chosen, now, due_column, sort, text_per_ticket)))
    return query.order_by(*_order(due_column, sort)).limit(chosen.limit + 1)


def _searched_rows(session: Session, chosen: TriageFilter, now: datetime,
                   due_column: ColumnElement | None, sort: str) -> list[Row]:
    """A text search on PostgreSQL: the same rows as the plain query, found the cheap way.

    A common word is best found by walking the list in order and checking each ticket's
    messages until the page is full; a rare one through the trigram index (every
    matching message at once), which for a common word means tens of thousands of rows
    before the first is shown. So: the first SEARCH_HEAD tickets of the list (in order,
    after the cursor) are checked one by one; a full page among them is the answer. If
    none of them matched, the word is rare: the planner's own plan (the trigram index).
    If some did, the walk goes on to the end of the list.
    """
    head = _head(chosen, now, due_column, sort)
    found = session.execute(_head_search(chosen.q, chosen.limit, head, sort)).all()
    if len(found) > chosen.limit:
        return found
    if session.scalar(select(func.count()).select_from(head)) < SEARCH_HEAD:
        return found  # the head was the whole list
    return session.execute(_page_query(chosen, now, due_column, sort,
                                       text_per_ticket=bool(found))).all()


def _head(chosen: TriageFilter, now: datetime, due_column: ColumnElement | None,
          sort: str) -> Subquery:
    """The list's first SEARCH_HEAD tickets after the cursor, without the text filter, in
    the list's order: the listed columns and the sort keys."""
    due_value = due_column if due_column is not None else null()
    keys = [due_value.is_(None).label("due_missing")] if sort == "sla" else []
    return (select(*_list_columns(), due_value.label("sla_due"), *keys)
            .where(*_candidates(replace(chosen, q=""), now, due_column, sort))
            .order_by(*_order(due_column, sort)).limit(SEARCH_HEAD).subquery("head"))


def _head_search(q: str, limit: int, head: Subquery, sort: str) -> Select:
    """The search among HEAD's tickets, in order, stopping at a full page.

    The outer query filters the head by the text and orders by the same output columns,
    so PostgreSQL reads the head as it comes (one walk of the SLA-order index, no second
    lookup by id) and stops at the page's last match instead of checking all of it. The
    client's and assignee's names are looked up for the rows shown only.
    """
    order = ([head.c.due_missing, head.c.sla_due.asc(), head.c.id.asc()] if sort == "sla"
             else [head.c.id.desc()])
    client_name = select(Client.name).where(Client.id == head.c.client_id).scalar_subquery()
    assignee_name = (select(Technician.name).where(Technician.id == head.c.assignee_id)
                     .scalar_subquery())
    listed = [head.c[column.key] for column in _list_columns()]
    return (select(*listed, client_name.label("client_name"),
                   assignee_name.label("assignee_name"), head.c.sla_due)
            .where(_text_match(q, per_ticket=True, of=head.c))
            .order_by(*order).limit(limit + 1))


def _mark_held(session: Session, rows: list[TriageRow]) -> None:
    held = [row.ticket.id for row in rows if row.ticket.held]
    if not held:
        return
    first = dict(session.execute(select(Message.ticket_id, func.min(Message.id)).where(
        Message.ticket_id.in_(held), Message.held.is_(True)).group_by(Message.ticket_id)).all())
    for row in rows:
        row.held_message_id = first.get(row.ticket.id)


def triage_counts(session: Session, now: datetime,
                  due_column: ColumnElement | None = None) -> dict[str, int | None]:
    """Open by tier, unassigned, waiting, held, SLA due soon and overdue (None without SLA).

    Each from an index, so a million closed tickets cost nothing: the active tickets'
    status, tier and assignee grouped from their covering partial index, the SLA counts
    as ranges of the SLA order's index, held tickets from their own partial index.
    """
    due_column = due_column if due_column is not None else sla_due_expression()
    counts: dict[str, int | None] = {f"open_{tier}": 0 for tier in TIERS}
    counts.update(unassigned=0, waiting=0)
    # Grouped in the index's own order (no sort), summed here: a few hundred groups.
    groups = session.execute(select(Ticket.status, Ticket.tier, Ticket.assignee_id, func.count())
                             .where(active_condition())
                             .group_by(Ticket.status, Ticket.tier, Ticket.assignee_id))
    for status, tier, assignee_id, count in groups:
        if status in ("new", "open") and tier in TIERS:
            counts[f"open_{tier}"] += count
        if assignee_id is None:
            counts["unassigned"] += count
        if status == "waiting":
            counts["waiting"] += count
    counts["held"] = session.scalar(select(func.count()).select_from(Ticket)
                                    .where(Ticket.held.is_(True)))
    counts["sla_soon"] = counts["sla_overdue"] = None
    if due_column is not None:
        for which in ("soon", "overdue"):
            # "(due IS NULL) = false" names the index's first column, so this is a range.
            counts[f"sla_{which}"] = session.scalar(
                select(func.count()).select_from(Ticket).where(
                    active_condition(), due_column.is_(None) == false(),
                    _sla_condition(which, now, due_column)))
    return counts


def ticket_sla_due(session: Session, ticket: Ticket) -> datetime | None:
    due_column = sla_due_expression()
    if due_column is None:
        return None
    return session.scalar(select(due_column).where(Ticket.id == ticket.id))


def filter_choices(session: Session) -> dict[str, list]:
    """What the filter and bulk-action menus offer: clients, technicians, channels in use."""
    return {
        "clients": list(session.scalars(select(Client.name).where(Client.active)
                                        .order_by(Client.name))),
        # Rows, not ORM objects: the menus need these three columns only.
        "technicians": session.execute(select(Technician.email, Technician.name, Technician.tier)
                                       .where(Technician.active)
                                       .order_by(Technician.tier, Technician.name)).all(),
        "channels": list(CHANNELS),
    }
