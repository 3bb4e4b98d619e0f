"""The staff's screens: the triage list, a ticket's page, the quarantine, the dashboard.

Every change goes through the same ticket actions the mail commands use
(daemon.conversation), so a ticket assigned, resolved or answered on the web behaves
exactly like one handled by mail: same notifications, same outbox, same audit events.

Who may do what: anyone signed in (technicians and coordinators) may see the list and
every ticket, change a ticket on its page, write notes and answer customers. Decisions
about many tickets or about mail nobody owns yet are the coordinator's: bulk actions,
attaching or splitting held messages, and the quarantine.
"""
from __future__ import annotations

import io
import logging
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from time import monotonic
from urllib.parse import parse_qsl, quote, urlencode

from flask import (Blueprint, abort, current_app, flash, redirect, render_template, request,
                   send_file, url_for)
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from daemon.parse import safe_filename
from daemon.config import PRIORITIES, TIERS
from daemon.conversation import (add_internal_note, assign, attach_held, change_priority,
                                 change_status, change_tier, relay_to_customer, split_held)
from daemon.outbound.outbox import OutgoingAttachment
from daemon.pipeline import Pipeline
from daemon.quarantine import discard_quarantined, retry_quarantined
from daemon.reports import DIMENSIONS, L1_TARGET, hours, percent, report, weekly
from daemon.store.models import Attachment, Blob, Message, RawMessage, Technician, Ticket
from daemon.tickets import held_causes
from daemon.words import words_in
from webform import helpdesk, params
from webform.auth import coordinator_required
from webform.charts import Series, bar_chart, heat_map, line_chart
from webform.i18n import language, tr
from webform.mailview import mail_html
from webform.params import BadParameter
from webform.queries import (STATUSES, TriageFilter, filter_choices, has_sla, ticket_sla_due,
                             triage_counts, triage_page)
from webform.setup import CONTENT_SECURITY_POLICY

log = logging.getLogger(__name__)
blueprint = Blueprint("triage", __name__)

QUARANTINE_PAGE = 100
MAX_NOTE_CHARS = 100_000
MAX_BULK = 1000              # tickets one bulk action may name (a page shows at most 200)
# What a download may be labelled as; anything else (HTML, SVG, scripts) goes out as bytes.
DOWNLOAD_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf",
                  "text/plain", "text/csv", "application/zip", "message/rfc822")


# -- what the templates show -------------------------------------------------------------------
def _labeller():
    """`label` for one request: its language looked up once, not for each of ~200 labels."""
    texts = words_in(language())
    return lambda value: texts.get(value or "") or (value or "—")


def label(value: str | None) -> str:
    """A status, priority, kind or channel in the reader's language (unknown ones as they are)."""
    return _labeller()(value)


