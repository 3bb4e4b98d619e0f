"""Staff mail acts only with proof (issue 20, point 1).

The attack through our real SMTP receiver, on SQLite and PostgreSQL: a mail whose From is
a technician's, with commands and a program attached, is held and obeys nothing. The
proofs that count: a reply to mail we sent to that very address, or a trusted server's
DMARC/DKIM verdict in the topmost Authentication-Results. Then the decision itself
(daemon.rules.mail_auth) on parsed mails and header values.
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from daemon.conversation import attach_held
from daemon.parse import parse_mail
from daemon.rules.mail_auth import aligned, prove_staff, sole_sender, trusted_verdict
from daemon.store.models import Message, OutboxMail
from tests.mailfactory import MX_VERDICT, TRUSTED_MX, make_mail, technician_reply
from tests.test_conversation import (  # noqa: F401 - fixtures used by name
    ANNA, COORDINATOR, CUSTOMER, assigned_ticket, helpdesk, helpdesk_factory, new_ticket, one_to,
    text_of, to_addresses)

PIOTR = "piotr.nowak@jantar.pl"
CC = "kierownik@bursztyn.pl"
PROGRAM = ("poprawka_kasy.exe", "application/octet-stream", b"MZ\x90\x00\x03" + b"\x00" * 200)
ATTACK = "#priority urgent\n#resolve\nProszę uruchomić poprawkę z załącznika na każdej kasie."


def prepended(raw: bytes, *lines: str) -> bytes:
    """RAW with header LINES added at the top (the first line topmost), as servers add them."""
    return "".join(f"{line}\r\n" for line in lines).encode() + raw


def forged(number: str, sender: str = f"Anna Kowalska <{ANNA}>", **kwargs) -> bytes:
    kwargs.setdefault("attachments", [PROGRAM])
    return make_mail(sender=sender, subject=f"Re: [#{number}] Drukarka", body=ATTACK, **kwargs)


def customers(sent) -> list:
    return [m for m in sent if to_addresses(m) & {CUSTOMER, CC}]


def assert_held_and_nothing_obeyed(helpdesk, number: str) -> None:
    ticket = helpdesk.ticket(number)
    assert (ticket.priority, ticket.status, ticket.held) == ("normal", "open", True)
    assert not {"priority_changed", "status_changed"} & {e.action for e in ticket.events}
    [held] = [m for m in ticket.messages if m.held]
    [event] = [e for e in ticket.events if e.action == "held"]
    assert event.detail["cause"] == "staff_unproven"
    assert event.detail["message_id"] == held.message_id
    assert ticket.first_responded_at is None


# -- the attack -----------------------------------------------------------------------------
@pytest.mark.parametrize("sender", [f"Anna Kowalska <{ANNA}>", "ANNA.KOWALSKA@JANTAR.PL"])
def test_a_forged_technician_mail_is_held_and_obeys_nothing(helpdesk, sender):
    number, _notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(forged(number, sender), unproven=True)

    assert customers(sent) == []                       # nothing relayed to the customer
    [warning] = sent                                   # one short mail, to Anna's real address
    assert to_addresses(warning) == {ANNA}
    assert warning.message["Auto-Submitted"] == "auto-replied"
    text = text_of(warning)
    assert "wstrzymana" in text and "NIE" in text and "odpowiedz na tę wiadomość" in text
    assert list(warning.message.iter_attachments()) == []
    assert_held_and_nothing_obeyed(helpdesk, number)
    [held] = [m for m in helpdesk.ticket(number).messages if m.held]
    with helpdesk.store.transaction() as session:  # kept whole for the coordinator
        files = session.get(Message, held.id).attachments
        assert [(f.filename, f.size) for f in files] == [(PROGRAM[0], len(PROGRAM[2]))]


def test_answering_the_held_notice_is_the_proof(helpdesk):
    number, _notice = assigned_ticket(helpdesk)
    [warning] = helpdesk.mail(forged(number, attachments=[]), unproven=True)
    sent = helpdesk.mail(make_mail(sender=ANNA, subject=f"Re: {warning.message['Subject']}",
                                   in_reply_to=warning.message["Message-ID"],
                                   body="#priority high\nJadę do sklepu."))
    assert "Jadę do sklepu." in text_of(one_to(sent, CUSTOMER).message)
    assert helpdesk.ticket(number).priority == "high"


def test_a_burst_of_forged_mail_makes_one_notice(helpdesk):
    number, _notice = assigned_ticket(helpdesk)
    sent = []
    for n in range(6):
        sent += helpdesk.mail(forged(number, message_id=f"<forged{n}@evil.example>"),
                              unproven=True)
    assert [to_addresses(m) for m in sent] == [{ANNA}]
    ticket = helpdesk.ticket(number)
    assert sum(m.held for m in ticket.messages) == 6 and ticket.priority == "normal"


@pytest.mark.parametrize("from_header", [
    f"{ANNA}, {CUSTOMER}",                              # one From, two addresses
    f"{CUSTOMER}, {ANNA}",
])
def test_a_from_naming_two_people_is_nobodys_even_answering_the_notice(helpdesk, from_header):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(forged(number, from_header, in_reply_to=notice["Message-ID"]))
    assert customers(sent) == []
    ticket = helpdesk.ticket(number)
    assert (ticket.priority, ticket.status) == ("normal", "open")
    last = [m for m in ticket.messages if m.direction == "in"][-1]
    assert last.kind == "customer"       # the first address's mail: Anna's held, Jan's his
    assert last.held is (from_header.startswith(ANNA))


def test_two_from_headers_are_nobodys_even_answering_the_notice(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    raw = forged(number, CUSTOMER, in_reply_to=notice["Message-ID"], attachments=[])
    sent = helpdesk.mail(prepended(raw, f"From: Anna Kowalska <{ANNA}>"))  # first of two
    assert customers(sent) == []
    assert_held_and_nothing_obeyed(helpdesk, number)


def test_a_reply_to_a_notice_sent_to_another_technician_is_held(helpdesk):
    number, sent = new_ticket(helpdesk)
    notice = one_to(sent, COORDINATOR).message
    sent = helpdesk.mail(make_mail(sender=COORDINATOR, subject=f"Re: {notice['Subject']}",
                                   in_reply_to=notice["Message-ID"], body=f"#assign {PIOTR}"))
    piotrs = one_to(sent, PIOTR).message
    sent = helpdesk.mail(forged(number, in_reply_to=piotrs["Message-ID"],
                                references=piotrs["Message-ID"]))
    assert customers(sent) == [] and [to_addresses(m) for m in sent] == [{ANNA}]
    assert_held_and_nothing_obeyed(helpdesk, number)


def test_a_reply_quoting_the_customers_acknowledgement_proves_nothing(helpdesk):
    """The customer got the acknowledgement: its Message-ID is no secret of Anna's."""
    number, sent = new_ticket(helpdesk)
    ack = one_to(sent, CUSTOMER).message
    helpdesk.mail(forged(number, in_reply_to=ack["Message-ID"]))
    ticket = helpdesk.ticket(number)
    assert ticket.status == "new" and ticket.priority == "normal" and ticket.held


