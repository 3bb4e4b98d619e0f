"""Threading: subject tags, In-Reply-To/References, held replies, new tickets (both backends)."""
import pytest

from daemon.rules.threading import tagged_number
from daemon.tickets import configured_client
from tests.conftest import Desk
from tests.mailfactory import make_mail


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


def test_reply_by_in_reply_to_joins_the_cc_person_to_the_ticket(desk):
    _first_ticket(desk)
    desk.deliver(make_mail(sender="kierownik@inna-firma.pl", subject="Re: Drukarka fiskalna",
                           in_reply_to="<first@bursztyn.pl>"))
    [ticket] = desk.tickets()
    assert len(inbound(ticket)) == 2
    assert "kierownik@inna-firma.pl" in ticket["cc"]


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
