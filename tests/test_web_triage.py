"""The staff's web screens through Flask's test client, on both backends.

The triage list (counts, filters, search, keyset pages, bulk actions, held mail), the
ticket page (thread, isolated HTML, files, actions, audit trail), the quarantine and
who may do what. Tickets come in through the real pipeline where their content matters,
and are written straight into the store where only their numbers do (paging).
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from html import unescape

import pytest
from sqlalchemy import event, select

from daemon.clock import Clock
from daemon.quarantine import purge_discarded
from daemon.service import Daemon
from daemon.store.models import (Attachment, Client, Message, OutboxMail, RawMessage,
                                 Technician, Ticket)
from daemon.tickets import next_number
from tests.conftest import NOW
from tests.mailfactory import deliver, make_mail
from webform import queries, triage
from webform.accounts import hash_password

COORDINATOR = "koordynator@jantar.pl"
ANNA = "anna.kowalska@jantar.pl"      # L1 technician
PIOTR = "piotr.nowak@jantar.pl"       # L2 technician
CUSTOMER = "jan.nowak@bursztyn.pl"
PASSWORD = "dobre-haslo-123"
ROW = re.compile(r'id="row-(JAN-\d+)"')


# -- fixtures --------------------------------------------------------------------------------
class Browser:
    """A signed-in test client that knows its CSRF token."""

    def __init__(self, client):
        self.client = client
        self.token = ""

    def sign_in(self, email: str) -> Browser:
        page = self.client.get("/login")
        response = self.client.post("/login", data={"email": email, "password": PASSWORD,
                                                    "csrf_token": csrf_of(page.text)})
        assert response.status_code == 302, response.text
        self.token = csrf_of(self.client.get("/dashboard").text)  # the session is new now
        return self

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data=None, *, csrf: bool = True, **kwargs):
        data = dict(data or {})
        if csrf:
            data["csrf_token"] = self.token
        return self.client.post(path, data=data, **kwargs)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@dataclass
class Web:
    app: object
    config: object
    store: object

    def browser(self, email: str | None = COORDINATOR) -> Browser:
        browser = Browser(self.app.test_client())
        return browser.sign_in(email) if email else browser

    def mail(self, **kwargs) -> None:
        deliver(self.store, self.config, make_mail(**kwargs), now=NOW)

    def ticket(self, number: str) -> Ticket:
        with self.store.transaction() as session:
            ticket = session.scalar(select(Ticket).where(Ticket.number == number))
            ticket.messages, ticket.events, ticket.participants  # loaded before the session ends
            for message in ticket.messages:
                message.attachments
            return ticket

    def outbox(self, kind: str | None = None) -> list[OutboxMail]:
        with self.store.transaction() as session:
            query = select(OutboxMail).order_by(OutboxMail.id)
            if kind:
                query = query.where(OutboxMail.kind == kind)
            return list(session.scalars(query))

    def update(self, number: str, **values) -> None:
        with self.store.transaction() as session:
            ticket = session.scalar(select(Ticket).where(Ticket.number == number))
            for name, value in values.items():
                setattr(ticket, name, value)


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)  # scrypt is slow on purpose: once per run is enough


def give_passwords(store, password_hash: str) -> None:
    """The three configured people (tests.conftest.BASE_CONFIG) can sign in with PASSWORD."""
    with store.transaction() as session:
        for technician in session.scalars(select(Technician)):
            technician.password_hash = password_hash


@pytest.fixture
def web(web_app, store, password_hash) -> Web:
    app = web_app()
    # These tests write tickets straight into the store, behind the app's back, and look
    # at the counts at once: no reuse of counts read a moment earlier (see
    # test_counts_are_reused_for_a_few_seconds_and_forgotten_after_a_change).
    app.config["TRIAGE_HEADER_MAX_AGE"] = 0
    give_passwords(store, password_hash)
    return Web(app, app.extensions["helpdesk"].config, store)


@pytest.fixture
def coordinator(web) -> Browser:
    return web.browser(COORDINATOR)


@pytest.fixture
def technician(web) -> Browser:
    return web.browser(ANNA)


def add_tickets(store, count: int, **fields) -> list[str]:
    """COUNT tickets written straight into the store; FIELDS may be callables of the index."""
    numbers = []
    with store.transaction() as session:
        for i in range(count):
            values = {name: value(i) if callable(value) else value
                      for name, value in fields.items()}
            created = values.pop("created_at", NOW - timedelta(minutes=count - i))
            ticket = Ticket(number=next_number(session, "JAN"), subject=f"Ticket {i}",
                            status="open", tier="L1", priority="normal",
                            requester_email=f"client{i}@example.com", channel="email",
                            held=False, message_count=1, created_at=created, updated_at=created)
            for name, value in values.items():
                setattr(ticket, name, value)
            session.add(ticket)
            session.add(Message(ticket=ticket, direction="in", kind="customer",
                                from_email=ticket.requester_email, text=f"body of ticket {i}",
                                created_at=created))
            session.flush()
            numbers.append(ticket.number)
    return numbers


def listed(response) -> list[str]:
    assert response.status_code == 200, response.text[:2000]
    return ROW.findall(response.text)


def listed_of(page: str) -> list[str]:
    return ROW.findall(page)


def count_on(page: str, name: str) -> str:
    return re.search(rf'data-count="{name}"[^>]*><b>([^<]*)</b>', page).group(1)


def walk(browser: Browser, path: str) -> list[str]:
    """Every ticket of a list, following its "next page" links."""
    seen, pages = [], 0
    while path:
        response = browser.get(path)
        seen += listed(response)
        pages += 1
        assert pages < 100, "the pages never end"
        link = re.search(r'<a rel="next" href="([^"]+)"', response.text)
        path = unescape(link.group(1)) if link else None
    return seen


# -- sign-in and permissions ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/tickets", "/tickets/JAN-1", "/tickets/JAN-1/attachments/1",
                                  "/quarantine", "/quarantine/1/raw", "/dashboard"])
def test_every_staff_page_sends_strangers_to_sign_in(web, path):
    response = web.browser(None).get(path)
    assert response.status_code == 302
    assert response.location.startswith("/login?next=")


@pytest.mark.parametrize("method, path", [
    ("post", "/tickets/bulk"), ("post", "/tickets/JAN-1/messages/1/attach"),
    ("post", "/tickets/JAN-1/messages/1/split"), ("get", "/quarantine"),
    ("post", "/quarantine/1/reprocess"), ("post", "/quarantine/1/discard"),
    ("get", "/quarantine/1/raw")])
def test_coordinator_only_pages_refuse_technicians(web, technician, method, path):
    web.mail()
    assert getattr(technician, method)(path).status_code == 403


def test_technicians_see_the_list_and_act_on_a_ticket(web, technician):
    web.mail()
    page = technician.get("/tickets").text
    assert listed(technician.get("/tickets")) == ["JAN-1"]
    assert 'name="ticket"' not in page and "triage.bulk" not in page  # no bulk bar for them
    response = technician.post("/tickets/JAN-1/update", {"priority": "high"})
    assert response.status_code == 302
    assert web.ticket("JAN-1").priority == "high"


def test_unknown_ticket_is_404(coordinator):
    assert coordinator.get("/tickets/JAN-404").status_code == 404
    assert coordinator.post("/tickets/JAN-404/note", {"text": "x"}).status_code == 404
    assert coordinator.get("/tickets/JAN-404/attachments/1").status_code == 404


# -- the list: counts, columns, filters, search --------------------------------------------------
def test_counts_at_the_top(web, coordinator):
    with web.store.transaction() as session:
        anna = session.scalar(select(Technician).where(Technician.email == ANNA))
    add_tickets(web.store, 2, tier="L1")
    add_tickets(web.store, 1, tier="L2", status="new")
    add_tickets(web.store, 1, tier="L3", assignee_id=anna.id)
    add_tickets(web.store, 1, status="waiting")
    add_tickets(web.store, 1, held=True)
    add_tickets(web.store, 1, status="resolved")
    add_tickets(web.store, 1, resolution_due=NOW - timedelta(hours=1), first_responded_at=NOW)
    add_tickets(web.store, 1, first_response_due=NOW + timedelta(hours=1))
    page = coordinator.get("/tickets").text
    assert [count_on(page, f"open_{tier}") for tier in ("L1", "L2", "L3")] == ["5", "1", "1"]
    assert count_on(page, "unassigned") == "7"   # the active ones but the L3
    assert count_on(page, "waiting") == "1"
    assert count_on(page, "held") == "1"
    assert count_on(page, "sla_overdue") == "1"
    assert count_on(page, "sla_soon") == "1"


def test_counts_are_reused_for_a_few_seconds_and_forgotten_after_a_change(
        web, coordinator, monkeypatch):
    """The counts at the top (and the menus) are read once per HEADER_MAX_AGE in a process:
    a ticket written behind the app's back shows in the list at once, in the counts only
    after that; a change made through the app (a POST) shows in the counts at once."""
    web.app.config["TRIAGE_HEADER_MAX_AGE"] = triage.HEADER_MAX_AGE
    web.app.extensions.pop("triage_header", None)   # read while signing in, at real time
    seconds = [1000.0]
    monkeypatch.setattr(triage, "monotonic", lambda: seconds[0])
    add_tickets(web.store, 2, tier="L2")
    page = coordinator.get("/tickets").text
    assert count_on(page, "open_L2") == "2" and count_on(page, "unassigned") == "2"
    add_tickets(web.store, 1, tier="L2")                      # the daemon, another worker
    seconds[0] += triage.HEADER_MAX_AGE - 0.5
    page = coordinator.get("/tickets").text
    assert len(listed_of(page)) == 3                          # the rows are always fresh
    assert count_on(page, "open_L2") == "2"                   # the counts a moment old
    seconds[0] += 0.5
    page = coordinator.get("/tickets").text
    assert count_on(page, "open_L2") == "3"
    numbers = add_tickets(web.store, 1, tier="L2")
    response = coordinator.post("/tickets/bulk", {"ticket": numbers, "assignee": PIOTR})
    assert response.status_code == 302
    page = coordinator.get("/tickets").text                    # same second: read again
    assert count_on(page, "open_L2") == "4" and count_on(page, "unassigned") == "3"


def test_the_list_shows_each_column(web, coordinator):
    web.mail(sender="Jan Nowak <jan.nowak@bursztyn.pl>", subject="Kasa nr 3 nie startuje")
    web.update("JAN-1", first_response_due=NOW - timedelta(minutes=30))
    page = coordinator.get("/tickets").text
    row = page[page.index('id="row-JAN-1"'):]
    row = row[:row.index("</tr>")]
    for text in ("JAN-1", "Kasa nr 3 nie startuje", "Sieć Bursztyn", "Jan Nowak", "L1",
                 "normalny", "nowe", "e-mail"):
        assert text in row, text
    assert 'class="overdue"' in row and "−30 min" in row   # SLA time left, in red
    assert ">0 min<" in row  # age


def test_sla_left_is_a_dash_without_a_due_time(web, coordinator):
    add_tickets(web.store, 1)
    page = coordinator.get("/tickets").text
    assert re.search(r'data-label="SLA: zostało">\s*<span class="">—</span>', page)


FILTERS = [
    ("", ["JAN-1", "JAN-2", "JAN-3", "JAN-4", "JAN-6"]),
    ("status=all", ["JAN-1", "JAN-2", "JAN-3", "JAN-4", "JAN-5", "JAN-6"]),
    ("status=waiting", ["JAN-3"]),
    ("status=resolved", ["JAN-5"]),
    ("tier=L2", ["JAN-2"]),
    ("priority=urgent", ["JAN-4"]),
    ("client=Market+Kaszub", ["JAN-2"]),
    ("client=none", ["JAN-3", "JAN-4", "JAN-6"]),
    ("assignee=anna.kowalska%40jantar.pl", ["JAN-1"]),
    ("assignee=none", ["JAN-2", "JAN-3", "JAN-4", "JAN-6"]),
    ("requester=kaszub", ["JAN-2"]),
    ("requester=Zofia", ["JAN-3"]),
    ("channel=web", ["JAN-4"]),
    ("held=1", ["JAN-6"]),
    ("held=0", ["JAN-1", "JAN-2", "JAN-3", "JAN-4"]),
    ("older_than=2h", ["JAN-1", "JAN-2"]),
    ("sla=overdue", ["JAN-1"]),
    ("sla=soon", ["JAN-2"]),
    ("tier=L1&priority=urgent", ["JAN-4"]),
]


def test_each_filter(web, coordinator):
    with web.store.transaction() as session:
        anna = session.scalar(select(Technician).where(Technician.email == ANNA))
        bursztyn, kaszub = (session.scalar(select(Client).where(Client.name == name))
                            for name in ("Sieć Bursztyn", "Market Kaszub"))
    add_tickets(web.store, 1, client_id=bursztyn.id, assignee_id=anna.id,
                created_at=NOW - timedelta(hours=5), first_response_due=NOW - timedelta(hours=1))
    add_tickets(web.store, 1, client_id=kaszub.id, tier="L2", requester_email="ola@kaszub.com.pl",
                created_at=NOW - timedelta(hours=3), first_response_due=NOW + timedelta(hours=2))
    add_tickets(web.store, 1, status="waiting", requester_name="Zofia Wiśniewska")
    add_tickets(web.store, 1, priority="urgent", channel="web")
    add_tickets(web.store, 1, status="resolved")
    add_tickets(web.store, 1, held=True)
    for query, expected in FILTERS:
        assert sorted(listed(coordinator.get(f"/tickets?sort=newest&{query}"))) == expected, query


SEARCHES = [
    ("fiskalna", ["JAN-1"]),            # subject
    ("FISKALNA", ["JAN-1"]),            # any case
    ("paragon", ["JAN-2"]),             # the text of a message
    ("jan-2", ["JAN-2"]),               # the number
    ("ola@kaszub", ["JAN-3"]),          # the requester
    ("100%", ["JAN-3"]),                # LIKE wildcards are plain characters
    ("%", ["JAN-3"]),
    ("_", []),
]


def test_text_search_over_subject_body_number_and_requester(web, coordinator):
    web.mail(subject="Drukarka fiskalna", body="Nie działa.\n")
    web.mail(subject="Kasa", body="Nie drukuje paragonów.\n")
    web.mail(sender="ola@kaszub.com.pl", subject="Dysk zajęty w 100%", body="Pełny.\n")
    for q, expected in SEARCHES:
        assert sorted(listed(coordinator.get("/tickets", query_string={"q": q}))) == expected, q


def test_search_finds_what_people_wrote_not_the_daemons_own_notices(web, coordinator):
    """The acknowledgement's copy on the ticket says "dziękujemy za zgłoszenie"; the
    customer did not. A search for the template's words would list every acknowledged
    ticket."""
    web.mail(subject="Kasa", body="Nie drukuje paragonów.\n")
    with web.store.transaction() as session:
        kinds = [m.kind for m in session.scalars(select(Message).order_by(Message.id))]
    assert "system" in kinds    # the ack's copy is there to be (not) found
    assert listed(coordinator.get("/tickets", query_string={"q": "dziękujemy"})) == []
    assert listed(coordinator.get("/tickets", query_string={"q": "paragonów"})) == ["JAN-1"]


def test_the_search_condition_lets_postgresql_use_the_partial_trigram_index(web):
    """The index is made WHERE kind <> 'system': PostgreSQL uses it only for a query that
    carries that same condition, as the search's messages do (without it: no index)."""
    if web.store.backend != "postgresql":
        pytest.skip("the plan is checked on PostgreSQL")
    word = Message.text.icontains("xyzzyplugh", autoescape=True)
    plans = {}
    with web.store.engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")
        for name, where in [("people", [queries.written_by_people(), word]), ("all", [word])]:
            statement = select(Message.id).where(*where).compile(
                web.store.engine, compile_kwargs={"literal_binds": True})
            plans[name] = "\n".join(row[0] for row in
                                    connection.exec_driver_sql(f"EXPLAIN {statement}"))
    assert "ix_messages_text_trgm" in plans["people"], plans["people"]
    assert "ix_messages_text_trgm" not in plans["all"], plans["all"]


