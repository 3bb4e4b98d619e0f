"""Database gone: `helpdesk run` on PostgreSQL through a TCP proxy that the test cuts and
restores (the shared server itself is never stopped) (issue 8).

While the proxy is down the SMTP receiver answers 451 so the sender keeps the mail,
IMAP mail stays unflagged on the server, and the web answers a 503 page in Polish and
English instead of a traceback. Once the proxy is back, the mail resent by the SMTP
client and the mail waiting in IMAP flow into tickets, each exactly once, without a
restart of the daemon.
"""
from __future__ import annotations

import contextlib
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from collections import Counter

import pytest
from sqlalchemy import select

from daemon.store import Store
from daemon.store.models import Message, RawMessage
from tests.fixtures_web import COORDINATOR, PASSWORD, HttpBrowser
from tests.mailfactory import make_mail
from tests.test_daemon import ROOT, free_port, helpdesk, listening, wait_until
from tests.tomlwrite import write_config

PULLER_FAILED = re.compile(r"INBOX: unexpected OperationalError")


class TcpProxy:
    """Forwards a loopback port to TARGET; `down()` refuses new connections and cuts the
    open ones, as a database host that vanished would; `up()` listens again on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    client.close()
                    server.close()
                    return
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def pg_proxy(pg_schema_url):
    """(proxy, database URL through it) for a migrated, emptied PostgreSQL schema."""
    from tests.conftest import _truncate_all
    _truncate_all(pg_schema_url)
    match = re.search(r"@([^/:]+):(\d+)/", pg_schema_url)
    proxy = TcpProxy((match.group(1), int(match.group(2))))
    proxy.up()
    yield proxy, pg_schema_url.replace(match.group(0), f"@127.0.0.1:{proxy.port}/")
    proxy.down()


def smtp_reply(port: int, raw: bytes, sender: str) -> int:
    """Send one mail; the code of the reply to DATA (or of a refused RCPT)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        try:
            client.sendmail(sender, ["sklep@jantar.pl"], raw)
        except smtplib.SMTPRecipientsRefused as exc:
            return next(iter(exc.recipients.values()))[0]
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code
    return 250


def filed(store: Store) -> Counter:
    with store.transaction() as session:
        return Counter(session.scalars(select(Message.message_id).where(Message.direction == "in")))


@pytest.mark.slow
def test_database_gone_mail_waits_at_its_source_and_flows_once_when_it_returns(
        pg_proxy, imap_account, tmp_path):
    proxy, url = pg_proxy
    smtp_port, web_port = free_port(), free_port()
    config = write_config(tmp_path / "helpdesk.toml", {
        "helpdesk": {"database_url": url, "data_dir": str(tmp_path / "data"),
                     "web_url": f"http://127.0.0.1:{web_port}"},
        "smtp_server": {"listen": f"127.0.0.1:{smtp_port}"},
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "limits": {"poll_interval": "1s"},
        "outbound": {"transport": "maildir", "maildir": str(tmp_path / "sent")},
        "mailboxes": [imap_account.mailbox_settings(existing_mail="process")],  # live mail
        "clients": [{"name": "Sieć Bursztyn", "domains": ["bursztyn.pl"]}],
        "technicians": [{"name": "Ewa", "email": COORDINATOR, "role": "coordinator",
                         "tier": "L2"}],
    })
    added = helpdesk(config, "user", "add", COORDINATOR, "--role", "coordinator",
                     "--password", PASSWORD)
    assert added.returncode == 0, added.stderr
    store = Store(url)
    log = tmp_path / "daemon.log"
    process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("a"))
    web = f"http://127.0.0.1:{web_port}"
    try:
        wait_until(lambda: listening(smtp_port) and listening(web_port), what="receiver and web")
        # Before: mail flows, and a coordinator signs in.
        assert smtp_reply(smtp_port, make_mail(message_id="<before@bursztyn.pl>"),
                          "jan.nowak@bursztyn.pl") == 250
        imap_account.append(make_mail(sender="ola@bursztyn.pl", message_id="<imap-before@bursztyn.pl>"))
        wait_until(lambda: set(filed(store)) == {"before@bursztyn.pl", "imap-before@bursztyn.pl"},
                   timeout=30, what="the first two mails filed")
        browser = HttpBrowser()
        page = browser.get(f"{web}/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        signed_in = browser.post(f"{web}/login", data={"email": COORDINATOR, "password": PASSWORD,
                                                       "csrf_token": token})
        assert signed_in.status_code == 302
        assert browser.get(f"{web}/tickets").status_code == 200

        proxy.down()
        # SMTP: 451, so the sending server keeps the mail and tries again.
        during = make_mail(sender="ewa@bursztyn.pl", message_id="<during-smtp@bursztyn.pl>")
        assert smtp_reply(smtp_port, during, "ewa@bursztyn.pl") == 451
        # IMAP: the new message is seen (IDLE) but cannot be saved, so it stays unflagged.
        uid = imap_account.append(make_mail(sender="adam@bursztyn.pl",
                                            message_id="<during-imap@bursztyn.pl>"))
        wait_until(lambda: len(PULLER_FAILED.findall(log_text(log))) >= 2, timeout=30,
                   what="the puller to fail twice on the store")
        assert b"$Helpdesk" not in imap_account.flags()[uid]
        # The web: a clear 503 page in both languages, no traceback.
        for lang, words in (("pl", "Baza danych niedostępna"), ("en", "Database unavailable")):
            response = browser.get(f"{web}/tickets?lang={lang}")
            assert response.status_code == 503 and words in response.text, response.text[:500]
            assert "Traceback" not in response.text and "psycopg" not in response.text
            assert response.headers.get("Retry-After")
        assert smtp_reply(smtp_port, during, "ewa@bursztyn.pl") == 451  # a retry, still down
        assert b"$Helpdesk" not in imap_account.flags()[uid]
        assert process.poll() is None, "the daemon must outlive the outage"

        proxy.up()
        # The sending server's next retry: the same bytes, now accepted.
        wait_until(lambda: smtp_reply(smtp_port, during, "ewa@bursztyn.pl") == 250, timeout=30,
                   interval=1, what="the receiver to accept again")
        assert smtp_reply(smtp_port, during, "ewa@bursztyn.pl") == 250  # a duplicate retry
        want = {"before@bursztyn.pl", "imap-before@bursztyn.pl", "during-smtp@bursztyn.pl",
                "during-imap@bursztyn.pl"}
        wait_until(lambda: set(filed(store)) == want, timeout=90, interval=0.5,
                   what="the mail received during the outage filed")
        wait_until(lambda: b"$Helpdesk" in imap_account.flags()[uid], timeout=60,
                   what="the IMAP message flagged")
        assert browser.get(f"{web}/tickets").status_code == 200  # the same session works again
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log_text(log)[-3000:]
    assert filed(store) == Counter({mid: 1 for mid in want})
    with store.transaction() as session:
        statuses = Counter(session.scalars(select(RawMessage.status)))
    assert statuses == {"processed": 4}
    assert "Traceback" not in web_log_lines(log_text(log))
    store.dispose()


def log_text(log) -> str:
    return log.read_text(errors="replace")


def web_log_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "webform" in line or "werkzeug" in line)
