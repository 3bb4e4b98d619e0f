"""SLA clocks on tickets: stop, pause, resume, recompute from history; the sweep's notices.

Time is handed in: mail is processed with a frozen clock at chosen instants, and the
sweep runs at chosen instants, so every due time is exact.
"""
from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text

from daemon.config import load
from daemon.directory import sync_directory
from daemon.ingest.intake import content_key, save_raw
from daemon.pipeline import Pipeline
from daemon.rules.sla import recompute_open_tickets
from daemon.rules.sla_sweep import sweep_sla
from daemon.store import Store
from daemon.store.models import Event, OutboxMail, Ticket
from daemon.views import ticket_summary
from tests.conftest import BASE_CONFIG, _truncate_all, merge
from tests.mailfactory import MX_VERDICT, TRUSTED_MX, make_mail
from tests.tomlwrite import write_config

ROOT = Path(__file__).resolve().parents[1]
WARSAW = ZoneInfo("Europe/Warsaw")
ANNA = "anna.kowalska@jantar.pl"
COORDINATOR = "koordynator@jantar.pl"
CUSTOMER = "jan.nowak@bursztyn.pl"


def warsaw(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=WARSAW)


ARRIVAL = warsaw(25, 11)   # Wednesday 11:00: standard, normal is due 15:00 and Friday 11:00


class FrozenClock:
    """A clock standing at one instant, so that every stored time is exact."""

    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at


class Desk:
    def __init__(self, config, store):
        self.config, self.store = config, store

    def mail(self, at: datetime, **kwargs) -> None:
        raw = make_mail(**kwargs)
        save_raw(self.store, channel="smtp", key=content_key(raw), raw=raw, now=at,
                 mailbox="sklep@jantar.pl", origin="test")
        Pipeline(self.config, self.store, FrozenClock(at)).process_pending()

    def reply(self, at: datetime, body: str, sender: str = ANNA) -> None:
        """A staff member's mail about JAN-1, written fresh (nothing was sent to Anna about
        it), as it arrives through our receiving server, whose DMARC pass counts."""
        self.mail(at, sender=sender, subject="Re: [#JAN-1] Drukarka", body=body,
                  headers=MX_VERDICT)

    def ticket(self) -> Ticket:
        with self.store.transaction() as session:
            ticket = session.scalar(select(Ticket).where(Ticket.number == "JAN-1"))
            ticket.events, ticket.participants, ticket.messages  # loaded before the session ends
            return ticket

    def json(self, now: datetime) -> dict:
        with self.store.transaction() as session:
            return ticket_summary(session.scalar(select(Ticket)), WARSAW, now)

    def sweep(self, at: datetime) -> Counter:
        return sweep_sla(self.config, self.store, FrozenClock(at))

    def notices(self) -> list[OutboxMail]:
        with self.store.transaction() as session:
            return list(session.scalars(select(OutboxMail).where(OutboxMail.kind.like("sla_%"))
                                        .order_by(OutboxMail.id)))


@pytest.fixture
def desk_factory(make_config, store):
    def build(**sections) -> Desk:
        sections.setdefault("mail_auth", {"trusted_authserv_ids": [TRUSTED_MX]})
        config = make_config(store.url, **sections)
        with store.transaction() as session:
            sync_directory(session, config)
        return Desk(config, store)
    return build


@pytest.fixture
def desk(desk_factory) -> Desk:
    desk = desk_factory()
    desk.mail(ARRIVAL)
    return desk


# -- the clocks on a ticket -------------------------------------------------------------------------
def test_a_new_ticket_gets_both_clocks_from_its_contract(desk):
    ticket = desk.ticket()
    assert (ticket.contract, ticket.sla_calendar) == ("standard", "l1")
    assert ticket.first_response_due == warsaw(25, 15)
    assert ticket.first_response_warn_at == warsaw(25, 14)            # at 75% of 4h
    assert ticket.resolution_due == warsaw(27, 11)                    # 5h + 8h + 3h
    assert ticket.resolution_warn_at == warsaw(26, 15)                # 12h
    assert ticket.sla_alarm_at == warsaw(25, 14)
    assert desk.json(warsaw(25, 12))["sla_state"] == "ok"
    assert desk.json(warsaw(25, 14, 30))["sla_state"] == "warning"
    assert desk.json(warsaw(25, 15))["sla_state"] == "breached"


