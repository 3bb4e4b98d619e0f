"""Routing rules, contracts and the after-hours handover; `rules explain`; check-config."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from daemon.cli import main
from daemon.config import ConfigError, from_dict, load
from daemon.conversation import change_tier
from daemon.directory import sync_directory
from daemon.rules.routing import Directory, MailFacts, decide
from daemon.rules.sla_config import sla_config
from daemon.store.models import Event, OutboxMail, Ticket
from tests.conftest import BASE_CONFIG, Desk, merge
from tests.mailfactory import make_mail
from tests.tomlwrite import write_config

WARSAW = ZoneInfo("Europe/Warsaw")
WEDNESDAY = datetime(2026, 11, 25, 11, 0, tzinfo=WARSAW)    # inside L1 hours
SATURDAY = datetime(2026, 11, 28, 10, 0, tzinfo=WARSAW)     # outside
MONDAY_8 = datetime(2026, 11, 30, 8, 0, tzinfo=WARSAW)

RULES = [
    {"name": "database outages go to L3", "subject": "(?i)baz[aey] danych", "tier": "L3",
     "priority": "high"},
    {"name": "fiscal printers are urgent in shop hours", "subject": "(?i)drukark", "in_hours": True,
     "priority": "urgent", "set_category": "fiscal"},
    {"name": "kaszub invoices", "sender": "@kaszub.com.pl", "body": "(?i)faktur",
     "set_category": "billing", "stop": True},
    {"name": "anything billing goes to L2", "category": "billing", "tier": "L2"},
]


def config_with(**sections):
    return from_dict(merge(BASE_CONFIG, sections), env={})


def facts(**kwargs) -> MailFacts:
    values = dict(mailbox="sklep@jantar.pl", channel="email", sender="jan.nowak@bursztyn.pl",
                  subject="Pytanie", body="", category=None, has_attachment=False,
                  client="Sieć Bursztyn")
    return MailFacts(**{**values, **kwargs})


def routed(config, now=WEDNESDAY, **kwargs):
    return decide(sla_config(config), facts(**kwargs), Directory.of(config), now)


# -- built-in defaults ----------------------------------------------------------------------------
def test_built_in_calendars_and_contracts_serve_an_empty_configuration():
    sla = sla_config(from_dict({}, env={}))
    assert {"l1", "24x7"} <= set(sla.calendars) and {"standard", "extended"} <= set(sla.contracts)
    assert sla.default_contract == "standard" and sla.warning_share == 0.75
    standard = sla.contracts["standard"]
    assert standard.targets_for("normal").first_response == timedelta(hours=4)
    assert standard.targets_for("high").resolution == timedelta(hours=8)
    assert sla.contracts["extended"].after_hours_tier == "L2"


def test_a_configured_entry_replaces_the_built_in_one_of_its_name():
    config = config_with(contracts=[{"name": "standard", "calendar": "24x7",
                                     "sla": {"normal": {"first_response": "2h"}}}])
    standard = sla_config(config).contracts["standard"]
    assert standard.calendar == "24x7"
    assert standard.targets_for("urgent").first_response == timedelta(hours=2)  # nearest lower
    assert standard.targets_for("low").first_response is None                   # none lower


# -- rules ----------------------------------------------------------------------------------------
def test_without_rules_a_ticket_is_l1_normal():
    routing = routed(config_with())
    assert (routing.tier, routing.priority, routing.matched) == ("L1", "normal", [])


def test_rules_apply_in_order_and_later_rules_see_earlier_actions():
    config = config_with(rules=RULES)
    routing = routed(config, subject="Baza danych nie odpowiada")
    assert (routing.tier, routing.priority) == ("L3", "high")
    assert routing.matched == ["database outages go to L3"]
    routing = routed(config, sender="biuro@sklep.kaszub.com.pl", client="Market Kaszub",
                     body="Prosimy o korektę faktury")
    assert routing.category == "billing" and routing.tier == "L1"  # stop: rule 4 not tried
    assert routing.outcomes[-1].skipped
    config = config_with(rules=[{**RULES[2], "stop": False}, RULES[3]])
    routing = routed(config, sender="biuro@kaszub.com.pl", body="faktura", client="Market Kaszub")
    assert routing.matched == ["kaszub invoices", "anything billing goes to L2"]
    assert routing.tier == "L2"


def test_in_hours_follows_the_contract_calendar():
    config = config_with(rules=RULES)
    assert routed(config, subject="Drukarka").priority == "urgent"
    outside = routed(config, now=SATURDAY, subject="Drukarka")
    assert outside.priority == "normal"
    assert outside.outcomes[1].why_not == (
        "in_hours: arrived outside the L1 hours of contract 'standard'",)


def test_every_failed_condition_is_given():
    config = config_with(rules=[{"name": "picky", "mailbox": "serwis@jantar.pl",
                                 "channel": ["web", "phone"], "client": "Market Kaszub",
                                 "sender": "@kaszub.com.pl", "subject": "x{3}", "body": "y",
                                 "category": "pos", "has_attachment": True, "in_hours": False,
                                 "tier": "L3"}])
    [outcome] = routed(config).outcomes
    assert [reason.split(":")[0] for reason in outcome.why_not] == [
        "mailbox", "channel", "client", "sender", "subject", "body", "category", "has_attachment",
        "in_hours"]


def test_set_client_brings_its_contract_and_an_assignee_brings_a_tier():
    config = config_with(rules=[{"name": "shop 7 belongs to Kaszub", "sender": "sklep7@gmail.com",
                                 "set_client": "Market Kaszub"},
                                {"name": "Kaszub to Piotr", "client": "Market Kaszub",
                                 "assignee": "Piotr.Nowak@jantar.pl"}])
    routing = routed(config, sender="sklep7@gmail.com", client=None)
    assert (routing.client, routing.contract) == ("Market Kaszub", "extended")
    assert (routing.assignee, routing.tier) == ("piotr.nowak@jantar.pl", "L2")


def test_contract_action_wins_over_the_clients():
    config = config_with(rules=[{"name": "vip", "subject": "VIP", "contract": "extended"}])
    assert routed(config, subject="VIP: kasa").contract == "extended"
    assert routed(config, subject="kasa").contract == "standard"


# -- after-hours handover -------------------------------------------------------------------------
def test_after_hours_l1_work_goes_to_l2_only_for_an_extended_contract():
    config = config_with(rules=RULES)
    extended = routed(config, now=SATURDAY, client="Market Kaszub", sender="a@kaszub.com.pl")
    standard = routed(config, now=SATURDAY)
    assert (extended.tier, extended.handover) == ("L2", True)
    assert (standard.tier, standard.handover) == ("L1", False)
    # Work a rule sent elsewhere is not L1's: L3 keeps it.
    assert routed(config, now=SATURDAY, client="Market Kaszub", subject="Baza danych").tier == "L3"
    assert routed(config, client="Market Kaszub").tier == "L1"  # in hours: L1's


@pytest.mark.parametrize("sender, tier, calendar, first_due, resolution_due", [
    # extended: L2 on the 24x7 calendar from arrival (Saturday 10:00): 4h and 16h later.
    ("kierownik@kaszub.com.pl", "L2", "24x7", datetime(2026, 11, 28, 14, 0, tzinfo=WARSAW),
     datetime(2026, 11, 29, 2, 0, tzinfo=WARSAW)),
    # standard: waits for L1; the clock starts Monday 08:00.
    ("jan.nowak@bursztyn.pl", "L1", "l1", datetime(2026, 11, 30, 12, 0, tzinfo=WARSAW),
     datetime(2026, 12, 1, 16, 0, tzinfo=WARSAW)),
])
def test_a_ticket_arriving_on_saturday(desk, sender, tier, calendar, first_due, resolution_due):
    desk.deliver(make_mail(sender=sender), now=SATURDAY)
    [ticket] = desk.tickets()
    assert (ticket["tier"], ticket["sla"]["calendar"]) == (tier, calendar)
    assert datetime.fromisoformat(ticket["first_response_due"]) == first_due
    assert datetime.fromisoformat(ticket["resolution_due"]) == resolution_due
    assert ticket["first_response_due"].endswith(("+01:00", "+02:00"))
    [routed_event] = [e for e in ticket["events"] if e["action"] == "routed"]
    assert routed_event["detail"]["handover"] == (tier == "L2")


def test_moved_back_to_l1_a_handed_over_ticket_runs_on_l1_hours(desk):
    desk.deliver(make_mail(sender="kierownik@kaszub.com.pl"), now=SATURDAY)
    with desk.store.transaction() as session:
        ticket = session.scalar(select(Ticket))
        change_tier(session, desk.config, ticket, "L1", actor="koordynator@jantar.pl",
                    now=MONDAY_8)
        assert ticket.sla_calendar == "l1"
        assert ticket.first_response_due == datetime(2026, 11, 30, 12, 0, tzinfo=WARSAW)
        assert "sla_changed" in [e.action for e in ticket.events]


# -- rules on the ticket --------------------------------------------------------------------------
def test_the_routed_event_lists_the_rules_that_matched(make_config, store):
    config = make_config(store.url, rules=RULES)
    with store.transaction() as session:
        sync_directory(session, config)
    desk = Desk(config, store)
    desk.deliver(make_mail(subject="Drukarka i baza danych"), now=WEDNESDAY)
    [ticket] = desk.tickets()
    assert (ticket["tier"], ticket["priority"], ticket["category"]) == ("L3", "urgent", "fiscal")
    [event] = [e for e in ticket["events"] if e["action"] == "routed"]
    assert event["detail"]["rules"] == ["database outages go to L3",
                                        "fiscal printers are urgent in shop hours"]
    assert event["detail"]["contract"] == "standard"


def test_a_rule_assignee_is_notified_once(make_config, store):
    config = make_config(store.url, rules=[{"name": "printers to Anna", "subject": "(?i)drukark",
                                            "assignee": "anna.kowalska@jantar.pl"}])
    with store.transaction() as session:
        sync_directory(session, config)
    Desk(config, store).deliver(make_mail(), now=WEDNESDAY)
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket))
        assert ticket.assignee.email == "anna.kowalska@jantar.pl" and ticket.status == "open"
        kinds = [m.kind for m in session.scalars(select(OutboxMail))]
        assert kinds.count("assigned") == 1 and "coordinator_new" not in kinds
        assert session.scalar(select(Event).where(Event.action == "assigned")).actor == "rules"


# -- rules explain --------------------------------------------------------------------------------
def test_rules_explain_shows_matches_misses_and_due_times_without_a_store(tmp_path, capsys):
    path = write_config(tmp_path / "helpdesk.toml", merge(BASE_CONFIG, {
        "helpdesk": {"database_url": f"sqlite:///{tmp_path / 'never.db'}"}, "rules": RULES}))
    eml = tmp_path / "mail.eml"
    eml.write_bytes(make_mail(sender="kierownik@kaszub.com.pl", subject="Drukarka fiskalna"))
    code = main(["--config", str(path), "--now", "2026-11-28T10:00:00+01:00",
                 "rules", "explain", str(eml)])
    out = capsys.readouterr().out
    assert code == 0
    assert "-  database outages go to L3: no match" in out
    assert "subject: /(?i)baz[aey] danych/ not found" in out
    assert "in_hours: arrived outside the L1 hours of contract 'extended'" in out
    assert "tier L2, priority normal" in out and "handed over" in out
    assert "first response due 2026-11-28T14:00:00" in out
    assert not (tmp_path / "never.db").exists()   # nothing opened, nothing changed

    code = main(["--config", str(path), "--now", "2026-11-25T11:00:00+01:00",
                 "rules", "explain", str(eml), "--json"])
    explanation = json.loads(capsys.readouterr().out)
    assert [r["matched"] for r in explanation["rules"]] == [False, True, False, False]
    assert explanation["result"]["priority"] == "urgent"
    assert explanation["result"]["first_response_due"] == "2026-11-25T11:30:00+01:00"
    assert explanation["result"]["resolution_due"] == "2026-11-25T15:00:00+01:00"


# -- check-config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rule, expected", [
    ({"subject": "(?i)baz[aey danych"}, 'rules[0] "bad one".subject: bad regular expression'),
    ({"body": "*kasa"}, 'rules[0] "bad one".body: bad regular expression'),
    ({"tier": "L4"}, 'rules[0] "bad one".tier: must be one of L1, L2, L3'),
    ({"priority": "critical"}, 'rules[0] "bad one".priority: must be one of'),
    ({"subjcet": "x"}, 'rules[0] "bad one".subjcet: unknown key'),
    ({"assignee": "zbyszek@jantar.pl"}, 'rules[0] "bad one".assignee: \'zbyszek@jantar.pl\' is not configured'),
    ({"contract": "gold"}, 'rules[0] "bad one".contract: \'gold\' is not configured'),
    ({"mailbox": "inny@jantar.pl"}, 'rules[0] "bad one".mailbox'),
    ({"sender": "kaszub.com.pl"}, 'rules[0] "bad one".sender: \'kaszub.com.pl\': give an address or @domain'),
    ({"in_hours": "yes"}, 'rules[0] "bad one".in_hours: must be bool'),
])
def test_a_bad_rule_is_named_with_its_key(rule, expected):
    with pytest.raises(ConfigError) as caught:
        config_with(rules=[{"name": "bad one", **rule}])
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("sections, expected", [
    ({"calendars": [{"name": "x", "hours": "Pn-Pt 8-16"}]}, "calendars[0].hours: "),
    ({"calendars": [{"name": "x", "hours": "Mon 08:00-09:00", "holidays": "XX"}]},
     "calendars[0].holidays: no public holidays known for 'XX'"),
    ({"calendars": [{"name": "x", "hours": "Mon 08:00-09:00", "extra_closed": ["31.12.2026"]}]},
     "calendars[0].extra_closed: not a date"),
    ({"contracts": [{"name": "gold", "calendar": "l2"}]}, "contracts[0].calendar: no calendar named 'l2'"),
    ({"contracts": [{"name": "gold", "calendar": "l1", "after_hours_tier": "L2"}]},
     "contracts[0].after_hours_calendar: is required"),
    ({"contracts": [{"name": "gold", "calendar": "l1", "sla": {"normal": {"first_response": "4 hours"}}}]},
     "contracts[0].sla.normal.first_response: not a duration"),
    ({"contracts": [{"name": "gold", "calendar": "l1", "sla": {"critical": {"resolution": "4h"}}}]},
     "contracts[0].sla.critical: not a priority"),
    ({"contracts": [{"name": "gold", "calendar": "l1", "on_breach": {"priority": "max"}}]},
     "contracts[0].on_breach.priority: must be one of"),
    ({"clients": [{"name": "Nowy", "contract": "gold"}]}, "clients[0].contract: no contract named 'gold'"),
    ({"sla": {"default_contract": "gold"}}, "sla.default_contract: no contract named 'gold'"),
    ({"sla": {"warning_share": 75}}, "sla.warning_share: must be between 0 and 1"),
    ({"rules": [{"name": "a"}, {"name": "a"}]}, 'rules[1] "a".name: duplicate rule name'),
])
def test_calendar_contract_and_sla_problems_are_named(sections, expected):
    with pytest.raises(ConfigError) as caught:
        config_with(**sections)
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value.problems


def test_check_config_command_names_the_rule_and_key(tmp_path, capsys):
    path = write_config(tmp_path / "bad.toml", {"rules": [
        {"name": "database outages go to L3", "subject": "(?i)baz[aey danych", "tier": "L3"}]})
    assert main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert 'rules[0] "database outages go to L3".subject: bad regular expression' in err


def test_the_example_configuration_has_calendars_contracts_and_rules():
    config = load(Path(__file__).resolve().parents[1] / "helpdesk.example.toml",
                  env={"SKLEP_IMAP_PASSWORD": "x"})
    sla = sla_config(config)
    assert {"l1", "24x7"} <= set(sla.calendars) and {"standard", "extended"} <= set(sla.contracts)
    assert sla.rules and sla.rules[0].name