def duration(delta: timedelta) -> str:
    """'3 d 4 h', '5 h 10 min', '5 h', '12 min': short, the same in Polish and English."""
    minutes = int(abs(delta).total_seconds() // 60)
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


@dataclass(frozen=True)
class Clockface:
    """Times as the staff read them: in the helpdesk's zone, relative to the request's now."""

    now: datetime
    tz: object

    def local(self, moment: datetime | None) -> str:
        return moment.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") if moment else "—"

    def age(self, moment: datetime) -> str:
        return duration(self.now - moment)

    def left(self, due: datetime | None) -> tuple[str, bool]:
        """Time left until DUE and whether it is overdue; '—' without a due time."""
        if due is None:
            return "—", False
        overdue = due < self.now
        text = duration(due - self.now)
        return (f"−{text}" if overdue else text), overdue


# -- the counts and menus of the list, read once per few seconds ----------------------------------
HEADER_MAX_AGE = 5.0   # seconds; app.config["TRIAGE_HEADER_MAX_AGE"] overrides it (0: no reuse)


def _reused(name: str, read):
    """READ(), or what it returned in this process less than HEADER_MAX_AGE seconds ago.

    The counts at the top of the list and the filter menus (clients, technicians) are the
    same for everyone and cost more SQL than the page's rows (on PostgreSQL two reads of
    ~20,000 index entries each). A coordinator refreshing the list, or paging through it,
    does not need them to the millisecond: a count a few seconds old is as good as one
    read while the page was on its way. Rows, filters and paging are always read afresh,
    and any change made through this app (every POST) forgets them at once, so one's own
    bulk action shows in the counts on the page it returns to. Mail arriving through the
    daemon and changes in other worker processes show within HEADER_MAX_AGE.
    """
    max_age = current_app.config.get("TRIAGE_HEADER_MAX_AGE", HEADER_MAX_AGE)
    kept = current_app.extensions.setdefault("triage_header", {})
    at = monotonic()
    if name in kept and 0 <= at - kept[name][0] < max_age:
        return kept[name][1]
    value = read()
    kept[name] = (at, value)
    return value


@blueprint.after_app_request
def _forget_header_after_changes(response):
    """A POST (a bulk action, an assignment, a new ticket from the form) may have changed
    the counts or the menus: the next page reads them again. Run after the view has
    committed, so a page shown meanwhile cannot keep the numbers from before."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        current_app.extensions.pop("triage_header", None)
    return response


def _counts(session: Session, now: datetime) -> dict:
    return _reused("counts", lambda: triage_counts(session, now))


def _render(template: str, session: Session, **context):
    desk = helpdesk()
    choices = _reused("choices", lambda: filter_choices(session))
    return render_template(template, clock=Clockface(desk.clock.now(), desk.config.tz),
                           choices=choices, tiers=TIERS, priorities=PRIORITIES,
                           statuses=STATUSES, is_coordinator=current_user.is_coordinator,
                           label=_labeller(), **context)


def _actor() -> str:
    return current_user.email


# -- the triage list ---------------------------------------------------------------------------
@blueprint.get("/tickets")
def tickets():
    desk = helpdesk()
    chosen = TriageFilter.from_args(request.args)
    now = desk.clock.now()
    with desk.store.transaction() as session:
        page = triage_page(session, chosen, now)
        page.counts = _counts(session, now)
        return _render("tickets.html", session, page=page, chosen=chosen,
                       return_to=urlencode(chosen.query_args()), ticket_url=_ticket_url())


def _ticket_url():
    """url_for('triage.ticket', number=...) for a page of rows: the route is resolved once,
    then each number is quoted as the URL map would (url_for costs ~15 µs a call)."""
    base = url_for("triage.ticket", number="~")[:-1]
    return lambda number: base + quote(number, safe="!$&'()*+,/:;=@")


def _back_to_list():
    """Back to the list as it was filtered (a query string we rebuild, never a raw URL).

    Called after the change is saved, so a filter the list would refuse is dropped
    rather than answered with a 400 that would hide the change.
    """
    try:
        wanted = MultiDict(parse_qsl(params.line(request.form, "return_to", max_chars=2000)))
        chosen = TriageFilter.from_args(wanted).query_args()
    except BadParameter:
        chosen = {}
    return redirect(url_for("triage.tickets", **chosen))


@dataclass
class Changes:
    """A form's wanted tier, technician, priority and status; None leaves one as it is."""

    tier: str | None = None
    technician: Technician | None = None
    priority: str | None = None
    status: str | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.tier, self.technician, self.priority,
                                           self.status))


def _changes(session: Session, form) -> Changes:
    """Read the form; 400 for values no form of ours offers."""
    wanted = {name: params.choice(form, name, allowed)
              for name, allowed in (("tier", TIERS), ("priority", PRIORITIES),
                                    ("status", STATUSES))}
    wanted["assignee"] = params.line(form, "assignee", max_chars=320)
    technician = None
    if wanted["assignee"]:
        technician = session.scalar(select(Technician).where(
            Technician.email == wanted["assignee"].lower(), Technician.active))
        if technician is None:
            raise BadParameter("assignee", "nie ma aktywnego technika o tym adresie",
                               "no active technician with that address")
    return Changes(wanted["tier"] or None, technician, wanted["priority"] or None,
                   wanted["status"] or None)