def test_the_first_technician_reply_stops_the_first_clock(desk):
    desk.reply(warsaw(25, 12), "Proszę zrestartować drukarkę.")
    ticket = desk.ticket()
    assert ticket.first_responded_at == warsaw(25, 12)
    assert ticket.sla_alarm_at == warsaw(26, 15)        # only the resolution clock is left
    view = desk.json(warsaw(25, 16))
    assert view["sla"]["first_response"]["state"] == "met"
    assert view["sla_state"] == "ok"
    assert view["first_responded_at"] == "2026-11-25T12:00:00+01:00"


def test_resolve_stops_the_resolution_clock_and_notes_the_tier(desk):
    desk.reply(warsaw(25, 14), "#resolve\nDrukarka wymieniona.")
    ticket = desk.ticket()
    assert ticket.status == "resolved" and ticket.resolved_at == warsaw(25, 14)
    assert ticket.resolved_tier == "L1" and ticket.sla_alarm_at is None
    view = desk.json(warsaw(30, 10))
    assert view["sla_state"] == "met" and view["resolved_tier"] == "L1"
    assert view["resolved_at"] == "2026-11-25T14:00:00+01:00"
    assert desk.sweep(warsaw(30, 10)) == Counter()


def test_wait_pauses_the_resolution_clock_and_the_customers_reply_resumes_it(desk):
    desk.reply(warsaw(25, 12), "#wait\nProszę podać numer seryjny.")
    ticket = desk.ticket()
    assert ticket.status == "waiting" and ticket.sla_paused_at == warsaw(25, 12)
    assert ticket.resolution_due is None        # it runs out only after the customer answers
    paused = desk.json(warsaw(26, 9))
    assert paused["sla_state"] == "paused" and paused["paused_since"] == "2026-11-25T12:00:00+01:00"
    desk.mail(warsaw(26, 12), subject="Re: [#JAN-1] Drukarka", body="SN 12345")
    ticket = desk.ticket()
    assert ticket.status == "open" and ticket.sla_paused_at is None
    # Paused Wednesday 12-16 and Thursday 8-12: eight business hours, kept and shown.
    assert ticket.sla_paused_seconds == 8 * 3600
    assert ticket.resolution_due == warsaw(30, 11)   # Friday 11:00 + 8h: Friday 16:00 + Monday 3h
    view = desk.json(warsaw(26, 12))
    assert view["paused_seconds"] == 8 * 3600 and view["sla_state"] == "ok"


def test_a_pause_after_the_breach_does_not_move_the_due_time(desk):
    desk.reply(warsaw(27, 12), "#wait\nProszę o zdjęcie.")           # after Friday 11:00
    assert desk.ticket().resolution_due == warsaw(27, 11)
    assert desk.json(warsaw(27, 13))["sla_state"] == "breached"


def test_a_priority_change_recomputes_from_arrival_not_from_now(desk):
    desk.reply(warsaw(25, 13), "#priority high", sender=COORDINATOR)
    ticket = desk.ticket()
    assert ticket.first_response_due == warsaw(25, 12)   # arrival + 1h, already past
    assert ticket.resolution_due == warsaw(26, 11)       # arrival + 8h
    [changed] = [e for e in ticket.events if e.action == "sla_changed"]
    assert changed.detail["reason"] == "priority_changed"
    assert desk.json(warsaw(25, 13))["sla_state"] == "breached"
    desk.reply(warsaw(25, 13, 5), "#priority low", sender=COORDINATOR)
    assert desk.ticket().first_response_due == warsaw(26, 11)   # 8h from arrival


