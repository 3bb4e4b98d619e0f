"""The conversation by email, end to end through real servers.

Mail reaches the helpdesk over SMTP (our receiver), the pipeline runs, and what we send
is delivered to an aiosmtpd sink standing in for the relay; every test reads the
messages actually delivered, headers included.
"""
from __future__ import annotations

import dataclasses
import email.policy
import re
from datetime import timedelta
from email.parser import BytesHeaderParser
from email.utils import parseaddr

import pytest
from sqlalchemy import select

from daemon.clock import Clock
from daemon.directory import sync_directory
from daemon.ingest.smtp import start_receiver
from daemon.outbound.sender import send_pending
from daemon.pipeline import Pipeline
from daemon.rules.classify import LOOP_HEADER
from daemon.rules.quotes import REPLY_ABOVE
from daemon.store.models import RawMessage, Ticket
from tests.conftest import NOW
from tests.fixtures_smtp import send_mail
from tests import mailfactory
from tests.mailfactory import make_mail

CUSTOMER = "jan.nowak@bursztyn.pl"
ANNA = "anna.kowalska@jantar.pl"
COORDINATOR = "koordynator@jantar.pl"
PIOTR = "piotr.nowak@jantar.pl"  # L2


class Helpdesk:
    """Our receiver on an ephemeral port, the pipeline, and the sender to the sink."""

    def __init__(self, config, store, sink):
        self.config, self.store, self.sink = config, store, sink
        self.now = NOW
        self.staff = {t.email.lower() for t in config.technicians}
        self.receiver = start_receiver(config, store, Clock(start=self.now))

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)

    def mail(self, raw: bytes, to: str = "sklep@jantar.pl", *, unproven: bool = False) -> list:
        """Deliver RAW to the helpdesk as its writer's server would, the envelope sender its
        From address; return the mails the helpdesk sent in response.

        Staff mail goes the way production accepts it: answering mail we sent (In-Reply-To,
        References) or vouched for by a receiving server (Authentication-Results). A test of
        a path production refuses sends a bare staff mail on purpose, with UNPROVEN.
        """
        headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
        sender = parseaddr(str(headers.get("From", "")))[1]
        if sender.lower() in self.staff and not unproven:
            proof = [h for h in ("In-Reply-To", "References", "Authentication-Results")
                     if headers.get(h)]
            assert proof, (f"staff mail from {sender} proves nothing: answer the notice "
                           "(mailfactory.technician_reply) or pass unproven=True")
        before = len(self.sink.messages)
        send_mail(self.receiver.port, raw, rcpt_tos=[to],
                  mail_from=sender if "@" in sender else "sender@example.org")
        clock = Clock(start=self.now)
        Pipeline(self.config, self.store, clock).process_pending()
        send_pending(self.config, self.store, clock)
        return self.sink.messages[before:]

    def ticket(self, number: str) -> Ticket:
        with self.store.transaction() as session:
            ticket = session.scalar(select(Ticket).where(Ticket.number == number))
            ticket.messages, ticket.events, ticket.participants  # load before the session ends
            return ticket

    def stop(self):
        self.receiver.stop()


@pytest.fixture
def helpdesk_factory(make_config, store, smtp_sink):
    started = []

    def build(**sections) -> Helpdesk:
        config = make_config(store.url, outbound={
            "transport": "smtp", "smtp_host": smtp_sink.host, "smtp_port": smtp_sink.port}, **sections)
        config = dataclasses.replace(config, smtp_server=dataclasses.replace(
            config.smtp_server, listen=("127.0.0.1", 0)))
        with store.transaction() as session:
            sync_directory(session, config)
        started.append(Helpdesk(config, store, smtp_sink))
        return started[-1]

    yield build
    for helpdesk in started:
        helpdesk.stop()


@pytest.fixture
def helpdesk(helpdesk_factory) -> Helpdesk:
    return helpdesk_factory()


def to_addresses(caught) -> set[str]:
    return {a.lower() for a in caught.rcpt_tos}


def one_to(sent, address):
    [mail] = [m for m in sent if address in to_addresses(m)]
    return mail


def text_of(message) -> str:
    message = getattr(message, "message", message)  # a CaughtMail or its parsed message
    body = message.get_body(("plain",))
    return body.get_content() if body else ""


def number_in(subject: str) -> str:
    return re.search(r"\[#(JAN-\d+)\]", subject).group(1)


