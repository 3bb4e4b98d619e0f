"""No 5xx for any input on any page: the whole URL map walked with generated hostile values
(issue 20, point 5).

For every rule of `app.url_map` and each of its methods, hypothesis draws values for the
rule's path arguments, for every query parameter the view reads and, on POST views, for
every form field (sent with the visit's valid CSRF token, so the view's own validation
is what answers), and for the headers pages read: huge numbers, far dates, NUL, CR/LF, 100 kB strings, wrong types (a
repeated key, JSON, SQL, paths), unicode junk, and real values now and then so the
deeper code runs too. Signed in as a technician, as a coordinator and anonymous, on
both backends. No answer may be a 5xx or show a traceback (the app is in testing mode,
so an exception fails the test with its traceback and hypothesis's smallest example).

Which parameters a view reads is declared below (PARAMETERS) and checked: every name
asked of request.args or request.form during the walk must be declared, so a view that
starts reading a new parameter fails here until it is added and walked. A rule missing
from PARAMETERS fails too.

Examples per (rule, method) and role: QUICK_EXAMPLES in the everyday run (every rule
gets a few generated requests, under a minute for both backends), THOROUGH_EXAMPLES in
the `slow` run (HELPDESK_WALK_EXAMPLES overrides it).
"""
from __future__ import annotations

import io
import os
from collections import defaultdict
from datetime import date, timedelta
from urllib.parse import quote

import pytest
from flask import request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from werkzeug.datastructures import ImmutableMultiDict

from daemon.ratings import sign
from daemon.store.models import Attachment, Message, RawMessage, Ticket
from tests.conftest import NOW
from tests.fixtures_web import COORDINATOR, PASSWORD, TECHNICIAN, add_account, csrf_token, sign_in
from tests.mailfactory import deliver, make_mail
from tests.test_web_calls import add_call

QUICK_EXAMPLES = 4
THOROUGH_EXAMPLES = int(os.environ.get("HELPDESK_WALK_EXAMPLES", "40"))
FORM_FIELDS = ("name", "email", "phone", "client", "location", "category", "subject",
               "description", "website")
TRIAGE_FILTERS = ("status", "tier", "priority", "client", "assignee", "requester", "channel",
                  "held", "older_than", "sla", "q", "sort", "after", "limit")
CHANGES = ("tier", "assignee", "priority", "status")
CALL_FIELDS = ("name", "email", "client", "category", "subject", "description")
# endpoint -> (query parameters, form fields) the view reads; every view also reads `lang`,
# and every POST `csrf_token` (both before the view runs).
PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "public.form": (FORM_FIELDS[:-1], ()),
    "public.submit": ((), (*FORM_FIELDS, "attachments")),
    "public.submitted": ((), ()),
    "auth.login": (("next",), ("email", "password", "next")),
    "auth.logout": ((), ()),
    "rating.rate": ((), ("comment",)),
    "site_css": ((), ()),
    "ops.healthz": ((), ()),
    "ops.metrics": ((), ()),
    "triage.tickets": (TRIAGE_FILTERS, ()),
    "triage.bulk": ((), ("ticket", *CHANGES, "return_to")),
    "triage.ticket": (("images",), ()),
    "triage.update": ((), CHANGES),
    "triage.note": ((), ("text",)),
    "triage.reply": ((), ("body", "attachments")),
    "triage.attach": ((), ("from", "return_to")),
    "triage.split": ((), ("from", "return_to")),
    "triage.attachment": ((), ()),
    "triage.quarantine": (("status", "after"), ()),
    "triage.reprocess": ((), ()),
    "triage.discard": ((), ()),
    "triage.raw_mail": ((), ()),
    "triage.dashboard": (("from", "to"), ()),
    "calls.calls": (("day",), ()),
    "calls.ticket_form": ((), ()),
    "calls.open_ticket": ((), CALL_FIELDS),
}
READ_BY_EVERY_VIEW = {("args", "lang"), ("form", "csrf_token")}

# -- hostile values -------------------------------------------------------------------------------
HUGE = st.integers(min_value=2 ** 63 - 2, max_value=10 ** 40).map(str)
NUMBERS = st.one_of(st.integers(-10 ** 6, 10 ** 6).map(str), HUGE, st.sampled_from(
    ["-1", "0", "1.5", "1e999", "NaN", "inf", "0x10", "١٢", "١", "9" * 400, "+1", " 7 "]))
DAYS = st.one_of(st.dates().map(date.isoformat), st.sampled_from(
    ["9999-12-31", "0001-01-01", "2026-02-30", "99999-01-01", "2026-W48-3", "20261125",
     "2026-11-25T10:00", "1999-12-31", "2100-01-01"]))