def test_a_reopened_ticket_resumes_where_it_stopped(desk):
    desk.reply(warsaw(25, 12), "#resolve\nGotowe.")
    desk.mail(warsaw(26, 12), subject="Re: [#JAN-1] Drukarka", body="Znowu nie działa.")
    ticket = desk.ticket()
    assert ticket.status == "open" and ticket.resolved_at is None and ticket.resolved_tier is None
    assert ticket.sla_paused_seconds == 8 * 3600
    assert ticket.resolution_due == warsaw(30, 11)


def test_ticket_json_has_the_sla_fields(tmp_path, config_file, capsys):
    from daemon.cli import main
    config = config_file()
    eml = tmp_path / "a.eml"
    eml.write_bytes(make_mail())
    assert main(["--config", str(config), "--now", "2026-11-25T11:00:00+01:00", "ingest",
                 str(eml)]) == 0
    capsys.readouterr()
    main(["--config", str(config), "--now", "2026-11-25T15:30:00+01:00", "tickets", "--json"])
    [summary] = json.loads(capsys.readouterr().out)
    assert summary["first_response_due"] == "2026-11-25T15:00:00+01:00"
    assert summary["resolution_due"] == "2026-11-27T11:00:00+01:00"
    assert summary["sla_state"] == "breached" and summary["contract"] == "standard"
    for key in ("first_responded_at", "resolved_at", "resolved_tier", "paused_seconds"):
        assert key in summary
    main(["--config", str(config), "--now", "2026-11-25T12:00:00+01:00", "ticket", "JAN-1", "--json"])
    detail = json.loads(capsys.readouterr().out)
    assert detail["sla_state"] == "ok"
    assert detail["sla"]["first_response"]["warn_at"] == "2026-11-25T14:00:00+01:00"


def test_recompute_after_the_contracts_changed(desk, make_config, store):
    faster = make_config(store.url, contracts=[{"name": "standard", "calendar": "l1", "sla": {
        "normal": {"first_response": "2h", "resolution": "8h"}}}])
    assert recompute_open_tickets(faster, store, warsaw(25, 12)) == 1
    ticket = desk.ticket()
    assert ticket.first_response_due == warsaw(25, 13) and ticket.resolution_due == warsaw(26, 11)


# -- the sweep ------------------------------------------------------------------------------------
def test_the_sweep_warns_then_reports_the_breach_once_each(desk):
    desk.reply(warsaw(25, 11, 30), "#assign anna", sender=COORDINATOR)
    assert desk.sweep(warsaw(25, 13, 59)) == Counter()
    assert desk.sweep(warsaw(25, 14, 1)) == Counter(sla_warning=1)
    assert desk.sweep(warsaw(25, 14, 2)) == Counter()                  # run twice: nothing new
    assert desk.sweep(warsaw(25, 15, 1)) == Counter(sla_breach=1)
    assert desk.sweep(warsaw(25, 15, 1)) == Counter()
    warning, breach = desk.notices()
    assert (warning.kind, breach.kind) == ("sla_warning", "sla_breach")
    assert set(warning.recipients) == {ANNA, COORDINATOR}
    mail = email.message_from_bytes(breach.raw, policy=email.policy.default)
    assert "[#JAN-1]" in mail["Subject"] and "SLA" in mail["Subject"]
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "25.11.2026, 15:00 CET" in mail.get_body(("plain",)).get_content()  # Polish date
    ticket = desk.ticket()
    assert ticket.first_response_warning_sent_at == warsaw(25, 14, 1)
    assert ticket.first_response_breach_sent_at == warsaw(25, 15, 1)
    assert ticket.sla_alarm_at == warsaw(26, 15)                        # the resolution warning
    events = [(e.action, e.detail["clock"]) for e in ticket.events if e.action.startswith("sla_")]
    assert events == [("sla_warning", "first_response"), ("sla_breach", "first_response")]
    assert [e.detail["to"] for e in ticket.events if e.action == "sla_warning"] == \
        [warning.recipients]
    # Each notice is on the ticket too, under its Message-ID, so an answer to it threads.
    copies = {m.message_id: m for m in ticket.messages if m.direction == "out"}
    for notice in (warning, breach):
        copy = copies[notice.message_id]
        assert (copy.kind, copy.subject, set(copy.to)) == ("system", notice.subject,
                                                          set(notice.recipients))
        assert notice.ticket_id == ticket.id and notice.status == "pending"
    assert ticket.message_count == len(ticket.messages)


