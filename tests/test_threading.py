"""Threading: subject tags, In-Reply-To/References, held replies, new tickets (both backends)."""
import pytest
from sqlalchemy import select

from daemon.outbound.outbox import enqueue
from daemon.rules.threading import tagged_number
from daemon.store.models import OutboxMail, Ticket
from daemon.tickets import configured_client
from tests.conftest import NOW, Desk
from tests.mailfactory import make_mail, technician_reply

ANNA, COORDINATOR = "anna.kowalska@jantar.pl", "koordynator@jantar.pl"


@pytest.mark.parametrize("subject", [
    "Re: [#JAN-1042] Drukarka", "RE: RE: [#JAN-1042] Drukarka", "Odp: [#JAN-1042] x",
    "Odp.: [#jan-1042] x", "AW: [#JAN-1042]", "Fwd: [#JAN-1042] x", "PD: [#JAN-1042]",
    "[EXTERNAL] Re: [#JAN-1042] x", "Re: [ #JAN - 1042 ] folded by a client",
    "R: R: I: [#JAN-01042] leading zero"])
def test_tag_is_found_whatever_surrounds_it(subject):
    assert tagged_number(subject, "JAN") == "JAN-1042"


@pytest.mark.parametrize("subject", ["JAN-1042 without brackets", "[#ABC-1042] other prefix",
                                     "[JAN-1042] no hash", ""])
def test_no_tag(subject):
    assert tagged_number(subject, "JAN") is None


def inbound(ticket) -> list[dict]:
    return [m for m in ticket["messages"] if m["direction"] == "in"]


def _first_ticket(desk):
    desk.deliver(make_mail(message_id="<first@bursztyn.pl>"))
    [ticket] = desk.tickets()
    return ticket


def test_new_mail_opens_a_ticket_with_number_client_and_requester(desk):
    ticket = _first_ticket(desk)
    assert ticket["number"] == "JAN-1"
    assert ticket["client"] == "Sieć Bursztyn"
    assert ticket["requester"] == "jan.nowak@bursztyn.pl"
    assert (ticket["channel"], ticket["mailbox"], ticket["status"]) == ("email", "sklep@jantar.pl", "new")
    assert ticket["tier"] == "L1" and ticket["priority"] == "normal"
    assert ticket["created_at"].endswith("+01:00")  # Warsaw, winter time
    assert ticket["messages"][0]["message_id"] == "first@bursztyn.pl"
    assert [e["action"] for e in ticket["events"]][:2] == ["created", "routed"]


@pytest.mark.parametrize("sender, client", [
    ("jan@bursztyn.pl", "Sieć Bursztyn"),
    ("jan@sklep12.BURSZTYN.pl", "Sieć Bursztyn"),          # a parent domain, any case
    ("jan@kasa.outlet.bursztyn.pl", "Outlet Bursztyn"),    # the most specific domain wins
    ("jan@outlet.bursztyn.pl", "Outlet Bursztyn"),
    ("jan@niebursztyn.pl", None),                          # a suffix is not a parent domain
    ("jan@kaszub.com.pl", None),                           # a client removed from the config
    ("jan@pl", None),
])
def test_the_client_is_the_sender_s_most_specific_domain(make_config, db_url, store,
                                                            sender, client):
    """The client of a new ticket comes from the sender's domain. Two clients can share
    a parent domain; a client taken out of the configuration gets no new tickets."""
    from daemon.directory import sync_directory
    clients = [{"name": "Market Kaszub", "domains": ["kaszub.com.pl"]}]
    with store.transaction() as session:  # Kaszub is in the store from an earlier run
        sync_directory(session, make_config(db_url, clients=clients))
    config = make_config(db_url, clients=[
        {"name": "Sieć Bursztyn", "domains": ["bursztyn.pl"]},
        {"name": "Outlet Bursztyn", "domains": ["@Outlet.Bursztyn.pl"]}])
    desk = Desk(config, store)
    with store.transaction() as session:
        sync_directory(session, config)
    desk.deliver(make_mail(sender=sender))
    [ticket] = desk.tickets()
    assert ticket["client"] == client
    assert configured_client(config, sender) == client  # what `rules explain` names


