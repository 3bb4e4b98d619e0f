"""`helpdesk forget EMAIL`: a contact anonymised on closed tickets, open ones skipped, dry runs inert."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update

from daemon.cli import main
from daemon.clock import Clock
from daemon.forget import ERASED_ACTION, ForgetError, forget
from daemon.ingest.intake import content_key, save_raw
from daemon.pipeline import Pipeline
from daemon.store.models import Call, Event, OutboxMail, RawBody, RawMessage, Ticket
from tests.conftest import NOW
from tests.mailfactory import make_mail

JAN = "jan.nowak@bursztyn.pl"
NAME = "Jan Nowak"
PHONE = "0600 123 456"
E164 = "+48600123456"


def file_mail(desk, raw: bytes, *, envelope=None, channel="smtp") -> None:
    save_raw(desk.store, channel=channel, key=f"{channel}:{content_key(raw)}", raw=raw, now=NOW,
             mailbox="sklep@jantar.pl", envelope=envelope)
    Pipeline(desk.config, desk.store, Clock(start=NOW)).process_pending()


def set_status(desk, number: str, status: str) -> None:
    with desk.store.transaction() as session:
        session.execute(update(Ticket).where(Ticket.number == number).values(status=status))


def dump(desk, number: str) -> str:
    """Everything the store keeps about a ticket, as one lower-case text to search."""
    with desk.store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        raws = session.scalars(select(RawBody.data).join(RawMessage)
                              .where(RawMessage.ticket_id == ticket.id))
        outbox = session.scalars(select(OutboxMail).where(OutboxMail.ticket_id == ticket.id))
        parts = [ticket.requester_email, ticket.requester_name, ticket.subject,
                 *(f"{p.email} {p.name}" for p in ticket.participants),
                 *(f"{m.from_email} {m.from_name} {m.to} {m.cc} {m.subject} {m.text} {m.html}"
                   f" {[a.filename for a in m.attachments]}" for m in ticket.messages),
                 *(f"{e.actor} {json.dumps(e.detail, ensure_ascii=False)}" for e in ticket.events),
                 *(r.decode("utf-8", "replace") for r in raws),
                 *(f"{o.recipients} {o.subject} {o.raw.decode('utf-8', 'replace')}" for o in outbox)]
        return " ".join(str(p) for p in parts).lower()


@pytest.fixture
def site(desk):
    """JAN-1 resolved (with a photo), JAN-2 still open, JAN-3 closed with Jan on CC, JAN-4 a
    closed web report with his phone, JAN-5 someone else's; two of his calls, one stranger's."""
    file_mail(desk, make_mail(sender=f"{NAME} <{JAN}>", subject="Drukarka nie drukuje",
                              body=f"Pozdrawiam,\n{NAME}\n{JAN}\n",
                              attachments=[("Jan_Nowak_paragon.jpg", "image/jpeg", b"JPEG")]))
    file_mail(desk, make_mail(sender=f"{NAME} <{JAN}>", subject="Kasa 3 stoi"))
    file_mail(desk, make_mail(sender="kierownik@bursztyn.pl", cc=f"{NAME} <{JAN}>",
                              subject="Skaner", body="Jan Nowak zna szczegóły."))
    file_mail(desk, make_mail(sender=f"{NAME} <{JAN}>", subject="Terminal",
                              body=f"Telefon: {PHONE}\n"), channel="web",
              envelope={"form": {"name": NAME, "email": JAN, "phone": PHONE}})
    file_mail(desk, make_mail(sender="ewa@kaszub.com.pl", subject="Inna sprawa"))
    for number, status in (("JAN-1", "resolved"), ("JAN-3", "closed"), ("JAN-4", "closed"),
                           ("JAN-5", "closed")):
        set_status(desk, number, status)
    with desk.store.transaction() as session:
        for call_id, caller, contact in (("1", E164, JAN), ("2", E164, None), ("3", "+48600999888", None)):
            session.add(Call(source="pbx", call_id=call_id, direction="in", caller=caller,
                             callee="+48226000500", started_at=NOW, outcome="answered",
                             contact=contact, imported_at=NOW, raw={"Od": caller}))
    return desk


def test_forget_anonymises_closed_tickets_and_skips_open_ones(site):
    before_other = dump(site, "JAN-5")
    report = forget(site.config, site.store, JAN.upper(), NOW)
    assert [t["ticket"] for t in report.tickets] == ["JAN-1", "JAN-3", "JAN-4"]
    assert report.skipped == [{"ticket": "JAN-2", "status": "new",
                               "reason": "still new: forget it once closed"}]
    assert report.calls == 2
    for number in ("JAN-1", "JAN-3", "JAN-4"):
        text = dump(site, number)
        for trace in (JAN, NAME.lower(), "jan_nowak", PHONE, E164):
            assert trace not in text, f"{trace} left on {number}"
        assert "forgotten-" in text
    assert JAN in dump(site, "JAN-2")
    assert dump(site, "JAN-5") == before_other
    with site.store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == "JAN-1"))
        assert ticket.requester_email.endswith("@invalid") and ticket.requester_name == ""
        assert ticket.messages[0].attachments[0].filename.endswith(".jpg")
        kept = list(session.scalars(select(RawBody.data).join(RawMessage)
                                    .where(RawMessage.ticket_id == ticket.id)))
        assert kept and all(data == b"" for data in kept)   # the records stay, blanked
        [erased] = session.scalars(select(Event).where(Event.ticket_id == ticket.id,
                                                       Event.action == ERASED_ACTION))
        assert JAN not in json.dumps(erased.detail) and erased.detail["changes"]["requester"]
        calls = {c.call_id: c for c in session.scalars(select(Call)).unique()}
        assert calls["1"].contact is None and calls["1"].caller is None and calls["1"].raw == {}
        assert calls["2"].caller is None
        assert calls["3"].caller == "+48600999888" and calls["3"].raw
    again = forget(site.config, site.store, JAN, NOW)
    assert again.tickets == [] and [s["ticket"] for s in again.skipped] == ["JAN-2"]


def test_dry_run_lists_and_changes_nothing(site):
    before = {n: dump(site, n) for n in ("JAN-1", "JAN-2", "JAN-3", "JAN-4")}
    report = forget(site.config, site.store, JAN, NOW, dry_run=True)
    assert [t["ticket"] for t in report.tickets] == ["JAN-1", "JAN-3", "JAN-4"]
    assert report.tickets[0]["changes"]["requester"] and report.calls == 2
    assert {n: dump(site, n) for n in before} == before
    with site.store.transaction() as session:
        assert session.scalar(select(Call.contact).where(Call.call_id == "1")) == JAN
        assert not list(session.scalars(select(Event).where(Event.action == ERASED_ACTION)))


def test_a_technician_is_not_forgotten(site):
    with pytest.raises(ForgetError, match="technician"):
        forget(site.config, site.store, "anna.kowalska@jantar.pl", NOW)


def test_forget_command_prints_what_it_changes(site, config_file, capsys):
    config = str(config_file())
    assert main(["--config", config, "forget", JAN, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "JAN-1        would anonymise: " in out and "requester 1" in out
    assert "JAN-2        skipped: still new" in out and "calls: 2 would anonymise" in out
    assert main(["--config", config, "forget", JAN, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dry_run"] is False and len(result["tickets"]) == 3
    assert JAN not in dump(site, "JAN-1")
    assert main(["--config", config, "forget", "anna.kowalska@jantar.pl"]) == 1
    assert "technician" in capsys.readouterr().err