def new_ticket(helpdesk, **kwargs) -> tuple[str, list]:
    kwargs.setdefault("message_id", "<problem-1@bursztyn.pl>")
    sent = helpdesk.mail(make_mail(**kwargs))
    ack = one_to(sent, kwargs.get("sender", CUSTOMER))
    return number_in(ack.message["Subject"]), sent


# -- the harness itself ---------------------------------------------------------------------------
def test_the_harness_sends_staff_mail_as_production_receives_it(helpdesk):
    """Issue 21 item 20: every staff mail went with the envelope sender@example.org and
    nothing but a staff From. Now each goes as its writer's server sends it and answers
    our notice; a bare staff mail is refused by the harness unless a test means it."""
    number, notice = assigned_ticket(helpdesk)              # the coordinator answers a notice
    helpdesk.mail(technician_reply(notice, "Proszę zrestartować drukarkę."))
    with helpdesk.store.transaction() as session:
        records = list(session.scalars(select(RawMessage).order_by(RawMessage.id)))
        envelopes = [r.envelope["mail_from"] for r in records]
    assert envelopes == [CUSTOMER, COORDINATOR, ANNA]
    kinds = [m.kind for m in helpdesk.ticket(number).messages if m.direction == "in"]
    assert kinds == ["customer", "technician", "technician"]  # both proven, nothing held
    bare = make_mail(sender=ANNA, subject=f"Re: [#{number}] Drukarka", body="#resolve")
    with pytest.raises(AssertionError, match="proves nothing"):
        helpdesk.mail(bare)
    helpdesk.mail(bare, unproven=True)                     # the path production refuses
    ticket = helpdesk.ticket(number)
    assert ticket.held and ticket.status == "open"


# -- acknowledgement --------------------------------------------------------------------------
def test_new_ticket_is_acknowledged_in_polish_with_number_and_headers(helpdesk):
    number, sent = new_ticket(helpdesk, cc="kierownik@bursztyn.pl")
    ack = one_to(sent, CUSTOMER).message
    assert number == "JAN-1"
    assert parseaddr(ack["From"])[1] == "sklep@jantar.pl"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack[LOOP_HEADER]
    assert ack["In-Reply-To"] == "<problem-1@bursztyn.pl>"
    assert "<problem-1@bursztyn.pl>" in ack["References"]
    text = text_of(ack)
    assert "JAN-1" in text and "w temacie numer [#JAN-1]" in text  # keep the number in the subject
    assert ack.get_body(("html",)) is not None
    stored = [m.message_id for m in helpdesk.ticket(number).messages]
    assert ack["Message-ID"].strip("<>") in stored            # so replies to it thread


def test_english_mailbox_acknowledges_in_english(helpdesk_factory):
    helpdesk = helpdesk_factory(mailboxes=[{"address": "sklep@jantar.pl", "language": "en"}])
    _, sent = new_ticket(helpdesk)
    assert "ticket" in text_of(one_to(sent, CUSTOMER)).lower()


def test_coordinator_hears_of_every_new_ticket(helpdesk):
    number, sent = new_ticket(helpdesk, attachments=[("zdjecie.jpg", "image/jpeg", b"\xff\xd8jpeg")])
    notice = one_to(sent, COORDINATOR).message
    assert f"[#{number}]" in notice["Subject"]
    assert parseaddr(notice["From"])[1] == "sklep@jantar.pl"
    text = text_of(notice)
    assert "Sieć Bursztyn" in text and CUSTOMER in text and f"/tickets/{number}" in text
    assert [p.get_filename() for p in notice.iter_attachments()] == ["zdjecie.jpg"]


def test_coordinator_assigns_by_answering_the_notice(helpdesk):
    number, sent = new_ticket(helpdesk)
    notice = one_to(sent, COORDINATOR).message
    reply = make_mail(sender=COORDINATOR, subject=f"Re: {notice['Subject']}",
                      in_reply_to=notice["Message-ID"], body=f"#assign anna\n\n> {REPLY_ABOVE}\n> ...")
    sent = helpdesk.mail(reply)
    assigned = one_to(sent, ANNA).message
    assert f"[#{number}]" in assigned["Subject"]
    assert "Drukarka" in text_of(assigned) and "Sieć Bursztyn" in text_of(assigned)
    assert not [m for m in sent if CUSTOMER in to_addresses(m)]  # a command-only mail relays nothing
    ticket = helpdesk.ticket(number)
    assert ticket.assignee.email == ANNA and ticket.status == "open"
    assert {"assigned", "command"} <= {e.action for e in ticket.events}