def test_a_late_sweep_reports_breaches_without_stale_warnings(desk):
    assert desk.sweep(warsaw(30, 9)) == Counter(sla_breach=2)          # both clocks ran out
    assert desk.sweep(warsaw(30, 9)) == Counter()
    assert desk.ticket().sla_alarm_at is None


def test_no_notice_for_a_clock_stopped_in_time(desk):
    desk.reply(warsaw(25, 13), "Już sprawdzam.")
    assert desk.sweep(warsaw(25, 16)) == Counter()
    desk.reply(warsaw(26, 9), "#resolve")
    assert desk.sweep(warsaw(30, 9)) == Counter()
    assert desk.notices() == []


def test_the_warning_share_is_configurable(desk_factory):
    desk = desk_factory(sla={"warning_share": 0.5})
    desk.mail(ARRIVAL)
    assert desk.ticket().first_response_warn_at == warsaw(25, 13)


def test_a_breach_escalates_as_the_contract_says(desk_factory):
    desk = desk_factory(contracts=[{"name": "standard", "calendar": "l1",
                                    "sla": {"normal": {"first_response": "4h", "resolution": "16h"},
                                            "high": {"first_response": "1h", "resolution": "8h"}},
                                    "on_breach": {"priority": "high", "tier": "L2"}}])
    desk.mail(ARRIVAL)
    assert desk.sweep(warsaw(25, 15, 1)) == Counter(sla_breach=1)
    ticket = desk.ticket()
    assert (ticket.priority, ticket.tier) == ("high", "L2")
    assert ticket.resolution_due == warsaw(26, 11)                     # high: 8h from arrival
    actions = [e.action for e in sorted(ticket.events, key=lambda e: e.id)]
    assert {"priority_changed", "tier_changed", "sla_changed"} <= set(actions)
    assert actions.index("sla_breach") < actions.index("priority_changed")  # the trail's order
    with desk.store.transaction() as session:
        kinds = [m.kind for m in session.scalars(select(OutboxMail))]
        assert "tier_handover" in kinds
    breach = [n for n in desk.notices() if n.kind == "sla_breach"][0]
    text_part = email.message_from_bytes(breach.raw, policy=email.policy.default)
    assert "- nowy priorytet: wysoki" in text_part.get_body(("plain",)).get_content()
    assert desk.sweep(warsaw(25, 15, 2)) == Counter()


def test_the_sweep_reads_due_tickets_through_an_index(store, desk):
    if store.backend != "postgresql":
        pytest.skip("the plan is checked on PostgreSQL")
    with store.engine.connect() as connection:
        connection.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(row[0] for row in connection.execute(text(
            "EXPLAIN SELECT id FROM tickets WHERE sla_alarm_at <= now() ORDER BY sla_alarm_at")))
    assert "ix_tickets_sla_alarm_at" in plan


# -- two daemons, one PostgreSQL ------------------------------------------------------------------
TICKETS = 12


