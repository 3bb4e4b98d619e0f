"""Floods (issue 20, point 7): a sender over the hourly new-ticket limit has the rest of
their new mail held in one bundle, and the coordinator hears of it once (both backends)."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from daemon.clock import Clock
from daemon.conversation import split_held
from daemon.directory import sync_directory
from daemon.ingest.intake import content_key, save_raw
from daemon.pipeline import Pipeline
from daemon.rules.flood import domain_counted, senders
from daemon.store.models import Flood, Message, OutboxMail, Ticket
from tests.conftest import NOW
from tests.mailfactory import MX_VERDICT, TRUSTED_MX, make_mail

COORDINATOR = "koordynator@jantar.pl"
SHOP = "jan.nowak@bursztyn.pl"          # a client's address: only the address is counted


class Flooder:
    """Saves many mails as the receiver would, then runs the pipeline over them once."""

    def __init__(self, config, store):
        self.config, self.store = config, store

    def send(self, raws, at=NOW) -> Counter:
        for raw in raws:
            save_raw(self.store, channel="smtp", key=f"smtp:{content_key(raw)}", raw=raw,
                     now=at, mailbox="sklep@jantar.pl", origin="test")
        return Pipeline(self.config, self.store, Clock(start=at)).process_pending()

    def tickets(self) -> list[tuple[str, str, bool, int]]:
        """(number, requester, held, mails in) of every ticket, in order."""
        with self.store.transaction() as session:
            inbound = dict(session.execute(select(Message.ticket_id, func.count()).where(
                Message.direction == "in").group_by(Message.ticket_id)).all())
            return [(t.number, t.requester_email, t.held, inbound.get(t.id, 0))
                    for t in session.scalars(select(Ticket).order_by(Ticket.id)).unique()]

    def outbox(self) -> Counter:
        with self.store.transaction() as session:
            return Counter(dict(session.execute(
                select(OutboxMail.kind, func.count()).group_by(OutboxMail.kind)).all()))

    def floods(self) -> list[tuple[str, int, str]]:
        with self.store.transaction() as session:
            return [(f.sender, f.mails, f.ticket.number)
                    for f in session.scalars(select(Flood).order_by(Flood.id))]


@pytest.fixture
def flooder_factory(make_config, store):
    def build(**sections) -> Flooder:
        config = make_config(store.url, **sections)
        with store.transaction() as session:
            sync_directory(session, config)
        return Flooder(config, store)
    return build


@pytest.fixture
def flooder(flooder_factory) -> Flooder:
    return flooder_factory()


def mails(count: int, sender=SHOP, start: int = 0):
    for n in range(start, start + count):
        address = sender(n) if callable(sender) else sender
        yield make_mail(sender=address, subject=f"Problem numer {n}",
                        message_id=f"<flood-{n}@{address.split('@')[1]}>",
                        body=f"Wiadomość {n}.\n")


@pytest.mark.slow
def test_two_thousand_mails_from_one_sender_make_the_limit_one_bundle_one_notice(flooder):
    assert flooder.send(mails(2000)) == Counter(processed=2000)

    tickets = flooder.tickets()
    ordinary = [t for t in tickets if not t[2]]
    [bundle] = [t for t in tickets if t[2]]
    assert len(ordinary) == 20 and all(t[3] == 1 for t in ordinary)
    assert (bundle[1], bundle[3]) == (SHOP, 1980)
    assert flooder.floods() == [(SHOP, 1980, bundle[0])]
    outbox = flooder.outbox()
    assert outbox["coordinator_flood"] == 1             # one notice for the flood
    assert outbox["coordinator_new"] == 20              # one per ordinary ticket, as always
    assert outbox["ack"] == 5                           # the per-address limit; none for the bundle
    assert sum(outbox.values()) == 26


def test_a_flood_bundle_holds_the_rest_and_tells_the_coordinator_once(flooder):
    flooder.send(mails(25))
    tickets = flooder.tickets()
    assert [t[2] for t in tickets] == [False] * 20 + [True]
    number = tickets[-1][0]
    assert flooder.floods() == [(SHOP, 5, number)]
    with flooder.store.transaction() as session:
        bundle = session.scalar(select(Ticket).where(Ticket.number == number))
        inbound = [m for m in bundle.messages if m.direction == "in"]
        assert len(inbound) == 5 and all(m.held for m in inbound)
        assert "Zalew poczty" in bundle.subject and bundle.first_response_due is None
        held = [e for e in bundle.events if e.action == "held"]
        assert len(held) == 5 and {e.detail["cause"] for e in held} == {"flood"}
        [notice] = session.scalars(select(OutboxMail).where(
            OutboxMail.kind == "coordinator_flood"))
        assert notice.recipients == [COORDINATOR] and f"[#{number}]" in notice.subject
        assert b"Problem numer 20" in notice.raw


def test_fifty_rotating_addresses_of_one_stranger_domain_are_one_sender(flooder):
    def bot(n):
        return f"bot{n % 50}@zalew.example"
    flooder.send(mails(120, sender=bot))
    tickets = flooder.tickets()
    assert [t[2] for t in tickets] == [False] * 20 + [True]
    assert tickets[-1][3] == 100
    assert flooder.floods() == [("@zalew.example", 100, tickets[-1][0])]
    assert flooder.outbox()["coordinator_flood"] == 1
    assert flooder.outbox()["ack"] == 20                # one each, before the flood; none after


def test_a_clients_thirty_shops_in_one_outage_hour_are_not_a_flood(flooder):
    flooder.send(mails(30, sender=lambda n: f"sklep{n}@bursztyn.pl"))
    assert [t[2] for t in flooder.tickets()] == [False] * 30 and flooder.floods() == []


def test_our_own_domain_is_never_counted_as_one_sender(flooder):
    flooder.send(mails(25, sender=lambda n: f"kasa{n}@jantar.pl"))
    assert flooder.floods() == [] and len(flooder.tickets()) == 25


def test_the_flood_ends_after_an_hour_without_mail_from_the_sender(flooder):
    flooder.send(mails(21))
    assert len(flooder.floods()) == 1
    later = NOW + timedelta(minutes=59)                 # the 20 tickets are still in the hour
    flooder.send(mails(1, start=100), at=later)
    evening = later + timedelta(minutes=59)             # the first 20 tickets are past the hour,
    flooder.send(mails(1, start=200), at=evening)       # but the flood had mail 59 minutes ago
    assert flooder.floods()[0][1] == 3
    flooder.send(mails(1, start=300), at=evening + timedelta(minutes=61))
    tickets = flooder.tickets()
    assert tickets[-1][2] is False and len(tickets) == 22     # an ordinary ticket again
    assert flooder.floods()[0][1] == 3


def test_a_limit_of_zero_counts_nothing(flooder_factory):
    flooder = flooder_factory(tickets={"flood_per_address": 0, "flood_per_domain": 0})
    flooder.send(mails(25, sender=lambda n: f"bot{n}@zalew.example"))
    flooder.send(mails(25, start=50))
    assert len(flooder.tickets()) == 50 and flooder.floods() == []


def test_lower_limits_and_domain_scope(make_config, db_url):
    config = make_config(db_url, tickets={"flood_per_address": 3, "flood_per_domain": 5},
                         clients=[{"name": "Sieć Bursztyn", "domains": ["bursztyn.pl"]}])
    assert senders(config, "Jan@Sklep.Bursztyn.PL") == [("jan@sklep.bursztyn.pl", 3)]
    assert senders(config, "bot@zalew.example") == [("bot@zalew.example", 3),
                                                    ("@zalew.example", 5)]
    assert not domain_counted(config, "jantar.pl") and domain_counted(config, "gmail.com")


def test_replies_to_existing_tickets_are_not_new_tickets(flooder):
    flooder.send(mails(1))
    flooder.send(make_mail(subject="Re: [#JAN-1] Problem", message_id=f"<re-{n}@bursztyn.pl>",
                           body=f"Dopisuję {n}.") for n in range(30))
    assert flooder.floods() == [] and flooder.tickets()[0][3] == 31


def test_the_coordinator_splits_a_real_problem_out_of_the_bundle(flooder):
    flooder.send(mails(22))
    with flooder.store.transaction() as session:
        [message] = session.scalars(select(Message).where(
            Message.held, Message.subject == "Problem numer 21"))
        ticket = split_held(session, flooder.config, message, actor=COORDINATOR, now=NOW)
        number = ticket.number
    with flooder.store.transaction() as session:
        split = session.scalar(select(Ticket).where(Ticket.number == number))
        assert (split.held, split.message_count, split.requester_email) == (False, 1, SHOP)
        assert split.first_response_due is not None              # routed, its clock runs
    bundle = [t for t in flooder.tickets() if t[2]]
    assert bundle[0][3] == 1


def test_a_technicians_proven_mail_is_never_a_flood(flooder_factory):
    flooder = flooder_factory(mail_auth={"trusted_authserv_ids": [TRUSTED_MX]})
    flooder.send(make_mail(sender=COORDINATOR, subject=f"Nowa sprawa {n}", headers=MX_VERDICT,
                           message_id=f"<c{n}@jantar.pl>") for n in range(22))
    assert flooder.floods() == [] and len(flooder.tickets()) == 22


def test_the_counts_read_an_index(store, flooder):
    if store.backend == "postgresql":
        explain, setup = "EXPLAIN ", "SET enable_seqscan = off"
    else:
        explain, setup = "EXPLAIN QUERY PLAN ", None
    with store.engine.connect() as connection:
        if setup:
            connection.execute(text(setup))
        plan = "\n".join(str(row) for row in connection.execute(text(
            explain + "SELECT count(*) FROM (SELECT id FROM tickets WHERE requester_email = :a "
            "AND created_at > :since LIMIT 20) AS opened"), {"a": SHOP, "since": NOW}))
    assert "ix_tickets_requester_email_created_at" in plan
