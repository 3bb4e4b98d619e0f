"""Every plain-text mail, rendered in Polish and English, reads as lines a person can scan:
each "Label: value" on a line of its own, no runs of blank lines, and the ticket's codes
(status, priority, channel, kind) written as words, numbers and dates the language's way.

The templates are rendered the way the daemon renders them (daemon.outbound.render), with
a context built from a real ticket filed by the pipeline: every branch a template has (SLA
dues, a paused clock, files, an escalation, rating links) is rendered on, and again off.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from daemon.outbound.render import builtin_templates, render_mail
from daemon.rules.commands import HELP
from daemon.rules.quotes import REPLY_ABOVE
from daemon.rules.sla_config import Escalation
from daemon.store.models import Message, Technician, Ticket
from daemon.words import word, words_in
from tests.mailfactory import make_mail

LANGUAGES = ("pl", "en")
NAMES = sorted({p.name.split(".")[0] for p in (builtin_templates() / "pl").glob("*.txt")
                if not p.name.startswith("_")})
# "Label:" at the start of a template line, before its value (or before an indented list).
LABEL_RE = re.compile(r"^([A-ZĄĆĘŁŃÓŚŹŻ][\w\- ĄĆĘŁŃÓŚŹŻąćęłńóśźż]{0,30}?):(?=\s|$)", re.MULTILINE)
CODES = ("new", "open", "waiting", "resolved", "closed", "low", "normal", "high", "urgent",
         "email", "web", "phone")
DUE = datetime(2026, 11, 25, 14, 0, tzinfo=timezone.utc)      # 15:00 in Warsaw


def labels(language: str) -> set[str]:
    """The labels every plain-text template of LANGUAGE (and its includes) starts a line with."""
    found = set()
    for path in (builtin_templates() / language).glob("*.txt"):
        if not path.name.endswith(".subject.txt"):
            found |= set(LABEL_RE.findall(path.read_text(encoding="utf-8")))
    return found


@dataclass
class RatingLink:
    score: int
    url: str


@dataclass
class SentMail:   # what delivery_failed reads of an outbox row, and form_invite of a mail
    subject: str
    from_name: str
    from_email: str
    kind: str
    message_id: str
    attempts: int


@dataclass
class Filed:
    """A ticket the pipeline filed, and what the contexts below need of it."""
    config: object
    ticket: Ticket
    message: Message
    technician: Technician
    client: object


@pytest.fixture
def filed(desk):
    desk.deliver(make_mail(sender="Jan Nowak <jan.nowak@bursztyn.pl>",
                           body="Dzień dobry,\ndrukarka w sklepie nr 12 nie drukuje paragonów.\n\n"
                                "Jan Nowak\n",
                           attachments=[("paragon.pdf", "application/pdf", b"%PDF")]))
    with desk.store.transaction() as session:
        ticket = session.scalars(select(Ticket)).unique().one()
        message = session.scalars(select(Message).where(Message.direction == "in")).first()
        technician = session.scalars(select(Technician).where(
            Technician.email == "anna.kowalska@jantar.pl")).one()
        assert ticket.client is not None and ticket.requester_name == "Jan Nowak"
        yield Filed(desk.config, ticket, message, technician, ticket.client)


def full_context(filed: Filed, **changes) -> dict:
    """Every optional part present: SLA dues, a pause, files, an escalation, ratings."""
    ticket, technician = filed.ticket, filed.technician
    ticket.client, ticket.assignee, ticket.requester_name = filed.client, technician, "Jan Nowak"
    ticket.first_response_due, ticket.resolution_due = DUE, DUE.replace(day=26)
    ticket.sla_paused_seconds = 5400
    values = {
        "ticket": ticket, "tickets": [ticket, ticket], "message": filed.message,
        "first_message": filed.message, "technician": technician,
        "technician_name": technician.name,
        "requester_name": "Jan Nowak", "body": "Dzień dobry,\nproszę zrestartować drukarkę.",
        "text": "Nadal nie działa.\nDrukarka miga na czerwono.",
        "linked": [{"filename": "log.txt", "size": 123456, "url": "http://helpdesk.test/a/1"},
                   {"filename": "zdjęcie.jpg", "size": 2048, "url": "http://helpdesk.test/a/2"}],
        "errors": ["'#priorytet wysoki': unknown command #priorytet"], "help_lines": HELP,
        "previous_tier": "L1", "actor": "koordynator@jantar.pl", "reopen_days": 14,
        "form_url": "http://helpdesk.test/?email=jan.nowak%40bursztyn.pl",
        "mail": SentMail("Drukarka", "Jan Nowak", "jan.nowak@bursztyn.pl", "relay",
                         "x1@jantar.pl", 3),
        "error": "550 5.1.1 no such user", "recipients": ["jan.nowak@bursztyn.pl"],
        "triage_url": "http://helpdesk.test/tickets",
        "ticket_url": "http://helpdesk.test/tickets/JAN-1",
        "reply_above": REPLY_ABOVE, "mailbox": "sklep@jantar.pl", "clock": "first_response",
        "due": DUE, "share_percent": 75, "escalation": Escalation(priority="high", tier="L2"),
        "address": "anna.kowalska@jantar.pl", "held_subject": "Re: Drukarka",
        "sender": "@zalew.example", "limit": 20, "follows": ticket,
        "rating_links": [RatingLink(n, f"http://helpdesk.test/rate/{n}") for n in range(1, 6)],
    }
    return {**values, **changes}


def sparse_context(filed: Filed) -> dict:
    """Every optional part absent: no client, nobody assigned, no dues, no files, no name."""
    values = full_context(filed)
    ticket = filed.ticket
    ticket.assignee, ticket.client, ticket.requester_name = None, None, ""
    ticket.first_response_due = ticket.resolution_due = None
    ticket.sla_paused_seconds = 0
    return {**values, "linked": [], "escalation": None, "rating_links": [], "follows": None,
            "held_subject": "", "sender": "spam@zalew.example", "clock": "resolution",
            "requester_name": "", "text": ""}


def rendered(filed: Filed, name: str, language: str, sparse: bool = False, **changes) -> str:
    values = sparse_context(filed) if sparse else full_context(filed)
    return render_mail(filed.config, name, language, **{**values, **changes}).text


# -- item 2: one label per line ------------------------------------------------------------------
def every_rendering(filed):
    """(where, text) of every plain-text mail, in both languages, with and without its options."""
    for name in NAMES:
        for language in LANGUAGES:
            for sparse in (False, True):
                where = f"{name} ({language}, {'sparse' if sparse else 'full'})"
                yield where, rendered(filed, name, language, sparse)


def labels_inside_lines(text: str, language: str) -> list[str]:
    """Lines where a label stands after other text, e.g. 'priorytet: normalPierwsza odpowiedź do:'."""
    found = []
    for number, line in enumerate(text.split("\n"), 1):
        for label in labels(language):
            at = line.find(f"{label}:")
            if at > 0 and line[:at].strip():
                found.append(f"line {number} runs into {label!r}: {line!r}")
    return found


def blank_line_faults(text: str) -> list[str]:
    faults = []
    if text.startswith("\n"):
        faults.append("starts with a blank line")
    if "\n\n\n" in text:
        faults.append("two blank lines in a row")
    if not text.endswith("\n") or text.endswith("\n\n"):
        faults.append("does not end with exactly one line break")
    faults += [f"trailing spaces: {line!r}" for line in text.split("\n")
               if line != line.rstrip() and line != "-- "]
    return faults


def test_every_label_stands_at_the_start_of_its_own_line(filed):
    problems = [f"{where}: {fault}" for where, text in every_rendering(filed)
                for fault in labels_inside_lines(text, where.split("(")[1][:2])]
    assert not problems, "\n".join(problems)


def test_no_stray_blank_lines_or_trailing_spaces(filed):
    problems = [f"{where}: {fault}" for where, text in every_rendering(filed)
                for fault in blank_line_faults(text)]
    assert not problems, "\n".join(problems)


def test_the_assignment_notice_lists_priority_and_dues_on_lines_of_their_own(filed):
    """The report in the issue: 'priorytet: normalPierwsza odpowiedź do: … CETRozwiązanie do:'."""
    lines = rendered(filed, "assigned", "pl").split("\n")
    assert "Poziom:       L1, priorytet: normalny" in lines
    assert [line for line in lines if line.startswith("Pierwsza odpowiedź do:")] == [
        "Pierwsza odpowiedź do: 25.11.2026, 15:00 CET"]
    assert [line for line in lines if line.startswith("Rozwiązanie do:")] == [
        "Rozwiązanie do:        26.11.2026, 15:00 CET"]
    english = rendered(filed, "assigned", "en").split("\n")
    assert "Tier:       L1, priority: normal" in english
    assert "First response due: 25/11/2026, 15:00 CET" in english


# -- item 6: words, numbers and dates the language's way ----------------------------------------
def raw_codes(text: str, language: str) -> list[str]:
    """Codes standing as a value in TEXT where LANGUAGE has another word for them ("web" in
    English is "web form"; in Polish every code is another word). Not in the list of
    commands (its lines start with the `#command` as it is typed, then say it in both
    languages) nor as a command's argument (`#priority high`)."""
    words = words_in(language)
    raw = {code for code in CODES if words[code] != code}
    phrases = sorted((w for w in words.values() if " " in w), key=len, reverse=True)
    found = []
    for line in text.split("\n"):
        if line.lstrip().startswith("#"):
            continue
        for phrase in phrases:  # "web form" is the word, not the code "web" and more
            line = line.replace(phrase, "~")
        tokens = re.split(r"[\s,():;„”\"]+", line)
        for before, token in zip(["", *tokens], tokens):
            if token in raw and not before.startswith("#") and "|" not in before:
                found.append(f"{token!r} in {line.strip()!r}")
    return found