def _conflict(changes: Changes) -> str | None:
    if changes.technician and changes.tier and changes.tier != changes.technician.tier:
        return tr("{name} pracuje na linii {tier}: wybierz osobę albo linię.",
                  "{name} works at tier {tier}: choose the person or the tier.",
                  name=changes.technician.name, tier=changes.technician.tier)
    return None


def _apply(session: Session, ticket: Ticket, changes: Changes, now: datetime) -> list[str]:
    """Apply CHANGES to TICKET through the shared actions; returns what actually changed.

    A technician brings their tier with them, so the tier is changed on its own only
    when nobody is being assigned.
    """
    config, actor, done = helpdesk().config, _actor(), []
    if changes.technician and ticket.assignee_id != changes.technician.id:
        assign(session, config, ticket, changes.technician, actor=actor, now=now)
        done.append("assignee")
    elif changes.tier and not changes.technician and changes.tier != ticket.tier:
        change_tier(session, config, ticket, changes.tier, actor=actor, now=now)
        done.append("tier")
    if changes.priority and changes.priority != ticket.priority:
        change_priority(session, config, ticket, changes.priority, actor=actor, now=now)
        done.append("priority")
    if changes.status and changes.status != ticket.status:
        change_status(session, config, ticket, changes.status, actor=actor, now=now)
        done.append("status")
    return done


@blueprint.post("/tickets/bulk")
@coordinator_required
def bulk():
    """The selected rows get the chosen tier/assignee/priority/status, all in one transaction."""
    desk = helpdesk()
    numbers = sorted({n.upper() for n in params.lines(request.form, "ticket",
                                                       max_count=MAX_BULK, max_chars=40) if n})
    now = desk.clock.now()
    with desk.store.transaction() as session:
        changes = _changes(session, request.form)
        problem = _conflict(changes) or (
            None if numbers else tr("Nie zaznaczono zgłoszeń.", "No tickets selected.")) or (
            None if changes else tr("Nie wybrano zmiany.", "No change chosen."))
        if problem:
            flash(problem, "error")
            return _back_to_list()
        chosen = list(session.scalars(select(Ticket).where(Ticket.number.in_(numbers))))
        if len(chosen) != len(numbers):
            abort(404, "some of the selected tickets do not exist")
        changed = sum(bool(_apply(session, ticket, changes, now)) for ticket in chosen)
    log.info("bulk change by %s on %d tickets (%d changed)", _actor(), len(numbers), changed)
    flash(tr("Zmieniono zgłoszenia: {n}.", "Tickets changed: {n}.", n=changed), "success")
    return _back_to_list()


# -- a ticket -----------------------------------------------------------------------------------
def _ticket_or_404(session: Session, number: str) -> Ticket:
    ticket = session.scalar(select(Ticket).where(Ticket.number == number.strip().upper()))
    if ticket is None:
        abort(404)
    return ticket


@dataclass
class ThreadEntry:
    message: Message
    html: object      # webform.mailview.MailHtml or None
    held_cause: str | None = None   # daemon.tickets.held_causes


@blueprint.get("/tickets/<number>")
def ticket(number: str):
    desk = helpdesk()
    show_images = params.choice(request.args, "images", ("0", "1")) == "1"
    with desk.store.transaction() as session:
        found = _ticket_or_404(session, number)
        # Our own mail is text we wrote; only what came in needs its HTML shown, isolated.
        causes = held_causes(found) if found.held else {}
        thread = [ThreadEntry(m, mail_html(session, m, show_images=show_images)
                              if m.direction == "in" else None, causes.get(m.message_id))
                  for m in found.messages]
        response = _render("ticket.html", session, ticket=found, thread=thread,
                           show_images=show_images, sla_due=ticket_sla_due(session, found),
                           blocked_images=sum(e.html.blocked_images for e in thread if e.html))
    # The thread's frames inherit this policy; remote images pass only once asked for.
    images = "'self' data: http: https:" if show_images else "'self' data:"
    return response, {"Content-Security-Policy": CONTENT_SECURITY_POLICY.replace(
        "img-src 'self' data:", f"img-src {images}"), "Referrer-Policy": "no-referrer"}