# -- the proofs that count -------------------------------------------------------------------
def test_a_reply_to_the_assignment_notice_works_whatever_the_case(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(make_mail(sender="ANNA.Kowalska@Jantar.PL",
                                   subject=f"Re: {notice['Subject']}",
                                   in_reply_to=notice["Message-ID"],
                                   body="#priority high\nProszę zrestartować kasę."))
    assert "zrestartować kasę" in text_of(one_to(sent, CUSTOMER).message)
    ticket = helpdesk.ticket(number)
    assert ticket.priority == "high" and not ticket.held


@pytest.fixture
def trusting(helpdesk_factory):
    """A helpdesk behind a receiving server that writes Authentication-Results as mx.jantar.pl."""
    return helpdesk_factory(mail_auth={"trusted_authserv_ids": [TRUSTED_MX]})


@pytest.mark.parametrize("verdict", [
    f"{TRUSTED_MX}; dmarc=pass (p=reject) header.from=jantar.pl",
    f"{TRUSTED_MX.upper()}; DMARC=pass header.from=Jantar.pl",
    f"{TRUSTED_MX}; dkim=pass (2048-bit key) header.d=jantar.pl header.i=@jantar.pl",
    f"{TRUSTED_MX}; dkim=pass header.d=mail.jantar.pl; spf=fail smtp.mailfrom=jantar.pl",
])
def test_a_trusted_verdict_authenticates_a_fresh_mail(trusting, verdict):
    number, _notice = assigned_ticket(trusting)
    fresh = make_mail(sender=ANNA, subject=f"[#{number}] Drukarka", body="#priority high\nJadę.")
    sent = trusting.mail(prepended(fresh, f"Authentication-Results: {verdict}"))
    assert "Jadę." in text_of(one_to(sent, CUSTOMER).message)
    assert trusting.ticket(number).priority == "high"


@pytest.mark.parametrize("headers", [
    # someone else's server, vouching for us
    ["mx.evil.example; dmarc=pass header.from=jantar.pl"],
    # ours, below a header by someone else: written before the mail reached us
    ["mx.evil.example; none", f"{TRUSTED_MX}; dmarc=pass header.from=jantar.pl"],
    [f"{TRUSTED_MX}; dmarc=fail header.from=jantar.pl", "relay.example.net; none",
     f"{TRUSTED_MX}; dmarc=pass header.from=jantar.pl"],
    # ours says fail; a forged pass right beneath it is not believed over it
    [f"{TRUSTED_MX}; dmarc=fail header.from=jantar.pl",
     f"{TRUSTED_MX}; dmarc=pass header.from=jantar.pl"],
    # a topmost header nobody can read: its writer is unknown, and so is everything below
    [f"{TRUSTED_MX} dmarc pass ;;", f"{TRUSTED_MX}; dmarc=pass header.from=jantar.pl"],
    # passes, but for another domain, or not aligned
    [f"{TRUSTED_MX}; dmarc=pass header.from=evil.example"],
    [f"{TRUSTED_MX}; dmarc=pass"],
    [f"{TRUSTED_MX}; dkim=pass header.d=evil.example"],
    [f"{TRUSTED_MX}; dkim=pass header.d=pl"],
    [f"{TRUSTED_MX}; dkim=pass header.d=notjantar.pl"],
    [f"{TRUSTED_MX}; spf=pass smtp.mailfrom=jantar.pl"],
    [f"{TRUSTED_MX}; dmarc=none header.from=jantar.pl; dkim=neutral header.d=jantar.pl"],
])
def test_forged_or_foreign_verdicts_are_not_believed(trusting, headers):
    number, _notice = assigned_ticket(trusting)
    raw = prepended(forged(number), *[f"Authentication-Results: {h}" for h in headers])
    sent = trusting.mail(raw)
    assert customers(sent) == []
    assert_held_and_nothing_obeyed(trusting, number)


def test_no_verdict_is_believed_without_configured_servers(helpdesk):
    number, _notice = assigned_ticket(helpdesk)
    raw = prepended(forged(number), f"Authentication-Results: {MX_VERDICT['Authentication-Results']}")
    assert customers(helpdesk.mail(raw)) == []
    assert_held_and_nothing_obeyed(helpdesk, number)


# -- what an unproven staff mail is otherwise ------------------------------------------------
def test_an_unproven_staff_mail_opening_a_ticket_is_anybodys_new_ticket(helpdesk):
    sent = helpdesk.mail(make_mail(sender=ANNA, subject="Awaria drukarki w biurze",
                                   body="#resolve\n#priority urgent\nNie drukuje.",
                                   attachments=[PROGRAM]), unproven=True)
    ack = one_to(sent, ANNA).message                    # acknowledged, as anybody's mail
    number = ack["Subject"].split("]")[0].lstrip("[#")
    assert one_to(sent, COORDINATOR)
    ticket = helpdesk.ticket(number)
    assert (ticket.status, ticket.priority, ticket.held) == ("new", "normal", False)
    assert [m.kind for m in ticket.messages if m.direction == "in"] == ["customer"]


def test_accepting_a_held_staff_mail_keeps_it_an_internal_note(helpdesk):
    number, _notice = assigned_ticket(helpdesk)
    helpdesk.mail(forged(number), unproven=True)
    with helpdesk.store.transaction() as session:
        [held] = session.scalars(select(Message).where(Message.held))
        attach_held(session, helpdesk.config, held, actor=COORDINATOR, now=helpdesk.now)
    ticket = helpdesk.ticket(number)
    [note] = [m for m in ticket.messages if m.from_email == ANNA and m.direction == "in"]
    assert (note.kind, note.held, ticket.held) == ("internal", False, False)
    assert (ticket.priority, ticket.status) == ("normal", "open")
    assert ANNA not in {p.email for p in ticket.participants}
    with helpdesk.store.transaction() as session:
        kinds = [m.kind for m in session.scalars(select(OutboxMail).order_by(OutboxMail.id))]
    assert kinds[-1] == "staff_held"                      # nothing queued by accepting it


# -- the decision, on parsed mail ----------------------------------------------------------
def _assigned_to_anna(desk) -> str:
    desk.deliver(make_mail())
    desk.deliver(technician_reply(desk.store, "JAN-1", COORDINATOR, f"#assign {ANNA}"))
    return "JAN-1"


def test_a_requester_taken_from_another_header_than_from_is_never_staff(desk):
    """The parser may name the requester from Reply-To, Sender or Return-Path when From is
    unusable (`sender_source`); such a mail proves nobody, whatever it answers."""
    number = _assigned_to_anna(desk)
    mail = parse_mail(technician_reply(desk.store, number, ANNA, "#resolve"))
    with desk.store.transaction() as session:
        assert prove_staff(session, desk.config, mail).how == "reply to our mail"
        for source in ("reply-to", "sender", "return-path", ""):
            mail.sender_source = source
            proof = prove_staff(session, desk.config, mail)
            assert not proof and "not From" in proof.how
        mail.sender_source = "from"
        assert prove_staff(session, desk.config, mail)


def test_a_pipeline_reply_to_the_notice_counts_and_its_forgery_does_not(desk):
    number = _assigned_to_anna(desk)
    desk.deliver(make_mail(sender=ANNA, subject=f"Re: [#{number}]", body="#priority high"))
    desk.deliver(technician_reply(desk.store, number, ANNA, "#priority low"))
    [ticket] = desk.tickets()
    assert ticket["priority"] == "low"
    assert [m["held"] for m in ticket["messages"] if m["from"] == ANNA] == [True, False]


def test_sole_sender():
    mail = parse_mail(make_mail(sender="Anna <ANNA.Kowalska@jantar.pl>"))
    assert sole_sender(mail) == ANNA
    assert sole_sender(parse_mail(make_mail(sender=f"{ANNA}, {PIOTR}"))) is None
    assert sole_sender(parse_mail(make_mail(sender=f"{ANNA}, Anna <{ANNA.upper()}>"))) == ANNA


@pytest.mark.parametrize("signing, sender, expected", [
    ("jantar.pl", "jantar.pl", True), ("JANTAR.pl", "jantar.PL", True),
    ("mail.jantar.pl", "jantar.pl", True), ("jantar.pl", "biuro.jantar.pl", True),
    ("pl", "jantar.pl", False), ("notjantar.pl", "jantar.pl", False),
    ("jantar.pl.evil.example", "jantar.pl", False), ("", "jantar.pl", False),
])
def test_dkim_alignment(signing, sender, expected):
    assert aligned(signing, sender) is expected


def test_only_the_topmost_run_of_trusted_headers_counts():
    ours, theirs = "mx1.jantar.pl", "mx.evil.example"
    trusted = [ours, "mx2.jantar.pl"]
    passed = f"{ours}; dmarc=pass header.from=jantar.pl"
    assert trusted_verdict([passed], trusted, "jantar.pl") == "dmarc"
    assert trusted_verdict([f"mx2.jantar.pl; spf=pass smtp.mailfrom=jantar.pl", passed],
                           trusted, "jantar.pl") == "dmarc"      # both ours: one run
    assert trusted_verdict([f"{theirs}; none", passed], trusted, "jantar.pl") is None
    assert trusted_verdict([passed], [theirs], "jantar.pl") is None
    assert trusted_verdict([passed], [], "jantar.pl") is None
    assert trusted_verdict(["\x00;;;=", passed], trusted, "jantar.pl") is None
    assert trusted_verdict([f"{ours}; dkim=pass header.d=jantar.pl"], trusted,
                           "jantar.pl") == "dkim"
