"""The hotline on the staff's web: the calls list, a ticket opened from an answered call, and
the dashboard's weekday × hour chart of missed calls.

Flask's test client on both backends; call records written straight into the store, as an
import would leave them. NOW (tests.conftest) is Wednesday 25 November 2026, 11:00 in Warsaw.
"""
from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import select

from daemon.store.models import Call, Client, OutboxMail, Technician, Ticket
from daemon.views import ticket_detail
from tests.callsupport import WARSAW, local
from tests.conftest import NOW
from tests.fixtures_web import TECHNICIAN, add_account, csrf_token, sign_in

BURSZTYN = "+48611002030"        # Sieć Bursztyn's configured phone


def add_call(store, call_id: str, started, *, direction: str = "in", outcome: str = "answered",
             caller: str | None = BURSZTYN, callee: str | None = "500", client: str | None = None,
             contact: str | None = None, technician: str | None = None) -> int:
    """A call record as an import stores it; returns its row id."""
    with store.transaction() as session:
        call = Call(source="orange", call_id=call_id, direction=direction, caller=caller,
                    callee=callee, started_at=started, outcome=outcome, wait_seconds=8,
                    talk_seconds=95 if outcome == "answered" else 0, contact=contact,
                    client=session.scalar(select(Client).where(Client.name == client))
                    if client else None,
                    technician=session.scalar(select(Technician).where(
                        Technician.email == technician)) if technician else None,
                    imported_at=started, raw={}, source_line="")
        session.add(call)
        session.flush()
        return call.id


@pytest.fixture
def technician(app):
    """A test client signed in as Anna Kowalska (L1 technician)."""
    add_account(app, TECHNICIAN, role="technician")
    client = app.test_client()
    assert sign_in(client, TECHNICIAN).status_code == 302
    return client


def tickets(store) -> list[dict]:
    with store.transaction() as session:
        return [ticket_detail(t, WARSAW, NOW) for t in
                session.scalars(select(Ticket).order_by(Ticket.id)).unique()]


def ticket_form(browser, call_id: int, **values) -> dict:
    data = {"name": "Jan Nowak", "email": "jan.nowak@bursztyn.pl", "client": "Sieć Bursztyn",
            "category": "cash_register", "subject": "Kasa nr 3 nie drukuje paragonów",
            "description": "Od rana kasa nr 3 w sklepie 12 nie drukuje.\nRestart nie pomógł.",
            **values}
    data.setdefault("csrf_token", csrf_token(browser, f"/calls/{call_id}/ticket"))
    return {k: v for k, v in data.items() if v is not None}


# -- the list -------------------------------------------------------------------------------------
def test_calls_list_shows_the_days_calls_and_what_can_become_a_ticket(app, store, technician):
    answered = add_call(store, "1", local("2026-11-25 10:50"), client="Sieć Bursztyn",
                        technician=TECHNICIAN)
    missed = add_call(store, "2", local("2026-11-25 10:40"), outcome="missed", caller=None)
    add_call(store, "3", local("2026-11-24 09:00"))                       # the day before
    page = unescape(technician.get("/calls").text)           # today, on Warsaw's calendar
    assert 'href="/calls" aria-current="page"' in page and "Połączenia" in page
    rows = re.findall(r'<tr data-call="(\d+)">(.*?)</tr>', page, re.DOTALL)
    assert [int(call_id) for call_id, _ in rows] == [answered, missed]   # newest first
    first, second = rows[0][1], rows[1][1]
    assert BURSZTYN in first and "odebrane" in first and "Anna Kowalska" in first
    assert f'href="/calls/{answered}/ticket"' in first
    assert "zastrzeżony" in second and "nieodebrane" in second and "/ticket" not in second
    yesterday = technician.get("/calls?day=2026-11-24&lang=en").text
    assert yesterday.count("<tr data-call=") == 1 and "Open a ticket" in yesterday
    assert technician.get("/calls?day=wczoraj").status_code == 400


def test_calls_need_a_sign_in(app, store):
    call_id = add_call(store, "1", local("2026-11-25 10:50"))
    visitor = app.test_client()
    for path in ("/calls", f"/calls/{call_id}/ticket"):
        response = visitor.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


# -- a ticket from a call -------------------------------------------------------------------------
def test_form_is_prefilled_from_the_call_record(app, store, technician):
    call_id = add_call(store, "1", local("2026-11-25 10:50"), client="Sieć Bursztyn",
                       contact="jan.nowak@bursztyn.pl", technician=TECHNICIAN)
    page = unescape(technician.get(f"/calls/{call_id}/ticket").text)
    assert re.search(rf'id="call-number">{re.escape(BURSZTYN)}<', page)
    assert re.search(r'id="call-time">śr 2026-11-25 10:50<', page)
    assert re.search(r'id="call-client">Sieć Bursztyn<', page)
    assert '<option value="Sieć Bursztyn" selected>' in page
    assert 'name="email" value="jan.nowak@bursztyn.pl"' in page
    assert 'name="csrf_token"' in page and 'name="subject"' in page and 'name="description"' in page
    english = technician.get(f"/calls/{call_id}/ticket?lang=en").text
    assert "Ticket from a call" in english and "What the caller reported" in english


