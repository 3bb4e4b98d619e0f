"""What calls do: missed calls become callback tickets (or join one, or need none), a call out
marks the callback made, calls show on tickets, PBX reports arrive by mail, and the figures."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select

from daemon.call_figures import call_figures
from daemon.directory import sync_directory
from daemon.ingest.calls.run import run_source
from daemon.clock import Clock
from daemon.conversation import change_priority, change_tier
from daemon.ingest.intake import save_raw
from daemon.pipeline import Pipeline
from daemon.rules.callbacks import run_callback_check
from daemon.rules.sla import recompute_open_tickets
from daemon.store.models import Event, RawMessage, Ticket
from daemon.views import ticket_detail
from tests.callsupport import (WARSAW, by_id, calls_section, export_bytes, local,
                               orange_source, row, stored_calls, write_export)
from tests.mailfactory import deliver, make_mail

BURSZTYN = "0611002030"            # Sieć Bursztyn's configured phone, as the PBX writes it
BURSZTYN_E164 = "+48611002030"


@pytest.fixture
def hotline(make_config, db_url, store, tmp_path):
    """A helpdesk with the Orange CSV source; .calls(rows, now) drops a file and runs it."""

    class Hotline:
        folder = tmp_path / "cdr"
        files = 0

        def __init__(self, **sections):
            sections.setdefault("pbx_sources", [orange_source(self.folder)])
            sections.setdefault("calls", calls_section())
            self.config = make_config(db_url, **sections)
            self.store = store
            with store.transaction() as session:
                sync_directory(session, self.config)

        def calls(self, rows, now):
            Hotline.files += 1
            write_export(self.folder / f"{Hotline.files:03}.csv", rows)
            return run_source(self.config, store, "orange", now)

        def tickets(self, now=None) -> list[dict]:
            with store.transaction() as session:
                return [ticket_detail(t, WARSAW, now) for t in
                        session.scalars(select(Ticket).order_by(Ticket.id)).unique()]

    return Hotline


def test_missed_call_opens_a_callback_ticket_for_l1(hotline):
    desk = hotline()
    result = desk.calls([row("1", "2026-11-25 10:00:00", BURSZTYN, "Nieodebrane")],
                        now=local("2026-11-25 10:20"))
    assert result.callbacks == {"opened": 1, "decided": 1}
    [ticket] = desk.tickets(local("2026-11-25 10:20"))
    assert ticket["subject"] == f"Oddzwonić: {BURSZTYN_E164}"
    assert (ticket["channel"], ticket["tier"], ticket["status"]) == ("phone", "L1", "new")
    assert ticket["client"] == "Sieć Bursztyn" and ticket["requester"] == BURSZTYN_E164
    # 30 business minutes after the missed call, on the L1 calendar (Mon-Fri 08-16)
    assert ticket["first_response_due"] == "2026-11-25T10:30:00+01:00"
    assert ticket["sla"]["first_response"]["warn_at"] == "2026-11-25T10:22:30+01:00"  # at 75%
    assert ticket["sla"]["first_response"]["state"] == "ok"
    [call] = ticket["calls"]
    assert call["call_id"] == "1" and call["callback"] == "opened"
    assert by_id(stored_calls(desk.store))["1"]["ticket"] == ticket["number"]
    assert ticket["events"][0]["action"] == "created"
    assert ticket["events"][0]["detail"]["call"] == "1"


def test_nothing_happens_before_callback_after_has_passed(hotline):
    desk = hotline()
    result = desk.calls([row("1", "2026-11-25 10:00:00", BURSZTYN, "Porzucone")],
                        now=local("2026-11-25 10:10"))
    assert result.callbacks == {} and desk.tickets() == []
    assert stored_calls(desk.store)[0]["callback"] == "pending"
    later = run_callback_check(desk.config, desk.store, local("2026-11-25 10:15"))
    assert later["opened"] == 1


@pytest.mark.parametrize("contact", [
    row("2", "2026-11-25 10:05:00", "102", "Odebrane", callee=BURSZTYN),   # we call back
    row("2", "2026-11-25 10:12:00", BURSZTYN, "Odebrane", talk="120"),     # they call, answered
])
def test_no_callback_ticket_when_contact_follows_in_time(hotline, contact):
    desk = hotline()
    result = desk.calls([row("1", "2026-11-25 10:00:00", BURSZTYN, "Nieodebrane"), contact],
                        now=local("2026-11-25 10:30"))
    assert result.callbacks == {"followed": 1, "decided": 1}
    assert desk.tickets() == []
    missed = by_id(stored_calls(desk.store))["1"]
    assert missed["callback"] == "followed" and missed["ticket"] is None
    assert missed["callback_at"] == local(contact[1]).isoformat()


def test_a_missed_call_from_the_same_number_is_not_contact(hotline):
    desk = hotline()
    desk.calls([row("1", "2026-11-25 10:00:00", BURSZTYN, "Nieodebrane"),
                row("2", "2026-11-25 10:05:00", BURSZTYN, "Nieodebrane")],
               now=local("2026-11-25 10:30"))
    [ticket] = desk.tickets()
    assert [c["callback"] for c in ticket["calls"]] == ["opened", "joined"]


def test_second_missed_call_joins_the_open_callback_ticket_and_a_call_out_closes_it(hotline):
    desk = hotline()
    desk.calls([row("1", "2026-11-25 10:00:00", BURSZTYN, "Nieodebrane")],
               now=local("2026-11-25 10:20"))
    result = desk.calls([row("2", "2026-11-25 10:40:00", "+48 61 100 20 30", "Porzucone")],
                        now=local("2026-11-25 11:00"))
    assert result.callbacks == {"joined": 1, "decided": 1}
    [ticket] = desk.tickets()
    assert [e["action"] for e in ticket["events"]].count("missed_call") == 1
    assert ticket["status"] == "new"

    result = desk.calls([row("3", "2026-11-25 11:05:00", "101", "Odebrane", callee=BURSZTYN,
                             talk="200")], now=local("2026-11-25 11:06"))
    assert result.callbacks == {"called_back": 1}
    [ticket] = desk.tickets(local("2026-11-25 11:06"))
    assert ticket["status"] == "resolved"
    made = next(e for e in ticket["events"] if e["action"] == "callback_made")
    assert made["actor"] == "anna.kowalska@jantar.pl" and made["detail"]["call"] == "3"
    assert ticket["first_responded_at"] == "2026-11-25T11:05:00+01:00"
    assert ticket["resolved_at"] == "2026-11-25T11:05:00+01:00"
    assert ticket["first_response_due"] == "2026-11-25T10:30:00+01:00"     # the callback's
    assert ticket["sla"]["first_response"]["state"] == "breached"          # 35 min late
    calls = by_id(stored_calls(desk.store))
    assert calls["1"]["callback_at"] == calls["2"]["callback_at"] == "2026-11-25T11:05:00+01:00"
    assert calls["3"]["ticket"] == ticket["number"]

    # A new missed call after the callback opens a new ticket.
    desk.calls([row("4", "2026-11-25 12:00:00", BURSZTYN, "Nieodebrane")],
               now=local("2026-11-25 12:30"))
    assert [t["status"] for t in desk.tickets()] == ["resolved", "new"]


def test_callback_target_counts_business_minutes_on_the_l1_calendar(hotline):
    desk = hotline()
    desk.calls([row("1", "2026-11-27 15:50:00", BURSZTYN, "Nieodebrane")],   # a Friday
               now=local("2026-11-27 16:30"))
    [ticket] = desk.tickets()
    # 10 minutes on Friday, 20 on Monday morning
    assert ticket["first_response_due"] == "2026-11-30T08:20:00+01:00"


def test_callback_target_survives_sla_recompute_and_tier_and_priority_changes(hotline):
    desk = hotline()
    desk.calls([row("1", "2026-11-25 10:00:00", BURSZTYN, "Nieodebrane")],
               now=local("2026-11-25 10:20"))
    later = local("2026-11-25 10:25")
    assert recompute_open_tickets(desk.config, desk.store, later) == 1   # `helpdesk sla recompute`
    [ticket] = desk.tickets(later)
    assert ticket["first_response_due"] == "2026-11-25T10:30:00+01:00"   # not the contract's 14:00
    assert ticket["sla"]["first_response"]["warn_at"] == "2026-11-25T10:22:30+01:00"
    assert "sla_changed" not in [e["action"] for e in ticket["events"]]
    with desk.store.transaction() as session:
        stored = session.scalars(select(Ticket)).unique().one()
        change_tier(session, desk.config, stored, "L2", actor="koordynator@jantar.pl", now=later)
        change_priority(session, desk.config, stored, "urgent", actor="koordynator@jantar.pl",
                        now=later)
    [ticket] = desk.tickets(later)
    assert (ticket["tier"], ticket["priority"]) == ("L2", "urgent")
    assert ticket["first_response_due"] == "2026-11-25T10:30:00+01:00"
    assert ticket["sla"]["first_response"]["warn_at"] == "2026-11-25T10:22:30+01:00"
    # the resolution clock is the contract's and follows the priority: urgent, 4h from 10:20
    assert ticket["resolution_due"] == "2026-11-25T14:20:00+01:00"


def test_no_mail_goes_out_for_a_callback_ticket(hotline):
    desk = hotline()
    desk.calls([row("1", "2026-11-25 10:00:00", BURSZTYN, "Nieodebrane"),
                row("2", "2026-11-25 10:30:00", "101", "Odebrane", callee=BURSZTYN)],
               now=local("2026-11-25 10:20"))
    from daemon.store.models import OutboxMail
    with desk.store.transaction() as session:
        assert session.scalars(select(OutboxMail)).all() == []


def test_caller_known_from_the_web_form_is_the_contact(hotline):
    desk = hotline()
    form = {"name": "Jan Nowak", "email": "jan.nowak@bursztyn.pl", "phone": "600 123 456",
            "client": "Sieć Bursztyn", "category": "", "language": "pl"}
    save_raw(desk.store, channel="web", key="web:1", raw=make_mail(), now=local("2026-11-25 09:00"),
             mailbox="sklep@jantar.pl", origin="form", envelope={"form": form})
    Pipeline(desk.config, desk.store, Clock(start=local("2026-11-25 09:00"))).process_pending()
    desk.calls([row("1", "2026-11-25 10:00:00", "0600123456", "Nieodebrane")],
               now=local("2026-11-25 10:20"))
    form_ticket, callback = desk.tickets()
    assert callback["requester"] == "jan.nowak@bursztyn.pl"
    assert callback["client"] == "Sieć Bursztyn"
    # the call shows on the open form ticket of the same person, and on the callback ticket
    assert [c["call_id"] for c in form_ticket["calls"]] == ["1"]
    assert form_ticket["calls"][0]["contact"] == "jan.nowak@bursztyn.pl"
    assert [c["call_id"] for c in callback["calls"]] == ["1"]


def test_calls_show_on_the_clients_open_tickets_only_while_open(hotline):
    desk = hotline()
    deliver(desk.store, desk.config, make_mail(), now=local("2026-11-25 09:00"))
    desk.calls([row("1", "2026-11-25 08:00:00", BURSZTYN, "Odebrane"),     # before the ticket
                row("2", "2026-11-25 09:30:00", BURSZTYN, "Odebrane"),
                row("3", "2026-11-25 09:40:00", "101", "Odebrane", callee=BURSZTYN),
                row("4", "2026-11-25 09:50:00", "0600999888", "Odebrane")],   # someone else
               now=local("2026-11-25 10:00"))
    [ticket] = desk.tickets()
    assert [c["call_id"] for c in ticket["calls"]] == ["2", "3"]


# -- PBX reports by mail ------------------------------------------------------------------
def mail_desk(hotline):
    """The Orange mapping on a `mail` source: reports mailed to centralka@jantar.pl."""
    source = orange_source(hotline.folder, name="orange-mail", kind="mail",
                           mailbox="centralka@jantar.pl")
    del source["path"]
    return hotline(mailboxes=[{"address": "sklep@jantar.pl"}, {"address": "centralka@jantar.pl"}],
                   pbx_sources=[source])


def mail_report(desk, report: bytes, now: str, **headers) -> dict:
    """Mail REPORT as raport.csv from the PBX to its mailbox, through the pipeline."""
    mail = make_mail(sender="centralka@orange.pl", to="centralka@jantar.pl",
                     attachments=[("raport.csv", "text/csv", report)], **headers)
    return deliver(desk.store, desk.config, mail, mailbox="centralka@jantar.pl", now=local(now))


def test_mailed_report_is_imported_by_the_pipeline_without_a_ticket(hotline):
    desk = mail_desk(hotline)
    report = export_bytes([row("R1", "2026-11-25 10:00:00", BURSZTYN, "Nieodebrane"),
                           row("R2", "2026-11-25 10:01:00", "0600123456", "Odebrane"),
                           row("R3", "2026-11-25 10:02:00", "0600123456", "Wrong")])
    counts = mail_report(desk, report, "2026-11-25 10:30", subject="Raport połączeń 2026-11-25")
    assert counts == {"processed": 1}
    [raw] = _raw_records(desk.store)
    assert raw.reason.startswith("PBX call report: 2 calls imported, 1 malformed rows")
    assert "raport.csv line 4" in raw.reason and raw.ticket_id is None
    calls = by_id(stored_calls(desk.store))
    assert sorted(calls) == ["R1", "R2"] and calls["R1"]["source"] == "orange-mail"
    # the missed call in the report is older than callback_after: its ticket is there
    [ticket] = desk.tickets()
    assert ticket["channel"] == "phone" and ticket["calls"][0]["call_id"] == "R1"

    # the same report again (another Message-ID): nothing new
    mail_report(desk, report, "2026-11-25 10:40")
    assert _raw_records(desk.store)[1].reason.startswith(
        "PBX call report: 0 calls imported, 2 already stored")
    assert len(desk.tickets()) == 1


def test_a_mailed_report_over_the_attachment_cap_is_read_whole(hotline):
    """Files over limits.attachment_max_bytes are not stored; a report is imported all
    the same, from the record's bytes read again after the parse let them go."""
    desk = mail_desk(hotline)
    rows = [row(f"B{n}", f"2026-11-25 10:{n % 60:02}:00", "0600123456", "Odebrane")
            for n in range(40)]
    report = export_bytes(rows)
    desk.config = dataclasses.replace(
        desk.config, limits=dataclasses.replace(desk.config.limits,
                                                attachment_max_bytes=len(report) // 2))
    assert mail_report(desk, report, "2026-11-25 11:30") == {"processed": 1}
    [raw] = _raw_records(desk.store)
    assert raw.reason.startswith("PBX call report: 40 calls imported")
    assert len(stored_calls(desk.store)) == 40


def test_mail_to_the_pbx_mailbox_without_a_csv_is_quarantined(hotline):
    desk = mail_desk(hotline)
    counts = deliver(desk.store, desk.config, make_mail(to="centralka@jantar.pl"),
                     mailbox="centralka@jantar.pl", now=local("2026-11-25 10:30"))
    assert counts == {"quarantined": 1}
    assert _raw_records(desk.store)[0].reason == "PBX call report without a CSV attachment"
    assert desk.tickets() == []


def test_mail_to_other_mailboxes_still_opens_tickets(hotline):
    desk = mail_desk(hotline)
    assert deliver(desk.store, desk.config, make_mail()) == {"processed": 1}
    assert len(desk.tickets()) == 1


def _raw_records(store) -> list[RawMessage]:
    with store.transaction() as session:
        return list(session.scalars(select(RawMessage).order_by(RawMessage.id)))


# -- figures ------------------------------------------------------------------------------
def test_figures_on_a_known_day(hotline):
    desk = hotline()
    desk.calls([
        row("1", "2026-11-25 09:00:00", BURSZTYN, "Odebrane", wait="10", talk="100",
            extension="101"),
        row("2", "2026-11-25 09:10:00", "0600000002", "Odebrane", wait="30", talk="200",
            extension="101"),
        row("3", "2026-11-25 09:20:00", "0600000003", "Nieodebrane", wait="40"),
        row("4", "2026-11-25 10:05:00", "0600000004", "Porzucone", wait="25"),
        row("5", "2026-11-25 10:30:00", "0600000005", "Odebrane", wait="5", talk="50",
            extension="102"),
        row("6", "2026-11-25 10:45:00", "101", "Odebrane", callee="0600000003", talk="60"),
        row("7", "2026-11-25 11:00:00", "0600000007", "Nieodebrane", wait="15"),
        row("8", "2026-11-25 11:10:00", "102", "Odebrane", callee="0600000007", talk="30"),
        row("9", "2026-11-26 08:30:00", "0600000009", "Odebrane", wait="15", talk="30"),
    ], now=local("2026-11-25 12:00"))
    with desk.store.transaction() as session:
        figures = call_figures(session, local("2026-11-25 00:00").date(),
                               local("2026-11-26 00:00").date(), WARSAW, 20)
    totals = figures["totals"]
    assert {k: totals[k] for k in ("offered", "answered", "missed", "abandoned", "other",
                                   "outgoing")} == \
        {"offered": 7, "answered": 4, "missed": 2, "abandoned": 1, "other": 0, "outgoing": 2}
    assert totals["answer_rate"] == 0.5714 and totals["abandonment_rate"] == 0.1429
    assert totals["average_speed_of_answer"] == 15.0          # (10 + 30 + 5 + 15) / 4
    assert totals["answered_within_threshold"] == 3 and totals["service_level"] == 0.4286
    # 3: called back late (10:45, due 09:50); 4: nobody called (a ticket); 7: in time
    assert totals["callbacks"] == {"needed": 3, "made": 2, "within_target": 1}
    days = {d["date"]: d for d in figures["per_day"]}
    assert (days["2026-11-25"]["offered"], days["2026-11-26"]["offered"]) == (6, 1)
    hours = {h["hour"]: h for h in figures["per_hour"]}
    assert [hours[h]["offered"] for h in (8, 9, 10, 11)] == [1, 3, 2, 1]
    assert [hours[h]["missed"] for h in (9, 11)] == [1, 1]
    assert hours[10]["outgoing"] == 1 and len(figures["per_hour"]) == 24
    technicians = {t["technician"]: t for t in figures["per_technician"]}
    assert technicians["anna.kowalska@jantar.pl"] == {
        "technician": "anna.kowalska@jantar.pl", "answered": 2, "talk_seconds": 300,
        "average_talk_seconds": 150.0, "average_speed_of_answer": 20.0, "outgoing": 1}
    assert (technicians["piotr.nowak@jantar.pl"]["answered"],
            technicians["piotr.nowak@jantar.pl"]["outgoing"]) == (1, 1)
    assert technicians[None]["answered"] == 1
    assert len(desk.tickets()) == 1


def test_figures_of_an_empty_period_have_no_rates(hotline):
    desk = hotline()
    with desk.store.transaction() as session:
        figures = call_figures(session, local("2026-11-25 00:00").date(),
                               local("2026-11-25 00:00").date(), WARSAW)
    assert figures["totals"]["offered"] == 0 and figures["totals"]["answer_rate"] is None
    assert figures["service_level_seconds"] == 20


def test_callback_check_twice_opens_one_ticket(hotline):
    desk = hotline()
    desk.calls([row("1", "2026-11-25 10:00:00", BURSZTYN, "Nieodebrane")],
               now=local("2026-11-25 10:05"))
    now = local("2026-11-25 10:20")
    assert run_callback_check(desk.config, desk.store, now)["opened"] == 1
    assert run_callback_check(desk.config, desk.store, now + timedelta(minutes=1)) == {}
    assert len(desk.tickets()) == 1
    with desk.store.transaction() as session:
        assert session.scalar(select(Event).where(Event.action == "created")) is not None


def test_missed_calls_too_old_when_first_seen_are_stale_not_called_back(hotline):
    desk = hotline()
    result = desk.calls([row("1", "2026-11-20 10:00:00", BURSZTYN, "Nieodebrane"),
                         row("2", "2026-11-25 09:00:00", BURSZTYN, "Nieodebrane")],
                        now=local("2026-11-25 12:00"))          # an archive: callback_max_age 24h
    assert result.callbacks == {"stale": 1, "opened": 1, "decided": 1}
    calls = by_id(stored_calls(desk.store))
    assert calls["1"]["callback"] == "stale" and calls["1"]["ticket"] is None
    assert calls["2"]["callback"] == "opened"