@pytest.mark.parametrize("head", [3, 1000])
def test_search_pages_are_the_matches_in_list_order_however_common_the_word(
        web, coordinator, monkeypatch, head):
    """On PostgreSQL a search checks the list's first SEARCH_HEAD tickets one by one, then
    walks on (the word was seen) or asks the trigram index (it was not): every way must
    give the pages a plain filter would. A head of 3 tickets forces each way here."""
    monkeypatch.setattr(queries, "SEARCH_HEAD", head)
    due = [NOW + timedelta(minutes=(i * 7) % 40) for i in range(30)]
    numbers = add_tickets(web.store, 30, resolution_due=lambda i: due[i], first_responded_at=NOW,
                          subject=lambda i: "Zasilacz padł" if i == 17 else f"Ticket {i}")
    in_order = [n for _, _, n in sorted((due[i], int(n.split("-")[1]), n)
                                        for i, n in enumerate(numbers))]
    texts = {n: f"body of ticket {i}" for i, n in enumerate(numbers)}
    for q, matches in [("body", lambda n: True),                       # every ticket
                       ("ticket 2", lambda n: "ticket 2" in texts[n]),  # 11 of 30
                       ("ticket 29", lambda n: texts[n].endswith("29")),  # one, far down
                       ("zasilacz", lambda n: n == numbers[17]),        # a subject
                       ("nowhere", lambda n: False)]:
        expected = [n for n in in_order if matches(n)]
        assert walk(coordinator, f"/tickets?limit=2&q={q.replace(' ', '+')}") == expected, q