def test_two_daemon_processes_send_each_breach_notice_once(tmp_path, pg_schema_url):
    """Two `helpdesk run --once` processes at the same time, twice, through a breach."""
    _truncate_all(pg_schema_url)
    doc = merge(BASE_CONFIG, {"helpdesk": {"database_url": pg_schema_url,
                                           "data_dir": str(tmp_path / "data")},
                              "outbound": {"transport": "maildir",
                                           "maildir": str(tmp_path / "sent")}})
    config_path = write_config(tmp_path / "helpdesk.toml", doc)
    config = load(config_path, env={})
    store = Store(pg_schema_url)
    with store.transaction() as session:
        sync_directory(session, config)
    for n in range(TICKETS):
        raw = make_mail(subject=f"Kasa {n} nie działa", message_id=f"<two-{n}@bursztyn.pl>")
        save_raw(store, channel="smtp", key=content_key(raw), raw=raw, now=ARRIVAL,
                 mailbox="sklep@jantar.pl", origin="test")
    Pipeline(config, store, FrozenClock(ARRIVAL)).process_pending()

    later = "2026-11-30T09:00:00+01:00"   # both clocks of every ticket have run out
    for _round in range(2):
        daemons = [subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config",
                                     str(config_path), "--now", later, "run", "--once"],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for _ in range(2)]
        for daemon in daemons:
            out, err = daemon.communicate(timeout=120)
            assert daemon.returncode == 0, err
    with store.transaction() as session:
        breaches = session.scalar(select(func.count(OutboxMail.id))
                                  .where(OutboxMail.kind == "sla_breach"))
        warnings = session.scalar(select(func.count(OutboxMail.id))
                                  .where(OutboxMail.kind == "sla_warning"))
        per_clock = Counter((e.ticket_id, e.detail["clock"]) for e in session.scalars(
            select(Event).where(Event.action == "sla_breach")))
    store.dispose()
    assert breaches == 2 * TICKETS and warnings == 0
    assert len(per_clock) == 2 * TICKETS and set(per_clock.values()) == {1}


SWEEPER = """
import json, sys, time
from datetime import datetime
from pathlib import Path
from daemon.config import load
from daemon.rules.sla_sweep import sweep_sla
from daemon.store import Store

class FrozenClock:
    def __init__(self, at):
        self.at = at
    def now(self):
        return self.at

config_path, go, *instants = sys.argv[1:]
config = load(config_path, env={})
store = Store(config.database_url)
while not Path(go).exists():   # start together with the other sweeper
    time.sleep(0.01)
sent = {}
for instant in instants:
    for kind, n in sweep_sla(config, store, FrozenClock(datetime.fromisoformat(instant)),
                             batch=1).items():
        sent[kind] = sent.get(kind, 0) + n
print(json.dumps(sent))
"""


def test_two_sweeping_processes_at_once_send_each_notice_once(tmp_path, pg_schema_url):
    """Two processes sweep one ticket at a time through warnings and breaches of both clocks."""
    _truncate_all(pg_schema_url)
    doc = merge(BASE_CONFIG, {"helpdesk": {"database_url": pg_schema_url,
                                           "data_dir": str(tmp_path / "data")}})
    config_path = write_config(tmp_path / "helpdesk.toml", doc)
    config = load(config_path, env={})
    store = Store(pg_schema_url)
    with store.transaction() as session:
        sync_directory(session, config)
    for n in range(TICKETS):
        raw = make_mail(subject=f"Kasa {n}", message_id=f"<sweep-{n}@bursztyn.pl>")
        save_raw(store, channel="smtp", key=content_key(raw), raw=raw, now=ARRIVAL,
                 mailbox="sklep@jantar.pl", origin="test")
    Pipeline(config, store, FrozenClock(ARRIVAL)).process_pending()

    go = tmp_path / "go"
    instants = [warsaw(25, 14, 1), warsaw(25, 15, 1), warsaw(26, 15, 1), warsaw(27, 11, 1)]
    sweepers = [subprocess.Popen([sys.executable, "-c", SWEEPER, str(config_path), str(go),
                                  *[i.isoformat() for i in instants]], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    go.touch()
    totals: Counter = Counter()
    for sweeper in sweepers:
        out, err = sweeper.communicate(timeout=120)
        assert sweeper.returncode == 0, err
        totals.update(json.loads(out))
    with store.transaction() as session:
        rows = Counter(m.kind for m in session.scalars(select(OutboxMail)
                                                       .where(OutboxMail.kind.like("sla_%"))))
        notices = Counter((e.ticket_id, e.action, e.detail["clock"]) for e in session.scalars(
            select(Event).where(Event.action.in_(("sla_warning", "sla_breach")))))
    store.dispose()
    assert rows == totals == Counter(sla_warning=2 * TICKETS, sla_breach=2 * TICKETS)
    assert len(notices) == 4 * TICKETS and set(notices.values()) == {1}
