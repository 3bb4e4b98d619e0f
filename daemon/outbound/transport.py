"""Hand one finished mail to the outside world: an SMTP relay, or a local Maildir folder.

A transport either accepts a mail or raises TemporaryFailure (try again later) or
PermanentFailure (never going to work for this mail); the sender decides what follows.
"""
from __future__ import annotations

import os
import secrets
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from daemon.outbound.config import OutboundConfig


class DeliveryFailure(Exception):
    """The mail was not accepted; str() is the reason as the relay gave it."""


class TemporaryFailure(DeliveryFailure):
    """Worth retrying. `relay_down`: nothing will get through now, so stop the pass."""

    def __init__(self, message: str, *, relay_down: bool = False):
        super().__init__(message)
        self.relay_down = relay_down


class PermanentFailure(DeliveryFailure):
    """The relay refused this mail for good (5xx); retrying would repeat the refusal."""


@dataclass(frozen=True)
class Accepted:
    """The relay took the mail; `refused` lists recipients it turned down (address -> reply)."""

    detail: str = ""
    refused: dict[str, str] = field(default_factory=dict)


class Transport(Protocol):
    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> Accepted: ...


def make_transport(outbound: OutboundConfig) -> Transport:
    if outbound.transport == "smtp":
        return SmtpTransport(outbound.smtp_host, outbound.smtp_port, outbound.smtp_tls,
                             outbound.smtp_user, outbound.smtp_password,
                             outbound.timeout.total_seconds())
    return MaildirTransport(outbound.maildir)


# -- Maildir --------------------------------------------------------------------------------
class MaildirTransport:
    """Writes each mail into a Maildir (tmp/ then rename into new/), the embedded default."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> Accepted:
        try:
            for sub in ("tmp", "new", "cur"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            name = self._unique_name()
            self._write(self.path / "tmp" / name, self._file_content(mail_from, recipients, raw))
            os.rename(self.path / "tmp" / name, self.path / "new" / name)
        except OSError as exc:
            # A full disk or a permission problem: fixable, so not the mail's fault.
            raise TemporaryFailure(f"maildir {self.path}: {exc}", relay_down=True) from exc
        return Accepted(detail=f"written to {self.path / 'new' / name}")

    @staticmethod
    def _unique_name() -> str:
        # The Maildir convention: time, a unique part, host; the random part covers two
        # processes writing in the same microsecond.
        return (f"{time.time_ns() // 1000}.P{os.getpid()}R{secrets.token_hex(8)}."
                f"{socket.gethostname().replace('/', '_').replace(':', '_')}")

    @staticmethod
    def _file_content(mail_from: str, recipients: list[str], raw: bytes) -> bytes:
        # The envelope is otherwise lost in a folder; mail files on disk use bare LF.
        envelope = (f"Return-Path: <{mail_from}>\r\n"
                    f"X-Envelope-To: {', '.join(recipients)}\r\n").encode("utf-8")
        return (envelope + raw).replace(b"\r\n", b"\n")

    @staticmethod
    def _write(path: Path, content: bytes) -> None:
        with open(path, "xb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())


# -- SMTP -----------------------------------------------------------------------------------
class SmtpTransport:
    """Submits each mail to a relay with smtplib, one connection per mail."""

    def __init__(self, host: str, port: int, tls: str = "none", user: str | None = None,
                 password: str | None = None, timeout: float = 30.0):
        self.host, self.port, self.tls = host, port, tls
        self.user, self.password, self.timeout = user, password, timeout

    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> Accepted:
        try:
            with self._connect() as client:
                if self.user:
                    client.login(self.user, self.password or "")
                options = self._mail_options(mail_from, recipients, raw)
                refused = client.sendmail(mail_from, recipients, raw, mail_options=options)
        except smtplib.SMTPException as exc:
            raise classify_smtp_error(exc, self.host) from exc
        except (OSError, ssl.SSLError) as exc:
            # Refused, unreachable, timed out, TLS handshake failed: the relay, not the mail.
            raise TemporaryFailure(f"relay {self.host}:{self.port}: {exc}",
                                   relay_down=True) from exc
        return Accepted(detail=f"accepted by {self.host}:{self.port}",
                        refused={address: _reply(code, text)
                                 for address, (code, text) in refused.items()})

    def _connect(self) -> smtplib.SMTP:
        # Only when TLS is used: loading the CA certificates takes ~0.1 s, a plain relay
        # would pay it on every mail (a backlog of 500 acknowledgements: 50 s).
        if self.tls == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=ssl.create_default_context())
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.tls == "starttls":
                client.starttls(context=ssl.create_default_context())
            return client
        except BaseException:
            client.close()
            raise

    @staticmethod
    def _mail_options(mail_from: str, recipients: list[str], raw: bytes) -> list[str]:
        # Our bodies are quoted-printable, so only UTF-8 headers or addresses make a
        # mail 8-bit; those need SMTPUTF8 (RFC 6531), which implies 8BITMIME.
        if raw.isascii() and mail_from.isascii() and all(r.isascii() for r in recipients):
            return []
        return ["SMTPUTF8", "BODY=8BITMIME"]


# Authentication required / too weak / credentials invalid / encryption required (RFC 4954).
AUTH_REPLY_CODES = (530, 534, 535, 538)


def _reply(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {text}".strip()


def classify_smtp_error(exc: smtplib.SMTPException, host: str) -> DeliveryFailure:
    """Map an smtplib exception to a temporary or permanent failure, by its reply code."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = {address: _reply(code, text) for address, (code, text) in exc.recipients.items()}
        detail = "; ".join(f"{address}: {reply}" for address, reply in replies.items())
        # Any 4xx may yet succeed; a retry then re-tries the 5xx ones too, which is harmless.
        if all(code >= 500 for code, _text in exc.recipients.values()):
            return PermanentFailure(f"{host} refused every recipient: {detail}")
        return TemporaryFailure(f"{host} refused every recipient for now: {detail}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        # A relay without SMTPUTF8 will never take this mail; a missing STARTTLS or
        # AUTH is our configuration, and the mail is kept until it is fixed.
        if "smtputf8" in str(exc).lower():
            return PermanentFailure(f"{host}: {exc}")
        return TemporaryFailure(f"{host}: {exc}", relay_down=True)
    if isinstance(exc, (smtplib.SMTPConnectError, smtplib.SMTPHeloError)) or \
            getattr(exc, "smtp_code", None) in AUTH_REPLY_CODES:
        # Refused greeting or wrong credentials: the relay and us, not this mail.
        return TemporaryFailure(f"{host}: {_reply(exc.smtp_code, exc.smtp_error)}",
                                relay_down=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = _reply(exc.smtp_code, exc.smtp_error)
        if 500 <= exc.smtp_code < 600:
            return PermanentFailure(f"{host}: {reply}")
        return TemporaryFailure(f"{host}: {reply}", relay_down=exc.smtp_code == 421)
    # Disconnected, HELO refused, anything else smtplib raises: the relay's side.
    return TemporaryFailure(f"{host}: {exc}", relay_down=True)