def test_ticket_opened_from_a_call_is_a_routed_phone_ticket_linked_to_the_call(web_app, store):
    app = web_app(rules=[{"name": "phone calls are high", "channel": "phone",
                          "priority": "high"}])
    add_account(app, TECHNICIAN, role="technician")
    client = app.test_client()
    sign_in(client, TECHNICIAN)
    call_id = add_call(store, "1", local("2026-11-25 10:50"), client="Sieć Bursztyn",
                       technician=TECHNICIAN)
    response = client.post(f"/calls/{call_id}/ticket", data=ticket_form(client, call_id))
    assert response.status_code == 303 and response.headers["Location"].endswith("/tickets/JAN-1")
    [ticket] = tickets(store)
    assert (ticket["channel"], ticket["mailbox"], ticket["client"]) == ("phone", None,
                                                                        "Sieć Bursztyn")
    assert ticket["subject"] == "Kasa nr 3 nie drukuje paragonów"
    assert (ticket["requester"], ticket["requester_name"]) == ("jan.nowak@bursztyn.pl",
                                                               "Jan Nowak")
    assert ticket["category"] == "cash_register"
    # routed like any new ticket: the rule for phone, then the clocks from now (11:00)
    assert (ticket["tier"], ticket["priority"]) == ("L1", "high")
    # (the test clock starts at NOW and runs on: the seconds are whatever they are)
    assert ticket["first_response_due"].startswith("2026-11-25T12:00:")   # high: 1h
    assert [e["action"] for e in ticket["events"]] == ["created", "opened_from_call", "routed"]
    opened = ticket["events"][1]
    assert opened["actor"] == TECHNICIAN and opened["detail"]["call"] == "1"
    message, ack_copy = ticket["messages"]
    assert (message["direction"], message["kind"], ack_copy["direction"]) == ("in", "customer",
                                                                               "out")
    assert message["text"].startswith("Od rana kasa nr 3 w sklepie 12 nie drukuje.\nRestart")
    assert "Zgłoszenie telefoniczne" in message["text"]
    assert f"2026-11-25 10:50:00 (przychodzące), {BURSZTYN}" in message["text"]
    assert "Anna Kowalska <anna.kowalska@jantar.pl>" in message["text"]
    assert [c["call_id"] for c in ticket["calls"]] == ["1"]
    with store.transaction() as session:
        assert session.get(Call, call_id).ticket.number == "JAN-1"
        [ack] = session.scalars(select(OutboxMail)).all()
        assert (ack.kind, ack.recipients) == ("ack", ["jan.nowak@bursztyn.pl"])
    page = client.get("/tickets/JAN-1").text
    assert "Kasa nr 3 nie drukuje paragonów" in page and "Założono zgłoszenie JAN-1." in page


def test_a_call_with_a_ticket_links_to_it_and_opens_no_second(app, store, technician):
    call_id = add_call(store, "1", local("2026-11-25 10:50"))
    form = ticket_form(technician, call_id, email="", name="")
    assert technician.post(f"/calls/{call_id}/ticket", data=form).status_code == 303
    again = technician.post(f"/calls/{call_id}/ticket", data=form)     # a second click
    assert again.status_code == 303 and again.headers["Location"].endswith("/tickets/JAN-1")
    assert len(tickets(store)) == 1
    page = technician.get(f"/calls/{call_id}/ticket").text
    assert re.search(r'id="has-ticket">.*href="/tickets/JAN-1"', page, re.DOTALL)
    assert 'name="subject"' not in page
    assert 'href="/tickets/JAN-1">JAN-1</a>' in technician.get("/calls").text


def test_caller_without_an_address_is_the_requester_by_number_and_gets_no_mail(
        app, store, technician):
    call_id = add_call(store, "1", local("2026-11-25 10:50"))
    response = technician.post(f"/calls/{call_id}/ticket",
                               data=ticket_form(technician, call_id, email="", name="",
                                                client=""))
    assert response.status_code == 303
    [ticket] = tickets(store)
    assert ticket["requester"] == BURSZTYN and ticket["requester_name"] == BURSZTYN
    assert ticket["client"] is None
    assert ticket["first_response_due"].startswith("2026-11-25T15:00:")    # normal: 4h
    with store.transaction() as session:
        assert session.scalars(select(OutboxMail)).all() == []


def test_bad_fields_are_shown_next_to_the_field_and_nothing_is_opened(app, store, technician):
    call_id = add_call(store, "1", local("2026-11-25 10:50"))
    form = ticket_form(technician, call_id, subject="  ", email="jan@", client="Sieć Nieznana",
                       description="Kasa stoi")
    response = technician.post(f"/calls/{call_id}/ticket", data=form)
    assert response.status_code == 422
    page = unescape(response.text)
    for field, text in (("subject", "To pole jest wymagane."),
                        ("email", "Podaj poprawny adres e-mail albo zostaw puste."),
                        ("client", "Wybierz sieć z listy.")):
        block = re.search(rf'<div class="field[^"]*invalid[^"]*" id="field-{field}">(.*?)</div>',
                          page, re.DOTALL)
        assert block and text in block.group(1), field
        assert f'aria-describedby="{field}-error"' in block.group(1)
    assert "Kasa stoi</textarea>" in page                 # what was typed stays
    english = technician.post(f"/calls/{call_id}/ticket?lang=en", data=form).text
    assert "This field is required." in english
    assert tickets(store) == []


