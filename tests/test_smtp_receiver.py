"""The SMTP/LMTP receiver, spoken to by smtplib over a real socket, on both databases."""
from __future__ import annotations

import dataclasses
import smtplib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import selectinload

from daemon.clock import Clock
from daemon.ingest.smtp import start_receiver
from daemon.store import Store
from daemon.store.models import RawMessage
from tests.conftest import NOW
from tests.fixtures_smtp import send_mail, send_verbatim

SMALL_LIMIT = 2000


def message(subject: str = "Drukarka fiskalna nie drukuje", message_id: str = "zgl-1@bursztyn.pl",
            body: bytes = b"Kasa 3 w sklepie przy Garbarach.\r\n") -> bytes:
    return (b"From: Jan Kowal <jan@bursztyn.pl>\r\n"
            b"To: sklep@jantar.pl\r\n"
            + f"Subject: {subject}\r\nMessage-ID: <{message_id}>\r\n".encode()
            + b"Date: Wed, 25 Nov 2026 10:00:00 +0100\r\n\r\n" + body)


def raw_rows(store: Store) -> list[RawMessage]:
    with store.transaction() as session:
        return list(session.scalars(select(RawMessage).options(selectinload(RawMessage.body))
                                        .order_by(RawMessage.id)))


@pytest.fixture
def receiver(make_config, store):
    """receiver(protocol=, max_message_size=, on_saved=, store=) -> a started Receiver."""
    started = []

    def start(protocol: str = "smtp", max_message_size: int = SMALL_LIMIT, on_saved=None,
              store: Store = store):
        config = make_config(store.url, smtp_server={"protocol": protocol,
                                                     "max_message_size": max_message_size})
        # Port 0 is refused by the config file parser, on purpose; tests want a free port.
        config = dataclasses.replace(
            config, smtp_server=dataclasses.replace(config.smtp_server, listen=("127.0.0.1", 0)))
        started.append(start_receiver(config, store, Clock(start=NOW), on_saved))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def test_accepted_message_is_stored_exactly_and_wakes_the_pipeline(receiver, store, smtp_client):
    woken = threading.Event()
    port = receiver(on_saved=woken.set).port
    raw = message(body=b"Linia 1\r\n.kropka na poczatku linii\r\n..dwie\r\n")
    client = smtp_client(port)
    client.ehlo("mx.bursztyn.pl")
    client.mail("jan@bursztyn.pl")
    client.rcpt("sklep@jantar.pl")
    code, reply = client.data(raw)

    [row] = raw_rows(store)
    assert (code, reply) == (250, f"2.0.0 Ok: queued as {row.id}".encode())
    assert row.raw == raw
    assert (row.channel, row.mailbox, row.status, row.message_id) == \
        ("smtp", "sklep@jantar.pl", "pending", "zgl-1@bursztyn.pl")
    assert row.envelope == {"mail_from": "jan@bursztyn.pl", "rcpt_tos": ["sklep@jantar.pl"],
                            "peer": "127.0.0.1", "helo": "mx.bursztyn.pl"}
    assert row.idempotency_key.startswith("smtp:sha256:")
    assert woken.is_set()


def test_unknown_recipient_is_refused_and_a_known_one_still_gets_the_message(receiver, store):
    port = receiver().port
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send_mail(port, message(), rcpt_tos=["nobody@jantar.pl"])
    code, reply = refused.value.recipients["nobody@jantar.pl"]
    assert (code, reply) == (550, b"5.1.1 <nobody@jantar.pl>: unknown recipient")
    assert raw_rows(store) == []

    refused = send_mail(port, message(), rcpt_tos=["nobody@jantar.pl", "serwis@jantar.pl"])
    assert list(refused) == ["nobody@jantar.pl"]
    [row] = raw_rows(store)
    assert row.mailbox == "serwis@jantar.pl"
    assert row.envelope["rcpt_tos"] == ["serwis@jantar.pl"]


def test_recipients_match_without_case_and_with_a_plus_tag(receiver, store):
    port = receiver().port
    send_mail(port, message(), rcpt_tos=["Serwis+Faktury@JANTAR.pl", "SKLEP@jantar.pl"])
    [row] = raw_rows(store)
    assert row.mailbox == "serwis@jantar.pl"  # the first recipient's dedicated address
    assert row.envelope["rcpt_tos"] == ["Serwis+Faktury@JANTAR.pl", "SKLEP@jantar.pl"]
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_mail(port, message(), rcpt_tos=["+tag@jantar.pl", "sklep+x@other.pl"])