DURATIONS = st.one_of(st.from_regex(r"\A[0-9]{1,25} ?[dhms]\Z"), st.sampled_from(
    ["99999999999999999999d", "1000000d", "-1d", "2d", "0s", "1d 2h", "999999999d", "3660d",
     "3661d"]))
CONTROL = st.sampled_from(["\x00", "a\x00b", "\r\n", "/tickets\r\nSet-Cookie: x=1", "\u2028",
                           "\x1b[31m", "\x7f", "\t", "JAN-1\x00", "\x85", "\ufeff"])
BIG = st.sampled_from(["x" * 100_000, "ą" * 50_000, "%00" * 34_000, "/" * 100_000,
                       "JAN-1," * 17_000, "\x00" * 100_000])
WRONG_TYPES = st.sampled_from(["[]", "{}", "true", "null", "None", "[1,2]", '{"a": 1}',
                               "<script>alert(1)</script>", "' OR 1=1 --", "../../etc/passwd",
                               "%s%n", "${7*7}", "{{7*7}}", "\\", "//evil.example", "", " "])
UNICODE = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
DOMAIN = st.sampled_from(["JAN-1", "JAN-2", "jan-1", "urgent", "high", "L2", "L3", "all", "none",
                          "new", "open", "waiting", "resolved", "closed", "overdue", "soon",
                          "sla", "newest", "1", "0", "list", "discarded", "quarantined",
                          COORDINATOR, TECHNICIAN, "piotr.nowak@jantar.pl", "Sieć Bursztyn",
                          "cash_register", "other", "email", "phone", "web", "2026-11-25",
                          "2d", "/tickets/JAN-1", "/tickets?status=all", "status=all&q=kasa",
                          "jan.nowak@bursztyn.pl", "+48 61 100 20 30", PASSWORD])
VALUE = st.one_of(DOMAIN, NUMBERS, DAYS, DURATIONS, CONTROL, BIG, WRONG_TYPES, UNICODE)
FIELD = st.one_of(VALUE, VALUE, st.lists(VALUE, min_size=2, max_size=3))  # a repeated key
FILE_NAMES = st.one_of(VALUE, st.sampled_from(["../../etc/passwd", "a\x00.exe", "CON",
                                               "paragon.txt", ".htaccess", "x" * 5000 + ".pdf"]))
FILES = st.lists(st.tuples(FILE_NAMES, st.binary(max_size=64)), max_size=3)
# Headers a view or the layout reads (language, /metrics' bearer token); a header value
# cannot carry a line break at all, so only printable ones.
HEADER = VALUE.filter(lambda value: value.isprintable() and len(value) < 8000)
HEADERS = st.fixed_dictionaries({}, optional={"Accept-Language": HEADER, "Authorization": HEADER,
                                              "Referer": HEADER})


# -- the site ---------------------------------------------------------------------------------------
class Recorder:
    """Which names each endpoint asked of request.args and request.form during the walk."""

    def __init__(self):
        self.read: dict[str, set[tuple[str, str]]] = defaultdict(set)

    def install(self, app) -> None:
        app.before_request(self._wrap)

    def _wrap(self) -> None:
        endpoint = request.endpoint or "-"
        for source in ("args", "form"):
            # Request.args and .form are cached properties: the wrapped copy is what views see.
            request.__dict__[source] = _recording(getattr(request, source),
                                                  lambda name, s=source: self.read[endpoint]
                                                  .add((s, name)))


def _recording(values: ImmutableMultiDict, note) -> ImmutableMultiDict:
    class Recording(ImmutableMultiDict):
        def __getitem__(self, key):
            note(key)
            return super().__getitem__(key)

        def getlist(self, key, type=None):
            note(key)
            return super().getlist(key, type)

        def __contains__(self, key):
            note(key)
            return super().__contains__(key)

    return Recording(values)