def test_opening_needs_the_csrf_token(app, store, technician):
    call_id = add_call(store, "1", local("2026-11-25 10:50"))
    response = technician.post(f"/calls/{call_id}/ticket",
                               data=ticket_form(technician, call_id, csrf_token=None))
    assert response.status_code == 400
    assert tickets(store) == []


def test_no_ticket_from_a_missed_call_or_a_call_that_is_not_there(app, store, technician):
    missed = add_call(store, "1", local("2026-11-25 10:50"), outcome="missed")
    page = technician.get(f"/calls/{missed}/ticket").text
    assert 'name="subject"' not in page and "oddzwonienia" in page
    form = ticket_form(technician, missed)
    assert technician.post(f"/calls/{missed}/ticket", data=form).status_code == 400
    assert technician.get("/calls/999999/ticket").status_code == 404
    assert technician.post("/calls/999999/ticket", data=form).status_code == 404
    assert tickets(store) == []


# -- the dashboard's missed calls by weekday and hour ---------------------------------------------
CELL = re.compile(r'<g class="cell" data-row="(\d)" data-column="(\d+)" data-count="(\d+)">'
                  r'.*?<title>([^<]*)</title></g>', re.DOTALL)


def test_dashboard_heat_map_counts_missed_and_abandoned_calls_by_weekday_and_hour(app, store):
    inserted = [  # (when, direction, outcome): counted when in and missed or abandoned
        ("2026-11-25 10:05", "in", "missed"),           # Wed 10
        ("2026-11-25 10:40", "in", "abandoned"),        # Wed 10
        ("2026-11-25 10:50", "in", "answered"),
        ("2026-11-25 10:55", "out", "missed"),          # our call out nobody took
        ("2026-11-25 10:58", "in", "busy"),
        ("2026-11-18 10:15", "in", "missed"),           # Wed 10, a week earlier
        ("2026-11-23 08:15", "in", "missed"),           # Mon 8
        ("2026-11-22 23:30", "in", "abandoned"),        # Sun 23 in Warsaw (22:30 UTC)
        ("2026-11-10 09:00", "in", "missed"),           # before the period
    ]
    for n, (when, direction, outcome) in enumerate(inserted):
        add_call(store, str(n), local(when), direction=direction, outcome=outcome,
                 caller="101" if direction == "out" else f"+4860000000{n}")
    add_account(app)
    client = app.test_client()
    sign_in(client)
    page = unescape(client.get("/dashboard?from=2026-11-16&to=2026-11-25").text)
    assert 'data-chart="missed_calls"' in page
    cells = {(int(r), int(c)): (int(n), title) for r, c, n, title in CELL.findall(page)}
    assert len(cells) == 7 * 24
    assert {k: n for k, (n, _) in cells.items() if n} == {(2, 10): 3, (0, 8): 1, (6, 23): 1}
    assert cells[(2, 10)][1] == "śr 10:00–10:59: nieodebrane i porzucone: 3"
    assert cells[(2, 11)][1] == "śr 11:00–11:59: nieodebrane i porzucone: 0"
    # the same numbers in the table for screen readers and copying
    table = re.search(r'<table class="list figures" id="missed-by-weekday-hour">(.*?)</table>',
                      page, re.DOTALL).group(1)
    wednesday = re.search(r'<th scope="row">śr</th>(.*?)</tr>', table, re.DOTALL).group(1)
    assert re.findall(r"<td[^>]*>(\d+)</td>", wednesday)[10] == "3"
    assert sum(int(n) for n in re.findall(r"<td[^>]*>(\d+)</td>", table)) == 5
    assert 'role="img" aria-label="Nieodebrane i porzucone połączenia według dnia tygodnia' in page
    english = unescape(client.get("/dashboard?from=2026-11-16&to=2026-11-25&lang=en").text)
    assert "Wed 10:00–10:59: missed and abandoned: 3" in english


def test_heat_map_shades_grow_with_the_count(app, store):
    for n in range(4):
        add_call(store, f"m{n}", local("2026-11-24 09:10") + timedelta(minutes=n),
                 outcome="missed")
    add_call(store, "one", local("2026-11-24 13:10"), outcome="missed")
    add_account(app)
    client = app.test_client()
    sign_in(client)
    page = client.get("/dashboard?from=2026-11-23&to=2026-11-25").text
    fill = {(int(r), int(c)): f for r, c, f in re.findall(
        r'data-row="(\d)" data-column="(\d+)" data-count="\d+"><rect [^>]*fill="([^"]+)"', page)}
    from webform.charts import HEAT
    assert fill[(1, 9)] == HEAT[5] and fill[(1, 13)] == HEAT[2] and fill[(1, 10)] == HEAT[0]