def test_message_over_the_size_limit_is_refused_whether_announced_or_not(receiver, store,
                                                                         smtp_client):
    port = receiver().port
    too_big = message(body=b"x" * 70 + b"\r\n") + (b"y" * 70 + b"\r\n") * 40

    # smtplib announces SIZE= on MAIL FROM because we advertise SIZE.
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send_mail(port, too_big)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (552, b"5.3.4 Message too big")

    client = smtp_client(port)
    client.ehlo("mx.bursztyn.pl")
    client.mail("jan@bursztyn.pl")  # no SIZE: found out while reading DATA
    client.rcpt("sklep@jantar.pl")
    assert client.data(too_big) == (552, b"5.3.4 Message too big")
    assert raw_rows(store) == []

    client.mail("jan@bursztyn.pl")  # the session goes on after the refusal
    client.rcpt("sklep@jantar.pl")
    assert client.data(message())[0] == 250
    assert len(raw_rows(store)) == 1


def test_the_same_bytes_delivered_twice_are_stored_once(receiver, store, smtp_client):
    port = receiver().port
    replies = []
    for _attempt in range(2):  # a sender that never saw our 250 and tries again
        client = smtp_client(port)
        client.ehlo("mx.bursztyn.pl")
        client.mail("jan@bursztyn.pl")
        client.rcpt("sklep@jantar.pl")
        replies.append(client.data(message()))
    [row] = raw_rows(store)
    assert replies == [(250, f"2.0.0 Ok: queued as {row.id}".encode())] * 2

    send_mail(port, message(subject="Inna tresc"))  # same Message-ID, other bytes
    assert len(raw_rows(store)) == 2


def _move_table(store: Store, old: str, new: str) -> None:
    with store.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))


def test_database_failure_answers_451_and_the_retry_is_stored(receiver, store):
    woken = threading.Event()
    port = receiver(on_saved=woken.set).port
    _move_table(store, "raw_messages", "raw_messages_away")
    try:
        with pytest.raises(smtplib.SMTPDataError) as failed:
            send_mail(port, message())
    finally:
        _move_table(store, "raw_messages_away", "raw_messages")
    assert (failed.value.smtp_code, failed.value.smtp_error) == \
        (451, b"4.3.0 Temporary failure, please retry")
    assert raw_rows(store) == [] and not woken.is_set()

    send_mail(port, message())  # the sending server's retry, with the database back
    assert [row.message_id for row in raw_rows(store)] == ["zgl-1@bursztyn.pl"]
    assert woken.is_set()


def test_unreachable_database_answers_451_to_every_recipient_in_lmtp(make_config, smtp_client):
    # Nothing listens on port 1: a real connection failure, not a mock.
    down = Store("postgresql+psycopg://helpdesk@127.0.0.1:1/helpdesk",
                 connect_args={"connect_timeout": 3})
    config = make_config(down.url, smtp_server={"protocol": "lmtp"})
    config = dataclasses.replace(
        config, smtp_server=dataclasses.replace(config.smtp_server, listen=("127.0.0.1", 0)))
    with start_receiver(config, down, Clock(start=NOW)) as running:
        client = smtp_client(running.port, lmtp=True)
        client.ehlo("mx.bursztyn.pl")
        client.mail("jan@bursztyn.pl")
        client.rcpt("sklep@jantar.pl")
        client.rcpt("serwis@jantar.pl")
        retry = (451, b"4.3.0 Temporary failure, please retry")
        assert client.data(message()) == retry
        assert client.getreply() == retry
        assert client.noop()[0] == 250  # no reply left over: client and server in step
    down.dispose()


def test_lmtp_answers_data_once_per_accepted_recipient(receiver, store, smtp_client):
    port = receiver(protocol="lmtp").port
    client = smtp_client(port, lmtp=True)
    client.ehlo("mx.jantar.pl")  # smtplib.LMTP sends LHLO
    client.mail("jan@bursztyn.pl")
    client.rcpt("sklep@jantar.pl")
    assert client.rcpt("nobody@jantar.pl")[0] == 550
    client.rcpt("serwis@jantar.pl")
    first = client.data(message())
    second = client.getreply()

    [row] = raw_rows(store)
    assert first == second == (250, f"2.0.0 Ok: queued as {row.id}".encode())
    assert client.noop()[0] == 250
    assert (row.channel, row.mailbox) == ("lmtp", "sklep@jantar.pl")
    assert row.envelope["rcpt_tos"] == ["sklep@jantar.pl", "serwis@jantar.pl"]


@pytest.mark.parametrize("extra, refusal", [
    ((b"y" * 70 + b"\r\n") * 40, (552, b"5.3.4 Message too big")),
    (b"z" * 1500 + b"\r\n", (500, b"Line too long (see RFC5321 4.5.3.1.6)")),
], ids=["too-big", "line-too-long"])
def test_lmtp_refuses_a_message_once_per_recipient(receiver, store, smtp_client, extra, refusal):
    port = receiver(protocol="lmtp").port
    client = smtp_client(port, lmtp=True)
    client.ehlo("mx.jantar.pl")
    client.mail("jan@bursztyn.pl")
    client.rcpt("sklep@jantar.pl")
    client.rcpt("serwis@jantar.pl")
    assert client.data(message() + extra) == client.getreply() == refusal
    assert client.noop()[0] == 250  # no reply left over: client and server in step
    assert raw_rows(store) == []