class Site:
    """The app with data for every path (a ticket with a file and a held reply, a
    quarantined record, an answered call, a rating link) and a client per role."""

    def __init__(self, web_app, store):
        self.app = web_app(web={"login_ip_attempts": 0, "login_attempts": 1000},
                           form={"rate_limit": 0})
        self.store = store
        self.recorder = Recorder()
        self.recorder.install(self.app)
        add_account(self.app)
        add_account(self.app, TECHNICIAN, role="technician")
        self.samples = self._seed()

    def _seed(self) -> dict[str, str]:
        config = self.app.extensions["helpdesk"].config
        deliver(self.store, config, make_mail(subject="Drukarka nie drukuje", attachments=[
            ("paragon.txt", "text/plain", b"paragon 123")]), now=NOW)
        deliver(self.store, config, make_mail(sender="obcy@example.org",
                                              subject="Re: [#JAN-1] Drukarka"), now=NOW)
        call_id = add_call(self.store, "walk-1", NOW - timedelta(hours=1))
        with self.store.transaction() as session:
            ticket = session.scalar(select(Ticket).where(Ticket.number == "JAN-1"))
            held = session.scalar(select(Message.id).where(Message.held.is_(True)))
            attachment = session.scalar(select(Attachment.id))
            record = RawMessage(channel="smtp", mailbox="sklep@jantar.pl", origin="test",
                                idempotency_key="walk:1", message_id=None, sha256="0" * 64,
                                size=4, raw=b"junk", received_at=NOW, status="quarantined",
                                reason="ValueError: walk", attempts=1, envelope={})
            session.add(record)
            session.flush()
            samples = {"number": "JAN-1", "message_id": str(held or 1),
                       "attachment_id": str(attachment or 1), "raw_id": str(record.id),
                       "call_id": str(call_id), "ticket_id": str(ticket.id)}
        samples["token"] = sign(self.app.secret_key, int(samples["ticket_id"]), 4,
                                NOW + timedelta(days=30))
        return samples

    def client(self, who: str | None):
        client = self.app.test_client()
        if who:
            assert sign_in(client, who).status_code == 302
        client.csrf = csrf_token(client, "/login" if who is None else "/tickets")
        client.who = who
        return client


def routes(app):
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def path_of(rule, values: dict[str, str]) -> str:
    """RULE's path with VALUES put in as a browser would send them (percent-encoded)."""
    path = rule.rule
    for name in rule.arguments:
        start = path.index("<")
        path = path[:start] + quote(values[name], safe="") + path[path.index(">", start) + 1:]
    return path


def draw_request(data, rule, method: str, samples: dict[str, str]) -> dict:
    query_names, form_names = PARAMETERS[rule.endpoint]
    # One request in four has hostile path values; the rest reach the view's own checks.
    hostile_path = data.draw(st.integers(0, 3), label="hostile path") == 0
    path_values = {name: data.draw(st.one_of(st.just(samples[name]), VALUE, NUMBERS), label=name)
                   if hostile_path else samples[name] for name in sorted(rule.arguments)}
    query = {name: data.draw(FIELD, label=f"?{name}")
             for name in (*query_names, "lang") if data.draw(st.booleans())}
    form = {}
    if method == "POST":
        for name in form_names:
            if name == "attachments":
                form[name] = [(io.BytesIO(content), filename)
                              for filename, content in data.draw(FILES, label="files")]
            elif data.draw(st.booleans()):
                form[name] = data.draw(FIELD, label=name)
    return {"path": path_of(rule, path_values), "query_string": query, "data": form,
            "headers": data.draw(HEADERS, label="headers")}


def walk(site: Site, who: str | None, examples: int) -> int:
    """Every (rule, method) with EXAMPLES drawn requests as WHO; returns how many were sent."""
    client = site.client(who)
    sent = 0
    for rule, method in routes(site.app):
        assert rule.endpoint in PARAMETERS, f"new view {rule.endpoint}: declare what it reads"

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def probe(data):
            nonlocal client, sent
            wanted = draw_request(data, rule, method, site.samples)
            if method == "POST":
                wanted["data"]["csrf_token"] = client.csrf
            response = client.open(method=method, **wanted)
            sent += 1
            body = response.get_data(as_text=True)
            assert response.status_code < 500, (who, method, wanted["path"][:200],
                                                response.status_code)
            assert "Traceback" not in body
            if rule.endpoint in ("auth.logout", "auth.login"):
                client = site.client(who)  # signed out (or in): start the role's visit again

        probe()
    return sent


@pytest.mark.parametrize("examples", [
    pytest.param(QUICK_EXAMPLES, id="quick"),
    pytest.param(THOROUGH_EXAMPLES, id="thorough", marks=pytest.mark.slow)])
@pytest.mark.parametrize("who", [None, TECHNICIAN, COORDINATOR],
                         ids=["anonymous", "technician", "coordinator"])
def test_no_input_on_any_page_gets_a_5xx(web_app, store, who, examples):
    site = Site(web_app, store)
    sent = walk(site, who, examples)
    assert sent >= examples * len(PARAMETERS)
    undeclared = {endpoint: names - READ_BY_EVERY_VIEW
                  - {("args", n) for n in PARAMETERS.get(endpoint, ((), ()))[0]}
                  - {("form", n) for n in PARAMETERS.get(endpoint, ((), ()))[1]}
                  for endpoint, names in site.recorder.read.items()}
    undeclared = {endpoint: names for endpoint, names in undeclared.items() if names}
    assert not undeclared, f"views read parameters this walk does not send: {undeclared}"
    if who:
        walked = set(site.recorder.read)
        assert {"triage.tickets", "triage.bulk" if who == COORDINATOR else "triage.note",
                "calls.calls", "triage.dashboard"} <= walked