@pytest.mark.parametrize("query", ["status=bogus", "tier=L9", "priority=meh", "held=2",
                                   "older_than=soon", "sla=late", "sort=random", "limit=x",
                                   "after=garbage", "sort=newest&after=1.2"])
def test_values_no_form_sends_are_400(coordinator, query):
    assert coordinator.get(f"/tickets?{query}").status_code == 400


# -- keyset paging ---------------------------------------------------------------------------------
def test_newest_first_pages_walk_every_ticket_once(web, coordinator):
    numbers = add_tickets(web.store, 120)
    seen = walk(coordinator, "/tickets?sort=newest&limit=25")
    assert seen == list(reversed(numbers))


def test_sla_pages_walk_every_ticket_once_in_due_order(web, coordinator):
    # Ties in the due time, tickets with none (last), some already answered.
    due = [NOW + timedelta(minutes=(i * 7) % 40) if i % 5 else None for i in range(120)]
    numbers = add_tickets(web.store, 120, resolution_due=lambda i: due[i],
                          first_responded_at=NOW)
    seen = walk(coordinator, "/tickets?limit=25")
    expected = [n for _, _, n in sorted(
        (due[i] is None, due[i] or NOW, int(n.split("-")[1])) for i, n in enumerate(numbers))]
    assert seen == [f"JAN-{n}" for n in expected]
    assert len(set(seen)) == 120