def test_coordinator_notice_names_the_channel_and_priority_in_words(helpdesk):
    _, sent = new_ticket(helpdesk)
    lines = text_of(one_to(sent, COORDINATOR).message).splitlines()
    assert "Kanał:        e-mail (sklep@jantar.pl)" in lines
    assert "Poziom:       L1, priorytet: normalny" in lines


def test_assignment_notice_gives_each_fact_a_line_of_its_own(helpdesk):
    """Issue 21: 'priorytet: normalPierwsza odpowiedź do: … CETRozwiązanie do: …'."""
    _, notice = assigned_ticket(helpdesk)
    lines = text_of(notice).splitlines()
    assert "Poziom:       L1, priorytet: normalny" in lines
    date = r"\d{1,2}\.\d{2}\.\d{4}, \d{2}:\d{2} CES?T"     # 25.11.2026, 15:00 CET
    assert [line for line in lines if re.fullmatch(rf"Pierwsza odpowiedź do: {date}", line)]
    assert [line for line in lines if re.fullmatch(rf"Rozwiązanie do: +{date}", line)]
    assert "Temat:        Drukarka fiskalna nie drukuje" in lines


# -- no answer to machines ------------------------------------------------------------------
@pytest.mark.parametrize("headers, sender, subject", [
    ({"Auto-Submitted": "auto-replied"}, CUSTOMER, "Re: problem"),
    ({"X-Autoreply": "yes"}, CUSTOMER, "problem"),
    ({"X-Auto-Response-Suppress": "All"}, CUSTOMER, "problem"),
    ({}, CUSTOMER, "Automatyczna odpowiedź: jestem na urlopie"),
    ({}, CUSTOMER, "Out of Office: back on Monday"),
    ({"Precedence": "bulk"}, CUSTOMER, "Newsletter"),
    ({"List-Id": "<kasy.lists.bursztyn.pl>"}, CUSTOMER, "lista"),
    ({}, "no-reply@bursztyn.pl", "powiadomienie"),
    ({}, "MAILER-DAEMON@mx.bursztyn.pl", "Undelivered Mail Returned to Sender"),
    ({}, "sklep@jantar.pl", "nasza własna wiadomość"),
    ({LOOP_HEADER: "sklep@jantar.pl"}, CUSTOMER, "pętla"),
])
def test_machines_are_stored_but_never_answered(helpdesk, headers, sender, subject):
    sent = helpdesk.mail(make_mail(sender=sender, subject=subject, headers=headers))
    assert not [m for m in sent if sender.lower() in to_addresses(m)]
    with helpdesk.store.transaction() as session:
        [ticket] = session.scalars(select(Ticket)).unique()
        assert [m.kind for m in ticket.messages if m.direction == "in"] == ["auto"]


def test_out_of_office_from_the_requester_lands_on_the_ticket_unanswered(helpdesk):
    number, _ = new_ticket(helpdesk)
    sent = helpdesk.mail(make_mail(subject=f"Automatyczna odpowiedź: Re: [#{number}] Drukarka",
                                   headers={"Auto-Submitted": "auto-replied"}))
    assert not [m for m in sent if CUSTOMER in to_addresses(m)]
    ticket = helpdesk.ticket(number)
    assert [m.kind for m in ticket.messages if m.direction == "in"] == ["customer", "auto"]


def test_at_most_five_automatic_mails_per_address_per_hour(helpdesk):
    acks = 0
    for n in range(8):
        sent = helpdesk.mail(make_mail(subject=f"Problem {n}", message_id=f"<p{n}@bursztyn.pl>"))
        acks += len([m for m in sent if CUSTOMER in to_addresses(m)])
    assert acks == 5
    helpdesk.advance(hours=1, minutes=1)
    sent = helpdesk.mail(make_mail(subject="Problem po godzinie", message_id="<later@bursztyn.pl>"))
    assert len([m for m in sent if CUSTOMER in to_addresses(m)]) == 1