def _to_ticket(number: str, anchor: str = ""):
    return redirect(url_for("triage.ticket", number=number) + anchor)


@blueprint.post("/tickets/<number>/update")
def update(number: str):
    desk = helpdesk()
    now = desk.clock.now()
    with desk.store.transaction() as session:
        found = _ticket_or_404(session, number)
        changes = _changes(session, request.form)
        if changes.tier == found.tier:
            changes.tier = None  # the page's form always sends the current tier
        if problem := _conflict(changes):
            flash(problem, "error")
            return _to_ticket(found.number)
        done = _apply(session, found, changes, now)
    if done:
        flash(tr("Zapisano zmiany.", "Changes saved."), "success")
    return _to_ticket(found.number)


@blueprint.post("/tickets/<number>/note")
def note(number: str):
    desk = helpdesk()
    text = params.text(request.form, "text", max_chars=MAX_NOTE_CHARS)
    with desk.store.transaction() as session:
        found = _ticket_or_404(session, number)
        if not text:
            flash(tr("Notatka jest pusta.", "The note is empty."), "error")
            return _to_ticket(found.number, "#note")
        add_internal_note(session, found, text, author_email=_actor(),
                          author_name=current_user.name, now=desk.clock.now())
    flash(tr("Dodano notatkę wewnętrzną.", "Internal note added."), "success")
    return _to_ticket(found.number, "#thread-end")


def _uploads() -> list[OutgoingAttachment]:
    limit = helpdesk().config.limits.attachment_max_bytes
    files = []
    for upload in request.files.getlist("attachments"):
        if not upload.filename:
            continue
        data = upload.read(limit + 1)
        if len(data) > limit:
            abort(413, f"{upload.filename}: larger than {limit} bytes")
        content_type = upload.mimetype or "application/octet-stream"
        files.append(OutgoingAttachment(safe_filename(upload.filename, content_type),
                                        content_type, data))
    return files


@blueprint.post("/tickets/<number>/reply")
def reply(number: str):
    """An answer to the customer: the same relay a technician's mail reply takes."""
    desk = helpdesk()
    body = params.text(request.form, "body", max_chars=MAX_NOTE_CHARS)
    with desk.store.transaction() as session:
        found = _ticket_or_404(session, number)
        if not body:
            flash(tr("Odpowiedź jest pusta.", "The reply is empty."), "error")
            return _to_ticket(found.number, "#reply")
        queued = relay_to_customer(session, desk.config, found, body, author_email=_actor(),
                                   author_name=current_user.name, attachments=_uploads(),
                                   now=desk.clock.now())
    if queued is None:
        flash(tr("Klient nie ma adresu, na który można wysłać odpowiedź.",
                 "The customer has no address the reply could go to."), "error")
    else:
        flash(tr("Odpowiedź czeka w kolejce do wysłania.", "The reply is queued for sending."),
              "success")
    return _to_ticket(found.number, "#thread-end")


def _held_message(session: Session, number: str, message_id: int) -> Message:
    message = session.get(Message, message_id)
    if message is None or not message.held or message.ticket.number != number.strip().upper():
        abort(404)
    return message


@blueprint.post("/tickets/<number>/messages/<int:message_id>/attach")
@coordinator_required
def attach(number: str, message_id: int):
    desk = helpdesk()
    with desk.store.transaction() as session:
        message = _held_message(session, number, message_id)
        attach_held(session, desk.config, message, actor=_actor(), now=desk.clock.now())
        sender = message.from_email
    flash(tr("{who} dołączony do zgłoszenia.", "{who} joined the ticket.", who=sender), "success")
    return _after_held(number)


@blueprint.post("/tickets/<number>/messages/<int:message_id>/split")
@coordinator_required
def split(number: str, message_id: int):
    desk = helpdesk()
    with desk.store.transaction() as session:
        message = _held_message(session, number, message_id)
        created = split_held(session, desk.config, message, actor=_actor(),
                             now=desk.clock.now()).number
    flash(tr("Wiadomość jest teraz osobnym zgłoszeniem {n}.",
             "The message is now a ticket of its own, {n}.", n=created), "success")
    return _after_held(number)