def test_paging_keeps_the_filter(web, coordinator):
    add_tickets(web.store, 60, priority=lambda i: "high" if i % 2 else "normal")
    seen = walk(coordinator, "/tickets?priority=high&limit=7")
    assert len(seen) == 30 and len(set(seen)) == 30


def test_a_cursor_is_the_last_rows_sort_key(web, coordinator):
    add_tickets(web.store, 3, resolution_due=NOW + timedelta(hours=1), first_responded_at=NOW)
    page = coordinator.get("/tickets?limit=2").text
    assert "after=20261125T110000000000.2&" in page
    assert listed(coordinator.get("/tickets?limit=2&after=20261125T110000000000.2")) == ["JAN-3"]
    assert listed(coordinator.get("/tickets?sort=newest&limit=2&after=2")) == ["JAN-1"]


# -- bulk actions -----------------------------------------------------------------------------------
def test_bulk_assign_notifies_the_technician_in_one_go(web, coordinator):
    web.mail(subject="Pierwszy")
    web.mail(subject="Drugi")
    before = len(web.outbox("assigned"))
    response = coordinator.post("/tickets/bulk", {"ticket": ["JAN-1", "JAN-2"], "assignee": PIOTR,
                                                  "return_to": "tier=L1&bogus=1"})
    assert response.status_code == 302
    assert response.location == "/tickets?tier=L1"   # back to the list as it was filtered
    for number in ("JAN-1", "JAN-2"):
        ticket = web.ticket(number)
        assert ticket.assignee.email == PIOTR and ticket.tier == "L2" and ticket.status == "open"
        assigned = [e for e in ticket.events if e.action == "assigned"]
        assert assigned[-1].actor == COORDINATOR
    sent = web.outbox("assigned")[before:]
    assert len(sent) == 2 and all(m.recipients == [PIOTR] for m in sent)