def test_tagged_reply_from_the_requester_threads_in(desk):
    ticket = _first_ticket(desk)
    desk.deliver(make_mail(subject=f"Odp: [#{ticket['number']}] Drukarka", body="Nadal nie działa."))
    [ticket] = desk.tickets()
    assert len(inbound(ticket)) == 2 and not ticket["held"]


def test_reply_by_in_reply_to_joins_a_person_the_conversation_was_copied_to(desk):
    """The requester copied the manager of another firm on a later mail: the manager's
    reply to the first mail joins the conversation."""
    _first_ticket(desk)
    desk.deliver(make_mail(subject="Re: Drukarka fiskalna", in_reply_to="<first@bursztyn.pl>",
                           cc="kierownik@inna-firma.pl", body="Dołączam kierownika."))
    desk.deliver(make_mail(sender="kierownik@inna-firma.pl", subject="Re: Drukarka fiskalna",
                           in_reply_to="<first@bursztyn.pl>"))
    [ticket] = desk.tickets()
    assert [m["held"] for m in inbound(ticket)] == [False, False, False]
    assert "kierownik@inna-firma.pl" in ticket["cc"]


def test_a_stranger_replying_by_reference_is_held_and_not_joined(desk):
    """Issue 20, point 2: knowing the customer's Message-ID is no tie to the ticket.

    joiner@gmail.com answered the customer's own first mail; once the ticket is assigned
    and its technician answers, the answer goes to the requester only.
    """
    _first_ticket(desk)
    desk.deliver(make_mail(sender="joiner@gmail.com", subject="Re: Drukarka fiskalna",
                           in_reply_to="<first@bursztyn.pl>", references="<first@bursztyn.pl>",
                           body="Ja też chcę dostawać odpowiedzi."))
    [ticket] = desk.tickets()
    assert [m["held"] for m in inbound(ticket)] == [False, True]
    assert ticket["held"] is True and "joiner@gmail.com" not in ticket["cc"]
    [held] = [e for e in ticket["events"] if e["action"] == "held"]
    assert held["detail"]["cause"] == "stranger" and "reference" in held["detail"]["reason"]
    assert "participant_added" not in [e["action"] for e in ticket["events"]]

    desk.deliver(technician_reply(desk.store, "JAN-1", COORDINATOR, f"#assign {ANNA}"))
    desk.deliver(technician_reply(desk.store, "JAN-1", ANNA, "Proszę zrestartować drukarkę."))
    with desk.store.transaction() as session:
        [relay] = session.scalars(select(OutboxMail).where(OutboxMail.kind == "relay"))
        assert relay.recipients == ["jan.nowak@bursztyn.pl"]


def test_a_reply_to_our_mail_sent_to_that_address_joins(desk):
    """An address we mailed about the ticket (here a supplier, asked for parts) may
    answer it, though nothing else ties it to the ticket."""
    _first_ticket(desk)
    with desk.store.transaction() as session:
        ticket = session.scalar(select(Ticket))
        ours = enqueue(session, desk.config, kind="relay", now=NOW, to=["serwis@kasy-fiskalne.pl"],
                       subject="Prośba o części", text="...", ticket=ticket)
        message_id = ours.message_id
    desk.deliver(make_mail(sender="serwis@kasy-fiskalne.pl", subject="Re: Prośba o części",
                           in_reply_to=f"<{message_id}>"))
    desk.deliver(make_mail(sender="Serwis@Kasy-Fiskalne.pl", subject="Re: Re: Prośba o części",
                           in_reply_to=f"<{message_id}>", message_id="<again@kasy-fiskalne.pl>"))
    [ticket] = desk.tickets()
    assert [m["held"] for m in inbound(ticket)] == [False, False, False]
    assert "serwis@kasy-fiskalne.pl" in ticket["cc"]


