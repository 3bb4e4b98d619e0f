"""An aiosmtpd sink that catches outgoing mail, and SMTP client helpers.

`smtp_sink` plays the relay our outbound mail goes through: it keeps what it receives,
can answer with a failure for a while (`refuse`/`accept`), and can go away entirely
and come back on the same port (`stop`/`start`). It does not use the daemon's own
receiver code, so a bug there cannot hide in the tests of the sender.
"""
from __future__ import annotations

import contextlib
import smtplib
import socket
import threading
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Iterable, Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

SINK_HOST = "127.0.0.1"
REFUSAL_STAGES = ("MAIL", "RCPT", "DATA")


@dataclass(frozen=True)
class CaughtMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage


@dataclass(frozen=True)
class Refusal:
    reply: str
    stage: str
    recipients: frozenset[str] | None  # RCPT stage: only these; None: every one


class _SocketController(Controller):
    """aiosmtpd's threaded controller on a socket bound beforehand (port 0 works)."""

    def __init__(self, handler, sock: socket.socket, **smtp_kwargs):
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **smtp_kwargs)
        self._sock = sock

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class SmtpSink:
    """A relay on a loopback port that keeps every message it accepts."""

    def __init__(self, host: str = SINK_HOST, port: int = 0):
        self.host, self.port = host, port
        self._changed = threading.Condition()
        self._caught: list[CaughtMail] = []
        self._refusal: Refusal | None = None
        self._refused = 0
        self._controller: _SocketController | None = None

    # -- running -----------------------------------------------------------------
    def start(self) -> None:
        """Listen (again) on the same port; the first start picks a free one."""
        sock = socket.create_server((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._controller = _SocketController(self, sock, enable_SMTPUTF8=True,
                                             decode_data=False, server_hostname="sink.test")
        self._controller.start()

    def stop(self) -> None:
        """Stop listening: senders now get 'connection refused', as from a relay that is down."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    # -- what arrived --------------------------------------------------------------
    @property
    def messages(self) -> list[CaughtMail]:
        with self._changed:
            return list(self._caught)

    @property
    def refused(self) -> int:
        """How many transactions were refused so far (a sender's attempts, while down)."""
        with self._changed:
            return self._refused

    def wait_for(self, count: int, timeout: float = 10) -> list[CaughtMail]:
        """Block until at least `count` messages arrived; fails the test after `timeout`."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._caught) >= count, timeout):
                pytest.fail(f"smtp sink: {len(self._caught)} of {count} messages after {timeout}s")
            return list(self._caught)

    def wait_for_refusals(self, count: int, timeout: float = 10) -> int:
        with self._changed:
            if not self._changed.wait_for(lambda: self._refused >= count, timeout):
                pytest.fail(f"smtp sink: {self._refused} of {count} refusals after {timeout}s")
            return self._refused

    def clear(self) -> None:
        with self._changed:
            self._caught.clear()
            self._refused = 0

    # -- failing on purpose ----------------------------------------------------------
    def refuse(self, reply: str = "451 4.3.0 Relay busy, try again later", *,
               stage: str = "DATA", recipients: Iterable[str] | None = None) -> None:
        """Answer `reply` at `stage` (MAIL, RCPT or DATA) until `accept()`.

        With `recipients`, only those RCPTs are refused (a permanent 550 for one address).
        """
        if stage not in REFUSAL_STAGES:
            raise ValueError(f"stage must be one of {REFUSAL_STAGES}, got {stage!r}")
        wanted = frozenset(r.lower() for r in recipients) if recipients is not None else None
        with self._changed:
            self._refusal = Refusal(reply, stage, wanted)

    def accept(self) -> None:
        with self._changed:
            self._refusal = None

    @contextlib.contextmanager
    def refusing(self, reply: str = "451 4.3.0 Relay busy, try again later", *,
                 stage: str = "DATA", recipients: Iterable[str] | None = None) -> Iterator[None]:
        self.refuse(reply, stage=stage, recipients=recipients)
        try:
            yield
        finally:
            self.accept()

    def _refusal_at(self, stage: str, recipient: str | None = None) -> str | None:
        with self._changed:
            refusal = self._refusal
            if refusal is None or refusal.stage != stage:
                return None
            if recipient is not None and refusal.recipients is not None \
                    and recipient.lower() not in refusal.recipients:
                return None
            self._refused += 1
            self._changed.notify_all()
            return refusal.reply

    # -- aiosmtpd handler hooks ---------------------------------------------------------
    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if reply := self._refusal_at("MAIL"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if reply := self._refusal_at("RCPT", address):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if reply := self._refusal_at("DATA"):
            return reply
        raw = envelope.original_content or b""
        caught = CaughtMail(envelope.mail_from, tuple(envelope.rcpt_tos), raw,
                            BytesParser(policy=policy.default).parsebytes(raw))
        with self._changed:
            self._caught.append(caught)
            number = len(self._caught)
            self._changed.notify_all()
        return f"250 2.0.0 Ok: queued as sink-{number}"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started SmtpSink on a free loopback port, stopped after the test."""
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


# -- client side ---------------------------------------------------------------------------
def send_mail(port: int, raw: bytes, *, mail_from: str = "klient@bursztyn.pl",
              rcpt_tos: Iterable[str] = ("sklep@jantar.pl",), host: str = SINK_HOST,
              mail_options: Iterable[str] = (), lmtp: bool = False) -> dict:
    """One transaction with smtplib; returns the refused recipients, raises as smtplib does.

    smtplib turns every bare LF or CR into CRLF; use `send_verbatim` to send other bytes.
    """
    client_class = smtplib.LMTP if lmtp else smtplib.SMTP
    with client_class(host, port, timeout=30) as client:
        return client.sendmail(mail_from, list(rcpt_tos), raw, mail_options=list(mail_options))


def dot_stuffed(raw: bytes) -> bytes:
    """`raw` as DATA puts it on the wire: dots doubled after each CRLF, then CRLF . CRLF.

    Only CRLF starts a line on the wire, so a dot after a bare LF is left alone.
    """
    parts = raw.split(b"\r\n")
    stuffed = b"\r\n".join(b"." + part if part.startswith(b".") else part for part in parts)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def send_verbatim(client: smtplib.SMTP, raw: bytes) -> tuple[int, bytes]:
    """DATA with `raw` untouched apart from dot-stuffing (bare LFs stay bare LFs).

    The caller has sent MAIL and RCPT on `client`; returns the reply to the final dot.
    Only for messages ending in CRLF, or the receiver sees the CRLF added here.
    """
    code, reply = client.docmd("DATA")
    if code != 354:
        return code, reply
    client.send(dot_stuffed(raw))
    return client.getreply()


@pytest.fixture
def smtp_client() -> Iterator:
    """smtp_client(port, lmtp=False) -> a connected smtplib client, closed after the test."""
    clients: list[smtplib.SMTP] = []

    def connect(port: int, *, lmtp: bool = False, host: str = SINK_HOST) -> smtplib.SMTP:
        client = (smtplib.LMTP if lmtp else smtplib.SMTP)(host, port, timeout=30)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()