def test_8bit_and_smtputf8_bytes_are_kept_exactly(receiver, store, smtp_client):
    port = receiver().port
    raw = ("From: Zgłoszenia <zgłoszenie@bursztyn.pl>\r\n"
           "To: sklep@jantar.pl\r\n"
           "Subject: Zażółć gęślą jaźń\r\n"
           "Message-ID: <żółw-1@bursztyn.pl>\r\n"
           "Content-Type: text/plain; charset=iso-8859-2\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() \
        + "Kasa nie działa.\r\n".encode("iso-8859-2") \
        + b"bare LF here\nbare CR here\r.not a line start\n.nor this\r\n" \
        + b".a real line start, dot-stuffed on the wire\r\n"
    client = smtp_client(port)
    client.ehlo("mx.bursztyn.pl")
    assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
    client.mail("zgłoszenie@bursztyn.pl", ["SMTPUTF8", "BODY=8BITMIME"])
    client.rcpt("sklep@jantar.pl")
    assert send_verbatim(client, raw)[0] == 250

    [row] = raw_rows(store)
    assert row.raw == raw
    assert row.message_id == "żółw-1@bursztyn.pl"
    assert row.envelope["mail_from"] == "zgłoszenie@bursztyn.pl"


def test_undecodable_envelope_bytes_do_not_keep_a_message_out(receiver, store, smtp_client):
    port = receiver().port
    client = smtp_client(port)
    client.ehlo("mx.bursztyn.pl")
    client.send(b"MAIL FROM:<jan\xff@bursztyn.pl>\r\n")
    assert client.getreply()[0] == 250
    client.send(b"RCPT TO:<sklep+\xfe@jantar.pl>\r\n")
    assert client.getreply()[0] == 250
    assert send_verbatim(client, message())[0] == 250
    [row] = raw_rows(store)
    assert row.envelope["mail_from"] == "jan\ufffd@bursztyn.pl"
    assert row.envelope["rcpt_tos"] == ["sklep+\ufffd@jantar.pl"]


def test_a_failing_wake_up_does_not_undo_an_accepted_message(receiver, store):
    def broken_wake_up():
        raise RuntimeError("pipeline gone")

    send_mail(receiver(on_saved=broken_wake_up).port, message())  # raises unless 250
    assert len(raw_rows(store)) == 1


def test_a_slow_save_does_not_stop_other_sessions(receiver, store, smtp_client):
    # on_saved runs on the save thread: holding it holds one DATA reply, not the loop.
    release, saving = threading.Event(), threading.Event()

    def held_wake_up():
        saving.set()
        release.wait(30)

    port = receiver(on_saved=held_wake_up).port
    with ThreadPoolExecutor(max_workers=1) as pool:
        delivery = pool.submit(send_mail, port, message())
        try:
            assert saving.wait(10)
            other = smtp_client(port)
            assert other.ehlo("mx.kaszub.com.pl")[0] == 250
            assert other.noop()[0] == 250
            assert not delivery.done()
        finally:
            release.set()
        assert delivery.result(timeout=30) == {}
    assert len(raw_rows(store)) == 1


def test_sink_refuses_for_a_while_then_accepts(smtp_sink):
    raw = message()
    with smtp_sink.refusing("451 4.3.0 Relay busy, try again later"):
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send_mail(smtp_sink.port, raw, rcpt_tos=["klient@bursztyn.pl"])
        assert refused.value.smtp_code == 451
    assert smtp_sink.refused == 1 and smtp_sink.messages == []

    smtp_sink.refuse("550 5.1.1 No such user", stage="RCPT", recipients=["gone@bursztyn.pl"])
    refused = send_mail(smtp_sink.port, raw, rcpt_tos=["gone@bursztyn.pl", "klient@bursztyn.pl"])
    assert refused == {"gone@bursztyn.pl": (550, b"5.1.1 No such user")}
    smtp_sink.accept()

    [caught] = smtp_sink.wait_for(1)
    assert caught.raw == raw and caught.rcpt_tos == ("klient@bursztyn.pl",)
    assert caught.message["Subject"] == "Drukarka fiskalna nie drukuje"


def test_sink_goes_down_and_comes_back_on_the_same_port(smtp_sink):
    port = smtp_sink.port
    smtp_sink.stop()
    with pytest.raises(ConnectionRefusedError):
        send_mail(port, message(), rcpt_tos=["klient@bursztyn.pl"])
    smtp_sink.start()
    assert smtp_sink.port == port
    send_mail(port, message(), rcpt_tos=["klient@bursztyn.pl"])
    assert len(smtp_sink.wait_for(1)) == 1