def test_mail_shows_no_raw_code(filed):
    ticket, problems = filed.ticket, []
    for status, priority, channel in [("new", "low", "email"), ("open", "urgent", "web"),
                                      ("waiting", "normal", "phone"), ("resolved", "high", "email")]:
        for name in NAMES:
            for language in LANGUAGES:
                for sparse in (False, True):
                    ticket.status, ticket.priority, ticket.channel = status, priority, channel
                    text = rendered(filed, name, language, sparse)
                    problems += [f"{name} ({language}; {status}, {priority}, {channel}): {code}"
                                 for code in raw_codes(text, language)]
    assert not problems, "\n".join(problems)


def test_codes_are_written_as_the_words_table_says(filed):
    ticket = filed.ticket
    ticket.status, ticket.priority, ticket.channel = "waiting", "urgent", "web"
    new = rendered(filed, "coordinator_new", "pl")
    assert "Kanał:        formularz (sklep@jantar.pl)" in new
    assert "Poziom:       L1, priorytet: pilny" in new
    assert "Channel:    web form (sklep@jantar.pl)" in rendered(filed, "coordinator_new", "en")
    assert "(status: czeka na klienta)" in rendered(filed, "forward", "pl")
    breach = rendered(filed, "sla_breach", "pl")
    assert "- nowy priorytet: wysoki\n- zgłoszenie przekazane do L2\n" in breach
    failed = rendered(filed, "delivery_failed", "pl")
    assert f"Rodzaj:       {word('mail:relay', 'pl')}" in failed and "relay" not in failed
    digest = rendered(filed, "coordinator_digest", "pl")
    assert "pilny" in digest and "urgent" not in digest


def test_numbers_and_dates_are_written_the_language_way(filed):
    polish, english = (rendered(filed, "assigned", language) for language in LANGUAGES)
    assert "log.txt (123\xa0456 B)" in polish and "log.txt (123,456 B)" in english
    warning = rendered(filed, "sla_warning", "pl")
    assert "Termin:       25.11.2026, 15:00 CET" in warning
    assert "Wstrzymane:   90 min" in warning
    subject = render_mail(filed.config, "sla_warning", "pl", **full_context(filed)).subject
    assert "25.11.2026, 15:00 CET" in subject