def test_the_people_a_held_mail_copied_are_not_tied_by_it(desk):
    ticket = _first_ticket(desk)
    desk.deliver(make_mail(sender="obcy@konkurencja.pl", subject=f"Re: [#{ticket['number']}] x",
                           cc="wspolnik@gmail.com"))
    desk.deliver(make_mail(sender="wspolnik@gmail.com", subject="Re: x",
                           in_reply_to="<first@bursztyn.pl>"))
    [ticket] = desk.tickets()
    assert [m["held"] for m in inbound(ticket)] == [False, True, True]
    assert "wspolnik@gmail.com" not in ticket["cc"]


def test_a_stranger_quoting_our_mail_to_someone_else_is_held(desk):
    desk.deliver(make_mail(message_id="<first@bursztyn.pl>"))
    with desk.store.transaction() as session:
        [ack] = session.scalars(select(OutboxMail).where(OutboxMail.kind == "ack"))
        ack_id = ack.message_id
    desk.deliver(make_mail(sender="joiner@gmail.com", subject="Re: x", in_reply_to=f"<{ack_id}>"))
    [ticket] = desk.tickets()
    assert [m["held"] for m in inbound(ticket)] == [False, True]


def test_a_tagged_reply_quoting_the_ticket_is_still_held_from_a_stranger(desk):
    """Before, a tagged mail that also referenced a message of the ticket was trusted."""
    ticket = _first_ticket(desk)
    desk.deliver(make_mail(sender="obcy@konkurencja.pl", subject=f"Re: [#{ticket['number']}] x",
                           in_reply_to="<first@bursztyn.pl>"))
    [ticket] = desk.tickets()
    assert inbound(ticket)[1]["held"] is True


def test_references_thread_even_when_in_reply_to_is_unknown(desk):
    _first_ticket(desk)
    desk.deliver(make_mail(subject="Re: x", in_reply_to="<unknown@x>",
                           references="<first@bursztyn.pl> <unknown@x>"))
    assert len(desk.tickets()) == 1


def test_tagged_reply_from_a_stranger_is_held_not_appended_silently(desk):
    ticket = _first_ticket(desk)
    desk.deliver(make_mail(sender="obcy@konkurencja.pl", subject=f"Re: [#{ticket['number']}] hej"))
    [ticket] = desk.tickets()
    assert ticket["held"] is True
    assert inbound(ticket)[1]["held"] is True
    assert "held" in [e["action"] for e in ticket["events"]]


def test_tagged_reply_from_the_clients_domain_is_trusted(desk):
    ticket = _first_ticket(desk)
    desk.deliver(make_mail(sender="sklep12@bursztyn.pl", subject=f"Re: [#{ticket['number']}]"))
    assert desk.tickets()[0]["held"] is False


def test_tag_of_a_ticket_that_does_not_exist_opens_a_new_one(desk):
    desk.deliver(make_mail(subject="Re: [#JAN-999] stary temat"))
    assert [t["number"] for t in desk.tickets()] == ["JAN-1"]


def test_same_message_to_two_mailboxes_is_stored_once(desk):
    raw = make_mail(message_id="<twice@bursztyn.pl>")
    desk.deliver(raw, mailbox="sklep@jantar.pl")
    desk.deliver(raw.replace(b"To: sklep@jantar.pl", b"To: serwis@jantar.pl"), mailbox="serwis@jantar.pl")
    [ticket] = desk.tickets()
    assert len(inbound(ticket)) == 1
    assert [r.status for r in desk.raw_records()] == ["processed", "duplicate"]


def test_unrelated_mails_get_distinct_numbers(desk):
    for n in range(3):
        desk.deliver(make_mail(subject=f"Problem {n}"))
    assert [t["number"] for t in desk.tickets()] == ["JAN-1", "JAN-2", "JAN-3"]