def test_two_autoresponders_cannot_ping_pong_through_us(helpdesk):
    """A careless autoresponder answers every mail with a new one and no RFC 3834 headers."""
    robot = "biuro@kaszub.com.pl"
    incoming = make_mail(sender=robot, subject="Zapytanie", message_id="<r0@kaszub.com.pl>")
    answers = 0
    for round_ in range(1, 12):
        sent = [m for m in helpdesk.mail(incoming) if robot in to_addresses(m)]
        answers += len(sent)
        if not sent:
            break
        incoming = make_mail(sender=robot, subject=f"Odpowiedź na: {round_}",
                             message_id=f"<r{round_}@kaszub.com.pl>")
    assert answers == 5


# -- technicians reply from their mail clients ---------------------------------------------
def assigned_ticket(helpdesk) -> tuple[str, object]:
    number, sent = new_ticket(helpdesk, cc="kierownik@bursztyn.pl")
    notice = one_to(sent, COORDINATOR).message
    sent = helpdesk.mail(make_mail(sender=COORDINATOR, subject=f"Re: {notice['Subject']}",
                                   in_reply_to=notice["Message-ID"], body=f"#assign {ANNA}\n"))
    return number, one_to(sent, ANNA).message


def technician_reply(notice, body: str, **kwargs) -> bytes:
    quoted = "\n".join("> " + line for line in text_of(notice).splitlines())
    return make_mail(sender=f"Anna Kowalska <{ANNA}>", subject=f"Re: {notice['Subject']}",
                     in_reply_to=notice["Message-ID"],
                     body=f"{body}\n\nW dniu 25.11.2026 o 11:00, Jantar Helpdesk <sklep@jantar.pl> napisał:\n{quoted}\n",
                     **kwargs)