def _after_held(number: str):
    """Back where the click came from: the list (with its filters) or the ticket page."""
    if request.form.get("from") == "list":  # after the change is saved: never a 400
        return _back_to_list()
    return _to_ticket(number.strip().upper())


def _download_name(name: str) -> str:
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in '"\\')
    return name.strip() or "attachment.bin"


@blueprint.get("/tickets/<number>/attachments/<int:attachment_id>")
def attachment(number: str, attachment_id: int):
    """A file from a message, always as a download: never rendered by the browser as ours."""
    with helpdesk().store.transaction() as session:
        row = session.scalar(select(Attachment).join(Message).join(Ticket).where(
            Attachment.id == attachment_id, Ticket.number == number.strip().upper()))
        if row is None:
            abort(404)
        blob = session.get(Blob, row.blob_sha256) if row.blob_sha256 else None
        if blob is None:
            abort(404, "this file was over the size limit and is kept only in the raw mail")
        data, name, declared = blob.data, row.filename, row.content_type
    response = send_file(io.BytesIO(data), as_attachment=True,
                         download_name=_download_name(name), max_age=0,
                         mimetype=declared if declared in DOWNLOAD_TYPES
                         else "application/octet-stream")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "no-store"
    return response


# -- quarantine ----------------------------------------------------------------------------------
@blueprint.get("/quarantine")
@coordinator_required
def quarantine():
    """Unprocessable mail, oldest first, a page at a time (after=<last id>)."""
    desk = helpdesk()
    status = params.choice(request.args, "status", ("quarantined", "discarded"),
                           default="quarantined") or "quarantined"
    after = params.whole_number(request.args, "after", default=0)
    with desk.store.transaction() as session:
        records = list(session.scalars(select(RawMessage).where(
            RawMessage.status == status, RawMessage.id > after)
            .order_by(RawMessage.id).limit(QUARANTINE_PAGE + 1)))
        more = len(records) > QUARANTINE_PAGE
        records = records[:QUARANTINE_PAGE]
        return _render("quarantine.html", session, records=records, status=status,
                       next_after=records[-1].id if more else None,
                       keep_days=desk.config.tickets.discard_keep_days)


@blueprint.post("/quarantine/<int:raw_id>/reprocess")
@coordinator_required
def reprocess(raw_id: int):
    desk = helpdesk()
    status = retry_quarantined(Pipeline(desk.config, desk.store, desk.clock), raw_id)
    if status is None:
        abort(404, "no such record in quarantine")
    log.info("raw record %s reprocessed by %s: %s", raw_id, _actor(), status)
    if status == "quarantined":
        flash(tr("Nadal nie da się jej przetworzyć: powód poniżej.",
                 "It still cannot be processed: see the reason below."), "error")
    else:
        flash(tr("Przetworzono ponownie: {s}.", "Reprocessed: {s}.", s=status), "success")
    return redirect(url_for("triage.quarantine"))


@blueprint.post("/quarantine/<int:raw_id>/discard")
@coordinator_required
def discard(raw_id: int):
    desk = helpdesk()
    with desk.store.transaction() as session:
        if not discard_quarantined(session, raw_id, actor=_actor(), now=desk.clock.now()):
            abort(404, "no such record in quarantine")
    flash(tr("Odrzucono; treść zostaje przez {d} dni.", "Discarded; its bytes are kept for {d} days.",
             d=desk.config.tickets.discard_keep_days), "success")
    return redirect(url_for("triage.quarantine"))


@blueprint.get("/quarantine/<int:raw_id>/raw")
@coordinator_required
def raw_mail(raw_id: int):
    """The record's bytes as they arrived, to look at in a mail program or a text editor."""
    with helpdesk().store.transaction() as session:
        record = session.get(RawMessage, raw_id)
        if record is None or record.status not in ("quarantined", "discarded"):
            abort(404)
        if not record.raw:
            abort(410, "the bytes were purged after the retention period")
        data = record.raw
    response = send_file(io.BytesIO(data), mimetype="application/octet-stream",
                         as_attachment=True, download_name=f"raw-{raw_id}.eml", max_age=0)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# -- dashboard ----------------------------------------------------------------------------------