def test_bulk_tier_priority_and_status(web, coordinator):
    web.mail(subject="Pierwszy")
    web.mail(subject="Drugi")
    coordinator.post("/tickets/bulk", {"ticket": ["JAN-1", "JAN-2"], "tier": "L3",
                                       "priority": "urgent", "status": "resolved"})
    for number in ("JAN-1", "JAN-2"):
        ticket = web.ticket(number)
        assert (ticket.tier, ticket.priority, ticket.status) == ("L3", "urgent", "resolved")
        actions = {e.action for e in ticket.events if e.actor == COORDINATOR}
        assert {"tier_changed", "priority_changed", "status_changed"} <= actions
    resolved = web.outbox("resolved")
    assert sorted(m.ticket_id for m in resolved) == [1, 2]
    assert all(m.recipients == [CUSTOMER] for m in resolved)


def test_bulk_without_csrf_is_refused_and_changes_nothing(web, coordinator):
    web.mail()
    response = coordinator.post("/tickets/bulk", {"ticket": "JAN-1", "priority": "urgent"},
                                csrf=False)
    assert response.status_code == 400
    assert web.ticket("JAN-1").priority == "normal"


def test_bulk_is_all_or_nothing(web, coordinator):
    web.mail()
    response = coordinator.post("/tickets/bulk", {"ticket": ["JAN-1", "JAN-99"],
                                                  "priority": "urgent"})
    assert response.status_code == 404
    assert web.ticket("JAN-1").priority == "normal"


@pytest.mark.parametrize("form, message", [
    ({"priority": "urgent"}, "Nie zaznaczono"),
    ({"ticket": "JAN-1"}, "Nie wybrano zmiany"),
    ({"ticket": "JAN-1", "assignee": ANNA, "tier": "L3"}, "pracuje na linii L1"),
])
def test_bulk_explains_what_is_missing(web, coordinator, form, message):
    web.mail()
    response = coordinator.post("/tickets/bulk", form, follow_redirects=True)
    assert message in response.text
    assert web.ticket("JAN-1").assignee is None


@pytest.mark.parametrize("form", [{"tier": "L9"}, {"priority": "meh"}, {"status": "gone"},
                                  {"assignee": "nobody@jantar.pl"}])
def test_bulk_values_no_form_offers_are_400(web, coordinator, form):
    web.mail()
    assert coordinator.post("/tickets/bulk", {"ticket": "JAN-1", **form}).status_code == 400


# -- held tickets ----------------------------------------------------------------------------------
def held_reply(web) -> int:
    web.mail(message_id="<p1@bursztyn.pl>")
    web.mail(sender="obcy@example.org", subject="Re: [#JAN-1] Drukarka", body="Mam to samo.\n",
             cc="kolega@example.org")
    ticket = web.ticket("JAN-1")
    assert ticket.held
    return next(m.id for m in ticket.messages if m.held)


def test_the_ticket_page_says_why_each_message_is_held(web, coordinator):
    """A stranger's reply, and a mail From a technician's address that proved nothing."""
    held_reply(web)
    web.mail(sender=ANNA, subject="Re: [#JAN-1] Drukarka", body="#resolve\n")
    page = coordinator.get("/tickets/JAN-1").text
    assert page.count('class="badge held"') == 3                      # the ticket and both mails
    assert "wstrzymane: nadawca spoza zgłoszenia" in page
    assert "wstrzymane: adres pracownika bez dowodu, że to on" in page
    assert web.ticket("JAN-1").status == "new"


def test_held_ticket_is_one_click_from_attach_and_split_on_the_list(web, coordinator):
    message_id = held_reply(web)
    page = coordinator.get("/tickets").text
    assert f'formaction="/tickets/JAN-1/messages/{message_id}/attach"' in page
    assert f'formaction="/tickets/JAN-1/messages/{message_id}/split"' in page


def test_attach_accepts_the_sender_onto_the_ticket(web, coordinator):
    message_id = held_reply(web)
    response = coordinator.post(f"/tickets/JAN-1/messages/{message_id}/attach",
                                {"from": "list", "return_to": "held=1"})
    assert response.location == "/tickets?held=1"
    ticket = web.ticket("JAN-1")
    assert not ticket.held and not any(m.held for m in ticket.messages)
    assert "obcy@example.org" in [p.email for p in ticket.participants if p.role == "cc"]
    assert [e.actor for e in ticket.events if e.action == "held_attached"] == [COORDINATOR]
    forwarded = web.outbox("forward")
    assert forwarded and forwarded[-1].recipients == [COORDINATOR]  # nobody assigned yet


def test_split_makes_the_held_message_a_ticket_of_its_own(web, coordinator):
    message_id = held_reply(web)
    response = coordinator.post(f"/tickets/JAN-1/messages/{message_id}/split")
    assert response.location == "/tickets/JAN-1"
    original, split = web.ticket("JAN-1"), web.ticket("JAN-2")
    assert not original.held and original.message_count == len(original.messages)
    assert message_id not in [m.id for m in original.messages]
    moved, *answers = split.messages
    assert moved.id == message_id and not moved.held
    assert [m.kind for m in answers] == ["system"]   # its acknowledgement
    assert split.requester_email == "obcy@example.org" and split.channel == "email"
    assert split.subject == "Re: Drukarka"   # the other ticket's tag is gone
    assert [p.email for p in split.participants] == ["obcy@example.org"]  # nobody from CC
    assert [e.detail["new_ticket"] for e in original.events if e.action == "held_split"] == ["JAN-2"]
    assert [e.detail["original"] for e in split.events if e.action == "split_from"] == ["JAN-1"]
    with web.store.transaction() as session:
        raw = session.get(RawMessage, split.messages[0].raw_id)
        assert raw.ticket_id == split.id
    [ack] = [m for m in web.outbox("ack") if m.ticket_id == split.id]
    assert ack.recipients == ["obcy@example.org"] and "[#JAN-2]" in ack.subject


