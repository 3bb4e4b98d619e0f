"""Every mail template exists in Polish and English and renders in both."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.outbound.render import builtin_templates, render_mail
from daemon.rules.commands import HELP
from daemon.rules.quotes import REPLY_ABOVE
from daemon.rules.sla_config import Escalation
from daemon.store.models import Message, Technician, Ticket
from tests.mailfactory import make_mail

NAMES = sorted({p.name.split(".")[0] for p in (builtin_templates() / "pl").glob("*.txt")
                if not p.name.startswith("_")})


def test_both_languages_have_the_same_templates():
    def files(language: str) -> set[str]:
        return {p.name for p in (builtin_templates() / language).iterdir()}
    assert files("pl") == files("en")
    assert {"ack", "assigned", "relay", "forward", "resolved", "form_invite", "coordinator_new",
            "command_error", "tier_handover", "coordinator_digest", "delivery_failed",
            "staff_held", "coordinator_flood"} <= set(NAMES)


@pytest.fixture
def context(desk):
    desk.deliver(make_mail(attachments=[("a.pdf", "application/pdf", b"%PDF")]))
    with desk.store.transaction() as session:
        ticket = session.scalars(select(Ticket)).unique().one()
        message = session.scalars(select(Message).where(Message.direction == "in")).first()
        technician = session.scalars(select(Technician)).first()
        ticket.assignee = technician
        ticket.messages, ticket.client, ticket.events  # load while the session is open
        mail = type("Mail", (), {"subject": "Kasa", "from_name": "Jan", "from_email": "j@b.pl",
                                 "kind": "ack", "message_id": "x@jantar.pl", "attempts": 3})()
        yield desk.config, {
            "ticket": ticket, "tickets": [ticket], "message": message, "first_message": message,
            "technician": technician, "technician_name": technician.name, "requester_name": "Jan",
            "body": "Proszę zrestartować.", "text": "Nadal nie działa.", "linked": [
                {"filename": "log.txt", "size": 10, "url": "http://x/1"}],
            "errors": ["'#foo': unknown command #foo"], "help_lines": HELP, "previous_tier": "L1",
            "actor": "koordynator@jantar.pl", "reopen_days": 14, "form_url": "http://x/?email=j",
            "mail": mail, "error": "550 no such user", "recipients": ["j@b.pl"],
            "triage_url": "http://x/tickets", "ticket_url": "http://x/tickets/JAN-1",
            "reply_above": REPLY_ABOVE, "mailbox": "sklep@jantar.pl",
            "clock": "first_response", "due": ticket.created_at, "share_percent": 75,
            "escalation": Escalation(priority="high", tier="L2"),
            "address": "anna.kowalska@jantar.pl", "held_subject": "Re: Kasa",
            "sender": "@zalew.example", "limit": 20,
        }


@pytest.mark.parametrize("name", NAMES)
def test_each_template_renders_in_both_languages(context, name):
    config, values = context
    polish, english = (render_mail(config, name, language, **values) for language in ("pl", "en"))
    for rendered in (polish, english):
        assert rendered.subject.strip() and "\n" not in rendered.subject
        assert rendered.text.strip() and "{{" not in rendered.text and "{%" not in rendered.text
        if rendered.html is not None:
            assert "<p" in rendered.html.lower() and "{{" not in rendered.html
    assert polish.text != english.text  # really two languages, not one file twice