def test_technician_reply_is_relayed_from_the_mailbox_without_the_quote(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(technician_reply(notice, "Dzień dobry,\nproszę zrestartować drukarkę.",
                                          attachments=[("instrukcja.pdf", "application/pdf", b"%PDF")]))
    relay = one_to(sent, CUSTOMER)
    assert to_addresses(relay) == {CUSTOMER, "kierownik@bursztyn.pl"}  # requester and CC
    mail = relay.message
    name, address = parseaddr(mail["From"])
    assert address == "sklep@jantar.pl" and "Anna Kowalska" in name
    assert ANNA not in relay.raw.decode("utf-8", "replace")            # her address not exposed
    assert f"[#{number}]" in mail["Subject"]
    assert mail["In-Reply-To"] == "<problem-1@bursztyn.pl>"
    text = text_of(mail)
    assert "zrestartować drukarkę" in text and REPLY_ABOVE not in text and "napisał" not in text
    assert [p.get_filename() for p in mail.iter_attachments()] == ["instrukcja.pdf"]
    assert "zrestartować drukarkę" in mail.get_body(("html",)).get_content()
    ticket = helpdesk.ticket(number)
    assert helpdesk.now <= ticket.first_responded_at < helpdesk.now + timedelta(minutes=1)


def test_customer_reply_reaches_the_assignee_and_a_plain_reply_continues(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(technician_reply(notice, "Proszę o zdjęcie ekranu."))
    relay = one_to(sent, CUSTOMER).message
    customer_reply = make_mail(subject=f"Re: {relay['Subject']}", in_reply_to=relay["Message-ID"],
                               body="W załączniku zdjęcie.",
                               attachments=[("ekran.png", "image/png", b"\x89PNG")])
    sent = helpdesk.mail(customer_reply)
    forward = one_to(sent, ANNA).message
    assert f"[#{number}]" in forward["Subject"]
    assert parseaddr(forward["From"])[1] == "sklep@jantar.pl"
    assert "W załączniku zdjęcie." in text_of(forward)
    assert [p.get_filename() for p in forward.iter_attachments()] == ["ekran.png"]
    # Anna answers the forward in her client: it reaches the customer again.
    sent = helpdesk.mail(technician_reply(forward, "Dziękuję, naprawione."))
    assert "Dziękuję, naprawione." in text_of(one_to(sent, CUSTOMER).message)


def test_forwards_thread_under_the_notice_and_answering_one_proves_the_technician(helpdesk):
    """Issue 21 item 4: the forward named no earlier mail, so Anna's client showed it apart."""
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(make_mail(subject=f"Re: [#{number}] Drukarka", body="Kasa 3 też."))
    first = one_to(sent, ANNA).message
    assert first["In-Reply-To"] == notice["Message-ID"]
    assert first["References"].split() == [notice["Message-ID"]]
    sent = helpdesk.mail(make_mail(subject=f"Re: [#{number}] Drukarka", body="I kasa 4."))
    second = one_to(sent, ANNA).message
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"].split() == [notice["Message-ID"], first["Message-ID"]]
    # Anna answers the second forward as her client writes it: that is her proof.
    answer = make_mail(sender=f"Anna Kowalska <{ANNA}>", subject=f"Re: {second['Subject']}",
                       in_reply_to=second["Message-ID"],
                       references=f"{second['References']} {second['Message-ID']}",
                       body="Sprawdzę obie kasy jutro rano.")
    sent = helpdesk.mail(answer)
    assert "Sprawdzę obie kasy" in text_of(one_to(sent, CUSTOMER).message)
    ticket = helpdesk.ticket(number)
    assert [m.kind for m in ticket.messages if m.direction == "in"][-1] == "technician"
    assert not ticket.held


def test_staff_notices_follow_the_last_mail_to_the_same_person(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(technician_reply(notice, "#tier L2"))
    handover = one_to(sent, PIOTR).message
    assert handover["In-Reply-To"] is None        # the first mail Piotr gets about the ticket
    sent = helpdesk.mail(mailfactory.technician_reply(helpdesk.store, number, COORDINATOR,
                                                      "#assign Piotr"))
    assigned = one_to(sent, PIOTR).message
    assert assigned["In-Reply-To"] == handover["Message-ID"]
    assert assigned["References"].split() == [handover["Message-ID"]]


def test_large_customer_files_reach_the_technician_as_links(helpdesk_factory):
    helpdesk = helpdesk_factory(notifications={"attach_max_bytes": 10})
    number, sent = new_ticket(helpdesk, attachments=[("log.txt", "text/plain", b"x" * 100)])
    notice = one_to(sent, COORDINATOR).message
    assert list(notice.iter_attachments()) == []
    assert re.search(rf"log\.txt .*http://helpdesk\.test/tickets/{number}/attachments/\d+", text_of(notice))


def test_technician_text_is_escaped_in_the_html_part(helpdesk):
    _, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(technician_reply(notice, "Proszę wpisać <script>alert(1)</script> & OK"))
    html = one_to(sent, CUSTOMER).message.get_body(("html",)).get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; OK" in html and "<script>" not in html


def test_internal_note_reaches_no_customer(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(technician_reply(notice, "#internal\nKlient ma starą wersję firmware."))
    assert not [m for m in sent if CUSTOMER in to_addresses(m)]
    kinds = [m.kind for m in helpdesk.ticket(number).messages if m.direction == "in"]
    assert kinds[-1] == "internal"


def test_resolve_tells_the_requester_and_a_reply_reopens(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(technician_reply(notice, "#resolve\nDrukarka wymieniona."))
    to_customer = [m.message for m in sent if CUSTOMER in to_addresses(m)]
    assert len(to_customer) == 2                      # the relay, then the resolution notice
    resolved = to_customer[-1]
    assert resolved["Subject"].startswith(f"[#{number}] Rozwiązane")
    assert "14 dni" in text_of(resolved)
    assert helpdesk.ticket(number).status == "resolved"
    helpdesk.advance(days=3)
    helpdesk.mail(make_mail(subject=f"Re: {resolved['Subject']}", body="Znowu nie działa."))
    ticket = helpdesk.ticket(number)
    assert ticket.status == "open" and "reopened" in [e.action for e in ticket.events]


def test_reply_after_the_reopen_window_opens_a_linked_ticket(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    helpdesk.mail(technician_reply(notice, "#resolve"))
    helpdesk.advance(days=15)
    sent = helpdesk.mail(make_mail(subject=f"Re: [#{number}] Drukarka", body="Znowu to samo."))
    new_number = number_in(one_to(sent, CUSTOMER).message["Subject"])
    assert new_number != number
    follow_up = helpdesk.ticket(new_number)
    assert follow_up.linked_ticket_id == helpdesk.ticket(number).id
    assert helpdesk.ticket(number).status == "resolved"


def test_wait_pauses_until_the_customer_answers(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    helpdesk.mail(technician_reply(notice, "#wait\nProszę podać numer seryjny."))
    assert helpdesk.ticket(number).status == "waiting"
    helpdesk.mail(make_mail(subject=f"Re: [#{number}]", body="SN 12345"))
    assert helpdesk.ticket(number).status == "open"


def test_tier_priority_and_assign_by_short_name(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(technician_reply(notice, "#tier L2\n#priority high"))
    handover = one_to(sent, "piotr.nowak@jantar.pl").message  # the L2 technician
    assert f"[#{number}]" in handover["Subject"]
    ticket = helpdesk.ticket(number)
    assert (ticket.tier, ticket.priority, ticket.assignee) == ("L2", "high", None)
    sent = helpdesk.mail(mailfactory.technician_reply(helpdesk.store, number, COORDINATOR,
                                                      "#assign Piotr"))
    assert helpdesk.ticket(number).assignee.email == "piotr.nowak@jantar.pl"
    assert one_to(sent, "piotr.nowak@jantar.pl")


def test_bad_command_is_not_relayed_and_the_technician_is_told(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(technician_reply(notice, "#priorytet wysoki\nDzień dobry, już jadę."))
    assert not [m for m in sent if CUSTOMER in to_addresses(m)]
    error = one_to(sent, ANNA).message
    text = text_of(error)
    assert "#priorytet wysoki" in text and "#resolve" in text and "#assign" in text
    assert error["Auto-Submitted"] == "auto-replied"
    ticket = helpdesk.ticket(number)
    assert ticket.priority == "normal" and "commands_rejected" in [e.action for e in ticket.events]


def test_assign_to_nobody_known_is_a_bad_command(helpdesk):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(technician_reply(notice, "#assign zbyszek"))
    assert "zbyszek" in text_of(one_to(sent, ANNA).message)
    assert helpdesk.ticket(number).assignee.email == ANNA


# -- the mailbox policy for new mail -------------------------------------------------------------
def test_form_mailbox_answers_new_mail_with_a_prefilled_form_link(helpdesk_factory):
    helpdesk = helpdesk_factory(mailboxes=[{"address": "sklep@jantar.pl", "new_mail": "form"}])
    sent = helpdesk.mail(make_mail(sender="Jan Nowak <jan.nowak@bursztyn.pl>", subject="Kasa nr 3"))
    invite = one_to(sent, CUSTOMER).message
    text = text_of(invite)
    assert "http://helpdesk.test/?email=jan.nowak%40bursztyn.pl" in text
    assert "subject=Kasa+nr+3" in text and "name=Jan+Nowak" in text
    assert invite["Auto-Submitted"] == "auto-replied"
    with helpdesk.store.transaction() as session:
        assert list(session.scalars(select(Ticket))) == []
        [raw] = session.scalars(select(RawMessage))
        assert raw.status == "processed" and "form" in raw.reason


def test_form_mailbox_still_threads_replies_to_existing_tickets(helpdesk_factory):
    helpdesk = helpdesk_factory(mailboxes=[{"address": "sklep@jantar.pl", "new_mail": "form"},
                                           {"address": "serwis@jantar.pl"}])
    sent = helpdesk.mail(make_mail(to="serwis@jantar.pl", message_id="<x@bursztyn.pl>"),
                         to="serwis@jantar.pl")
    number = number_in(one_to(sent, CUSTOMER).message["Subject"])
    helpdesk.mail(make_mail(subject=f"Re: [#{number}] dalej", body="Dopisuję."), to="sklep@jantar.pl")
    assert [m.direction for m in helpdesk.ticket(number).messages].count("in") == 2


def test_coordinator_digest_instead_of_a_notice_per_ticket(helpdesk_factory):
    from daemon.conversation import send_coordinator_digest
    helpdesk = helpdesk_factory(notifications={"coordinator_digest": "15m"})
    first, sent = new_ticket(helpdesk, subject="Kasa 1", message_id="<d1@bursztyn.pl>")
    second, more = new_ticket(helpdesk, subject="Kasa 2", message_id="<d2@bursztyn.pl>")
    assert not [m for m in sent + more if COORDINATOR in to_addresses(m)]
    clock = Clock(start=helpdesk.now)
    assert send_coordinator_digest(helpdesk.config, helpdesk.store, clock) == 2
    assert send_coordinator_digest(helpdesk.config, helpdesk.store, clock) == 0  # safe to run twice
    send_pending(helpdesk.config, helpdesk.store, clock)
    [digest] = [m for m in helpdesk.sink.messages if COORDINATOR in to_addresses(m)]
    text = text_of(digest)
    assert first in text and second in text and "Kasa 2" in text
    assert digest.message["Auto-Submitted"] == "auto-generated"