def test_held_actions_refuse_a_message_that_is_not_held(web, coordinator):
    message_id = held_reply(web)
    first = web.ticket("JAN-1").messages[0].id
    assert coordinator.post(f"/tickets/JAN-1/messages/{first}/attach").status_code == 404
    assert coordinator.post(f"/tickets/JAN-9/messages/{message_id}/split").status_code == 404
    coordinator.post(f"/tickets/JAN-1/messages/{message_id}/attach")
    assert coordinator.post(f"/tickets/JAN-1/messages/{message_id}/split").status_code == 404


def test_ticket_page_offers_held_actions_to_coordinators_only(web, coordinator, technician):
    message_id = held_reply(web)
    action = f'action="/tickets/JAN-1/messages/{message_id}/attach"'
    assert action in coordinator.get("/tickets/JAN-1").text
    assert action not in technician.get("/tickets/JAN-1").text


# -- the ticket page ---------------------------------------------------------------------------------
HOSTILE_HTML = """<p>Drukarka <b>stoi</b>.</p>
<script>window.__pwned = 1; alert(1)</script>
<img src="x" onerror="window.__pwned = 2">
<svg onload="alert(3)"><circle r="4"/></svg>
<a href="javascript:alert(4)">kliknij</a>
<p style="width: expression(alert(5)); background: url(javascript:alert(6))">styl</p>
<img src="https://tracker.example/pixel.gif" alt="logo">
<img src="//tracker.example/other.gif">
<img src="cid:logo@bursztyn">
"""
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
       b"\x00\x00\x00\x00IEND\xaeB`\x82")


def hostile_mail() -> bytes:
    raw = make_mail(subject="Zła poczta", html=HOSTILE_HTML)
    mail = message_from_bytes(raw, policy=policy.SMTP)
    html_part = next(p for p in mail.walk() if p.get_content_type() == "text/html")
    html_part.make_related()
    html_part.add_related(PNG, maintype="image", subtype="png", cid="<logo@bursztyn>")
    return mail.as_bytes()


def srcdocs(page: str) -> list[str]:
    return [unescape(doc) for doc in re.findall(r'<iframe sandbox="" srcdoc="([^"]*)"', page)]


def test_ticket_page_shows_the_thread(web, coordinator):
    web.mail(sender="Jan Nowak <jan.nowak@bursztyn.pl>", body="Drukarka nie drukuje.\n")
    page = coordinator.get("/tickets/jan-1").text   # any case
    assert "Jan Nowak" in page and "Drukarka nie drukuje." in page
    assert "klient" in page                                        # kind
    assert "2026-11-25 11:00" in page                              # time, Warsaw
    assert "created" in page and "routed" in page                  # the audit trail


def test_mail_html_is_sanitised_and_sandboxed(web, coordinator):
    deliver(web.store, web.config, hostile_mail(), now=NOW)
    response = coordinator.get("/tickets/JAN-1")
    page = response.text
    [customer_html, *_] = srcdocs(page)
    assert "<b>stoi</b>" in customer_html
    for payload in ("<script", "onerror", "onload", "javascript:", "expression(", "__pwned",
                    "<svg", "style=\"width"):
        assert payload not in customer_html.split("<body>", 1)[1], payload
    assert "<script" not in page.split("</head>", 1)[1]  # nor anywhere on the page
    # No remote image until asked: neither by URL nor by the frame's own policy.
    assert "tracker.example" not in customer_html
    assert "img-src data:;" in customer_html
    assert "Zablokowano obrazki z zewnętrznych serwerów: 2" in page
    assert 'href="/tickets/JAN-1?images=1"' in page
    assert "img-src 'self' data:;" in response.headers["Content-Security-Policy"]
    # The inline picture is the mail's own: embedded, not fetched.
    assert 'src="data:image/png;base64,' in customer_html


def test_show_images_lets_remote_images_through(web, coordinator):
    deliver(web.store, web.config, hostile_mail(), now=NOW)
    response = coordinator.get("/tickets/JAN-1?images=1")
    customer_html = srcdocs(response.text)[0]
    assert 'src="https://tracker.example/pixel.gif"' in customer_html
    assert 'src="https://tracker.example/other.gif"' in customer_html
    assert "img-src data: http: https:" in customer_html
    assert "https:" in response.headers["Content-Security-Policy"].split("img-src")[1]
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_attachment_download_is_always_a_download(web, coordinator):
    web.mail(attachments=[("paragon zły\".html", "text/html", b"<script>alert(1)</script>"),
                          ("zdjęcie.png", "image/png", PNG)])
    files = {a.filename: a.id for a in web.ticket("JAN-1").messages[0].attachments}
    html_id = next(v for k, v in files.items() if k.endswith(".html"))
    response = coordinator.get(f"/tickets/JAN-1/attachments/{html_id}")
    assert response.status_code == 200 and response.data == b"<script>alert(1)</script>"
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    picture = coordinator.get(f"/tickets/JAN-1/attachments/{files['zdjęcie.png']}")
    assert picture.headers["Content-Type"] == "image/png" and picture.data == PNG
    disposition = picture.headers["Content-Disposition"]
    assert "filename*=UTF-8''zdj%C4%99cie.png" in disposition
    assert "\n" not in disposition and "\r" not in disposition
    page = coordinator.get("/tickets/JAN-1").text
    assert f'href="/tickets/JAN-1/attachments/{files["zdjęcie.png"]}"' in page


