"""The hotline's calls on the staff's web: a day's calls, and a ticket opened from one of them.

Anyone signed in may open a ticket from an answered call that has none: the form comes
prefilled with what the call record knows (the number, the matched client and contact,
the time), and the ticket is made by daemon.call_tickets like any other new ticket.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.datastructures import MultiDict

from daemon.call_tickets import (PhoneReport, external_number, locked_call, may_open_ticket,
                                 open_ticket_from_call)
from daemon.call_views import calls_query
from daemon.store.models import Call
from webform import helpdesk, params
from webform.i18n import tr
from webform.public import clean_value, valid_address
from webform.triage import Clockface, weekday_names

log = logging.getLogger(__name__)
blueprint = Blueprint("calls", __name__)

CALLS_SHOWN = 500
FIELDS = ("name", "email", "client", "category", "subject", "description")
LIMITS = {"name": 200, "email": 254, "client": 200, "category": 100, "subject": 200,
          "description": 20_000}
REQUIRED = ("subject", "description")
WORDS = {
    "in": ("przychodzące", "incoming"), "out": ("wychodzące", "outgoing"),
    "internal": ("wewnętrzne", "internal"), "answered": ("odebrane", "answered"),
    "missed": ("nieodebrane", "missed"), "abandoned": ("porzucone", "abandoned"),
    "busy": ("zajęte", "busy"), "failed": ("nieudane", "failed"),
    "voicemail": ("poczta głosowa", "voicemail"),
}


def word(value: str | None) -> str:
    """A direction or outcome in the reader's language."""
    pair = WORDS.get(value or "")
    return tr(*pair) if pair else (value or "—")


def _clock() -> Clockface:
    desk = helpdesk()
    return Clockface(desk.clock.now(), desk.config.tz)


def _render(template: str, **context):
    return render_template(template, clock=_clock(), word=word, number_of=external_number,
                           may_open_ticket=may_open_ticket, weekdays=weekday_names(),
                           **context)


# -- the list ------------------------------------------------------------------------------------
def _day(today: date) -> date:
    return params.day(request.args, "day", today)


@blueprint.get("/calls")
def calls():
    """One local day's calls, newest first (?day=YYYY-MM-DD; default today)."""
    desk = helpdesk()
    tz = desk.config.tz
    day = _day(desk.clock.now().astimezone(tz).date())
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    query = (calls_query(start=start, end=end).order_by(None)
             .order_by(Call.started_at.desc(), Call.id.desc()).limit(CALLS_SHOWN + 1))
    with desk.store.transaction() as session:
        found = list(session.scalars(query))
        return _render("calls.html", calls=found[:CALLS_SHOWN], more=len(found) > CALLS_SHOWN,
                       day=day, previous_day=day - timedelta(days=1),
                       next_day=day + timedelta(days=1))


# -- a ticket from a call ------------------------------------------------------------------------
def _call_or_404(session, call_id: int, *, lock: bool = False) -> Call:
    call = locked_call(session, call_id) if lock else session.get(Call, call_id)
    if call is None:
        abort(404)
    return call


def _clients() -> list[str]:
    return [c.name for c in helpdesk().config.clients]


def prefill(call: Call) -> dict[str, str]:
    """What the call record already says about the caller."""
    return {"name": "", "email": call.contact or "",
            "client": call.client.name if call.client else "", "category": "",
            "subject": "", "description": ""}


def read_phone_report(form: MultiDict) -> tuple[dict[str, str], dict[str, str]]:
    """The form's values, cleaned as the public form cleans them, and what is wrong."""
    values = {name: clean_value(name, form.get(name, "")) for name in FIELDS}
    values["email"] = form.get("email", "").strip()   # a line break in it is no typo
    errors = {}
    for name in FIELDS:
        if problem := _field_problem(name, values[name]):
            errors[name] = problem
    return values, errors


def _field_problem(name: str, value: str) -> str | None:
    if not value:
        return tr("To pole jest wymagane.", "This field is required.") if name in REQUIRED else None
    if len(value) > LIMITS[name]:
        return tr("Najwyżej {n} znaków.", "At most {n} characters.", n=LIMITS[name])
    if name == "email" and not valid_address(value):
        return tr("Podaj poprawny adres e-mail albo zostaw puste.",
                  "Enter a valid email address or leave it empty.")
    if name == "client" and value not in _clients():
        return tr("Wybierz sieć z listy.", "Choose a network from the list.")
    if name == "category" and helpdesk().web.form.category(value) is None:
        return tr("Wybierz kategorię z listy.", "Choose a category from the list.")
    return None


def _form_page(call: Call, values: dict[str, str], errors: dict[str, str], status: int = 200):
    page = _render("call_ticket.html", call=call, values=values, errors=errors,
                   clients=_clients(), categories=helpdesk().web.form.categories)
    return page, status


@blueprint.get("/calls/<int:call_id>/ticket")
def ticket_form(call_id: int):
    with helpdesk().store.transaction() as session:
        call = _call_or_404(session, call_id)
        return _form_page(call, prefill(call), {})


@blueprint.post("/calls/<int:call_id>/ticket")
def open_ticket(call_id: int):
    desk = helpdesk()
    values, errors = read_phone_report(request.form)
    with desk.store.transaction() as session:
        call = _call_or_404(session, call_id, lock=True)
        if call.ticket is not None:
            flash(tr("To połączenie ma już zgłoszenie {n}.", "This call has a ticket already: {n}.",
                     n=call.ticket.number), "info")
            return redirect(url_for("triage.ticket", number=call.ticket.number), code=303)
        if not may_open_ticket(call):
            abort(400)
        if errors:
            return _form_page(call, values, errors, 422)
        report = PhoneReport(subject=values["subject"], description=values["description"],
                             name=values["name"], email=values["email"],
                             client=values["client"] or None, category=values["category"] or None)
        number = open_ticket_from_call(session, desk.config, call, report,
                                       actor=current_user.email, actor_name=current_user.name,
                                       now=desk.clock.now()).number
    flash(tr("Założono zgłoszenie {n}.", "Ticket {n} opened.", n=number), "success")
    return redirect(url_for("triage.ticket", number=number), code=303)