DEFAULT_WEEKS = 8
MAX_DAYS = 3 * 366          # a longer period is a report for the command line


def _period(today: date) -> tuple[date, date]:
    """?from=&to= (local days, inclusive); default: this week and the seven before it."""
    default_first = today - timedelta(days=today.weekday() + 7 * (DEFAULT_WEEKS - 1))
    first = params.day(request.args, "from", default_first)
    last = params.day(request.args, "to", today)
    if last < first or (last - first).days > MAX_DAYS:
        raise BadParameter("to", "okres od {first} do {last} jest pusty albo dłuższy niż {days} dni",
                           "the period from {first} to {last} is empty or longer than {days} days",
                           first=first, last=last, days=MAX_DAYS)
    return first, last


def _charts(weeks: list[dict]) -> dict:
    labels = [w["week"].strftime("%d.%m") for w in weeks]
    x_label = tr("tydzień (od poniedziałku)", "week (from Monday)")
    sla = [Series("first_response", tr("pierwsza odpowiedź", "first response"),
                  [w["sla"]["first_response"]["share"] for w in weeks], "#0b5cad"),
           Series("resolution", tr("rozwiązanie", "resolution"),
                  [w["sla"]["resolution"]["share"] for w in weeks], "#d9822b")]
    l1 = Series("l1_rate", tr("rozwiązane na L1", "resolved at L1"),
                [w["l1"]["rate"] for w in weeks], "#2e7d32")
    backlog = Series("backlog", tr("otwarte na koniec tygodnia", "open at the end of the week"),
                     [w["backlog"] for w in weeks], "#6b7a8f")
    return {
        "sla": line_chart("sla", tr("Dotrzymane SLA w tygodniu", "SLA met per week"), labels,
                          sla, y_label=tr("dotrzymane", "met"), x_label=x_label),
        "l1": line_chart("l1", tr("Rozwiązane na L1 (cel 60%)", "Resolved at L1 (target 60%)"),
                         labels, [l1], y_label=tr("udział", "share"), x_label=x_label,
                         reference=(tr("cel 60%", "target 60%"), L1_TARGET)),
        "backlog": bar_chart("backlog", tr("Zaległe zgłoszenia", "Backlog"), labels, backlog,
                             y_label=tr("zgłoszenia", "tickets"), x_label=x_label),
    }


def weekday_names() -> list[str]:
    return tr("pon wt śr czw pt sob nd", "Mon Tue Wed Thu Fri Sat Sun").split()


def _missed_calls_chart(calls: dict):
    """Missed and abandoned calls by weekday and hour: when L1 is short of hands."""
    def cell_title(day: str, hour: str, count: int) -> str:
        return tr("{day} {hour}:00–{hour}:59: nieodebrane i porzucone: {n}",
                  "{day} {hour}:00–{hour}:59: missed and abandoned: {n}",
                  day=day, hour=hour, n=count)

    return heat_map("missed_calls", tr("Nieodebrane i porzucone połączenia według dnia "
                                       "tygodnia i godziny",
                                       "Missed and abandoned calls by weekday and hour"),
                    weekday_names(), [f"{h:02}" for h in range(24)],
                    calls["missed_by_weekday_hour"], cell_title=cell_title,
                    x_label=tr("godzina ({tz})", "hour ({tz})", tz=calls["timezone"]))


@blueprint.get("/dashboard")
def dashboard():
    desk = helpdesk()
    now = desk.clock.now()
    first, last = _period(now.astimezone(desk.config.tz).date())
    with desk.store.transaction() as session:
        figures = report(session, desk.config, first, last, now)
        weeks = weekly(session, desk.config, first, last, now)
        charts = _charts(weeks)
        if "calls" in figures:
            charts["missed_calls"] = _missed_calls_chart(figures["calls"])
        return _render("triage_dashboard.html", session, counts=_counts(session, now),
                       has_sla=has_sla(), report=figures, first=first, last=last,
                       charts=charts, hours=hours, percent=percent, dimensions=DIMENSIONS,
                       weekdays=weekday_names())