def test_attachment_of_another_ticket_or_not_stored_is_404(web, coordinator):
    web.mail(attachments=[("a.txt", "text/plain", b"a")])
    web.mail(subject="Inny", attachments=[("b.txt", "text/plain", b"b" * 100)])
    other = web.ticket("JAN-2").messages[0].attachments[0].id
    assert coordinator.get(f"/tickets/JAN-1/attachments/{other}").status_code == 404
    with web.store.transaction() as session:
        session.get(Attachment, other).blob_sha256 = None   # over the size cap at parse time
    assert coordinator.get(f"/tickets/JAN-2/attachments/{other}").status_code == 404


# -- actions on a ticket ------------------------------------------------------------------------------
def test_assign_queues_the_technicians_notification(web, technician):
    web.mail()
    technician.post("/tickets/JAN-1/update", {"assignee": PIOTR, "tier": "L1"})
    ticket = web.ticket("JAN-1")
    assert ticket.assignee.email == PIOTR and ticket.tier == "L2"
    [notice] = web.outbox("assigned")
    assert notice.recipients == [PIOTR]
    assert [e.actor for e in ticket.events if e.action == "assigned"] == [ANNA]


def test_tier_and_priority_change_with_audit(web, coordinator):
    web.mail()
    coordinator.post("/tickets/JAN-1/update", {"tier": "L2", "priority": "high"})
    ticket = web.ticket("JAN-1")
    assert (ticket.tier, ticket.priority) == ("L2", "high")
    page = coordinator.get("/tickets/JAN-1").text
    assert "tier_changed" in page and "previous: L1; tier: L2" in page
    assert "priority_changed" in page and COORDINATOR in page
    assert web.outbox("tier_handover")[0].recipients == [PIOTR]


def test_status_resolved_sends_the_resolution_mail(web, coordinator):
    web.mail()
    coordinator.post("/tickets/JAN-1/update", {"status": "resolved"})
    assert web.ticket("JAN-1").status == "resolved"
    assert web.outbox("resolved")[0].recipients == [CUSTOMER]


def test_reply_goes_to_the_customer_through_the_outbox(web, technician):
    web.mail(cc="kierownik@bursztyn.pl")
    response = technician.post("/tickets/JAN-1/reply", {
        "body": "Proszę zrestartować drukarkę.",
        "attachments": [(io.BytesIO(b"instrukcja"), "..\\..\\C:\\tmp\\instrukcja\x1b obsługi.txt")]},
        content_type="multipart/form-data")
    assert response.status_code == 302
    [relay] = web.outbox("relay")
    assert relay.recipients == [CUSTOMER, "kierownik@bursztyn.pl"]
    mail = message_from_bytes(relay.raw, policy=policy.SMTP)
    assert "Anna Kowalska" in mail["From"] and "zrestartować" in mail.get_body(("plain",)).get_content()
    [attached] = list(mail.iter_attachments())
    assert attached.get_filename() == "instrukcja obsługi.txt"   # no path, no control character
    assert attached.get_content() in ("instrukcja", b"instrukcja")
    ticket = web.ticket("JAN-1")
    assert ticket.first_responded_at is not None and ticket.status == "open"
    out = [m for m in ticket.messages if m.direction == "out" and m.kind == "technician"]
    assert out and "zrestartować" in out[-1].text


def test_internal_note_reaches_no_customer(web, coordinator):
    web.mail()
    before = web.outbox()
    coordinator.post("/tickets/JAN-1/note", {"text": "Klient ma starą wersję firmware."})
    assert web.outbox() == before or [m.id for m in web.outbox()] == [m.id for m in before]
    ticket = web.ticket("JAN-1")
    [note] = [m for m in ticket.messages if m.kind == "internal"]
    assert note.text == "Klient ma starą wersję firmware." and note.from_email == COORDINATOR
    assert [e.actor for e in ticket.events if e.action == "internal_note"] == [COORDINATOR]
    assert "notatka wewnętrzna" in coordinator.get("/tickets/JAN-1").text


@pytest.mark.parametrize("path, form, message", [
    ("note", {"text": "  "}, "Notatka jest pusta"),
    ("reply", {"body": ""}, "Odpowiedź jest pusta"),
    ("update", {"assignee": ANNA, "tier": "L3"}, "pracuje na linii L1"),
])
def test_empty_or_conflicting_actions_are_explained(web, coordinator, path, form, message):
    web.mail()
    outbox = len(web.outbox())
    response = coordinator.post(f"/tickets/JAN-1/{path}", form, follow_redirects=True)
    assert message in response.text
    assert len(web.outbox()) == outbox


def test_ticket_actions_need_csrf(web, coordinator):
    web.mail()
    messages = len(web.ticket("JAN-1").messages)
    for path, form in (("update", {"priority": "urgent"}), ("note", {"text": "x"}),
                       ("reply", {"body": "x"})):
        assert coordinator.post(f"/tickets/JAN-1/{path}", form, csrf=False).status_code == 400
    assert web.ticket("JAN-1").priority == "normal"
    assert len(web.ticket("JAN-1").messages) == messages


# -- quarantine ----------------------------------------------------------------------------------------
def quarantine_record(web, raw: bytes, reason: str = "ValueError: a bug (at step.py:1)") -> int:
    with web.store.transaction() as session:
        record = RawMessage(channel="smtp", mailbox="sklep@jantar.pl", origin="test",
                            idempotency_key=f"test:{len(raw)}:{hash(raw)}", message_id=None,
                            sha256="0" * 64, size=len(raw), raw=raw, received_at=NOW,
                            status="quarantined", reason=reason, attempts=1, envelope={})
        session.add(record)
        session.flush()
        return record.id


def test_quarantine_lists_the_reason_and_reprocesses(web, coordinator):
    raw_id = quarantine_record(web, make_mail(subject="Po poprawce"))
    page = coordinator.get("/quarantine").text
    assert f'id="raw-{raw_id}"' in page and "ValueError: a bug" in page
    response = coordinator.post(f"/quarantine/{raw_id}/reprocess", follow_redirects=True)
    assert "Przetworzono ponownie: processed" in response.text
    assert web.ticket("JAN-1").subject == "Po poprawce"
    assert coordinator.post(f"/quarantine/{raw_id}/reprocess").status_code == 404


def test_reprocess_that_fails_again_stays_in_quarantine(web, coordinator, monkeypatch):
    raw_id = quarantine_record(web, make_mail())
    from daemon import pipeline
    from daemon.parse import UnparseableMail

    def still_broken(*_args, **_kwargs):
        raise UnparseableMail("still broken")
    monkeypatch.setattr(pipeline, "parse_mail", still_broken)
    response = coordinator.post(f"/quarantine/{raw_id}/reprocess", follow_redirects=True)
    assert "Nadal nie da się" in response.text and "still broken" in response.text


def test_discard_keeps_the_bytes_until_the_retention_purge(web, coordinator):
    raw = make_mail(subject="Śmieci")
    raw_id = quarantine_record(web, raw)
    response = coordinator.post(f"/quarantine/{raw_id}/discard", follow_redirects=True)
    assert "30" in response.text and f'id="raw-{raw_id}"' not in response.text
    assert f'id="raw-{raw_id}"' in coordinator.get("/quarantine?status=discarded").text
    download = coordinator.get(f"/quarantine/{raw_id}/raw")
    assert download.data == raw and download.headers["Content-Disposition"].startswith("attachment")
    assert coordinator.post(f"/quarantine/{raw_id}/discard").status_code == 404
    # The purge job: nothing before the retention period ends, the bytes after it.
    assert purge_discarded(web.store, NOW + timedelta(days=29), 30) == 0
    assert purge_discarded(web.store, NOW + timedelta(days=31), 30) == 1
    assert purge_discarded(web.store, NOW + timedelta(days=32), 30) == 0   # safe to run twice
    with web.store.transaction() as session:
        record = session.get(RawMessage, raw_id)
        assert record.raw == b"" and record.status == "discarded" and record.size == len(raw)
    assert coordinator.get(f"/quarantine/{raw_id}/raw").status_code == 410


def test_the_daemon_runs_the_purge_with_the_configured_retention(make_config, store):
    config = make_config(store.url, tickets={"discard_keep_days": 7})
    daemon = Daemon(config, store, Clock(start=NOW))
    [job] = [j for j in daemon.jobs if j.name == "purge discarded mail"]
    assert config.tickets.discard_keep_days == 7 and job.run() == 0


def test_discard_keep_days_must_not_be_negative(make_config, db_url):
    from daemon.config import ConfigError
    with pytest.raises(ConfigError, match=r"tickets.discard_keep_days"):
        make_config(db_url, tickets={"discard_keep_days": -1})


def test_quarantine_unknown_records_and_bad_cursor(coordinator):
    assert coordinator.post("/quarantine/999/discard").status_code == 404
    assert coordinator.post("/quarantine/999/reprocess").status_code == 404
    assert coordinator.get("/quarantine/999/raw").status_code == 404
    assert coordinator.get("/quarantine?after=x").status_code == 400


# -- dashboard --------------------------------------------------------------------------------------------
def test_dashboard_shows_the_counts(web, technician):
    add_tickets(web.store, 2)
    page = technician.get("/dashboard").text
    assert "Podsumowanie" in page and 'data-chart="sla"' in page
    assert technician.get("/dashboard?lang=en").status_code == 200
    assert "SLA met per week" in technician.get("/dashboard").text


def test_english_list(web, coordinator):
    add_tickets(web.store, 1)
    page = coordinator.get("/tickets?lang=en").text
    assert "Tickets" in page and "open L1" in page and "Filter" in page


def test_the_list_costs_a_fixed_number_of_queries(web, coordinator):
    """No lookups per row: a page of 30 (ten of them held) takes a handful of statements."""
    add_tickets(web.store, 30, held=lambda i: i % 3 == 0)
    statements = []

    def count(*_args):
        statements.append(1)
    event.listen(web.store.engine, "before_cursor_execute", count)
    try:
        assert len(listed(coordinator.get("/tickets?limit=30"))) == 30
    finally:
        event.remove(web.store.engine, "before_cursor_execute", count)
    assert len(statements) < 12, len(statements)
