"""Receive mail for our dedicated addresses over SMTP or LMTP, saving it before answering 250.

The receiver sits behind the site's MTA (Postfix ``relay_transport``/``lmtp:``) or takes
mail directly. It stores the bytes exactly as received: no Received header is added,
because the trace it would carry (peer, HELO, envelope, time) is stored beside the bytes,
and a header with a timestamp would give every retried delivery a new content hash.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import socket
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from daemon.clock import Clock
from daemon.config import Config
from daemon.ingest.intake import Saved, content_key, header_message_id, save_raw
from daemon.ingest.refusals import IntakeRefusals
from daemon.listeners import listen_socket
from daemon.store import Store

log = logging.getLogger(__name__)

REPLY_QUEUED = "250 2.0.0 Ok: queued as {}"
REPLY_RECIPIENT_OK = "250 2.1.5 Ok"
REPLY_UNKNOWN_RECIPIENT = "550 5.1.1 <{}>: unknown recipient"
REPLY_TOO_BIG = "552 5.3.4 Message too big"
REPLY_RETRY = "451 4.3.0 Temporary failure, please retry"

# RFC 5321 4.5.3.2.7: a server waits at least five minutes for the next command.
COMMAND_TIMEOUT = 300.0
# Well under the ten minutes a client waits for the reply to the final dot (RFC 5321
# 4.5.3.2.6): better a 451 and a retry than a client that gives up without an answer.
SAVE_TIMEOUT = 120.0
SAVE_THREADS = 4

# aiosmtpd's own refusals, which it words without enhanced status codes and, in LMTP,
# answers once instead of once per recipient. Matched by prefix: after an aiosmtpd
# upgrade changes a wording, the tests for 552 and LMTP say so.
_AIOSMTPD_SIZE_REFUSALS = ("552 Error: message size exceeds", "552 Error: Too much mail data")
_AIOSMTPD_DATA_REFUSALS = ("552 Error: Too much mail data", "500 Line too long")


def mailbox_for(config: Config, address: str) -> str | None:
    """The dedicated address `address` delivers to: itself, or itself without a +tag."""
    mailbox = config.mailbox(address)
    if mailbox is None:
        local, at, domain = address.rpartition("@")
        base, plus, _tag = local.partition("+")
        if at and plus and base:
            mailbox = config.mailbox(f"{base}@{domain}")
    return mailbox.address if mailbox else None


def _peer_host(session: Session) -> str:
    return str(session.peer[0]) if isinstance(session.peer, tuple) and session.peer else ""


def _text(value: str | None) -> str | None:
    # aiosmtpd keeps undecodable bytes of a command as surrogates; a JSON column (and
    # PostgreSQL's jsonb most of all) refuses them, which would refuse the message.
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def envelope_record(session: Session, envelope: Envelope) -> dict[str, Any]:
    """What the SMTP conversation said about the message, kept beside its bytes."""
    return {"mail_from": _text(envelope.mail_from),
            "rcpt_tos": [_text(address) for address in envelope.rcpt_tos],
            "peer": _peer_host(session), "helo": _text(session.host_name)}


class IntakeHandler:
    """aiosmtpd handler: refuse unknown recipients, save each message once, then answer.

    The database call runs on `executor` so the event loop keeps serving other
    connections. `on_saved()` is called on that executor's thread right after each
    commit (also for a redelivery already stored); the daemon uses it to wake the
    pipeline, so it must be quick and thread-safe. A message that could not be saved
    is answered 451 and recorded in `refusals` (the daemon shares it with /healthz).
    """

    def __init__(self, config: Config, store: Store, clock: Clock,
                 on_saved: Callable[[], None] | None = None, *,
                 executor: Executor | None = None, save_timeout: float = SAVE_TIMEOUT,
                 refusals: IntakeRefusals | None = None):
        self.config = config
        self.store = store
        self.clock = clock
        self.on_saved = on_saved
        self.executor = executor
        self.save_timeout = save_timeout
        self.refusals = refusals or IntakeRefusals(clock.now)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if mailbox_for(self.config, address) is None:
            log.info("<-> refused RCPT <%s> from %s: unknown recipient", address,
                     _peer_host(session))
            return REPLY_UNKNOWN_RECIPIENT.format(address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return REPLY_RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message_id = header_message_id(raw) or "-"
        try:
            saved = await asyncio.wait_for(
                self._save_in_executor(server, session, envelope, message_id),
                self.save_timeout)
            reply = REPLY_QUEUED.format(saved.raw_id)
            log.info("<%s> accepted for %s as raw %d%s", message_id,
                     ", ".join(envelope.rcpt_tos), saved.raw_id,
                     "" if saved.created else " (redelivery, already stored)")
        except Exception:  # anything of ours: the sender must retry, never bounce
            log.exception("<%s> not saved, answered 451 to %s", message_id,
                          _peer_host(session))
            self.refusals.record(_channel(server))
            reply = REPLY_RETRY
        return _per_recipient(server, reply, len(envelope.rcpt_tos))

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's own answer to an exception in a hook is a permanent 500.
        log.error("<-> internal error in the SMTP session, answered 451", exc_info=error)
        return REPLY_RETRY

    async def _save_in_executor(self, server: SMTP, session: Session, envelope: Envelope,
                                message_id: str) -> Saved:
        save = functools.partial(
            self._save, message_id, raw=envelope.original_content or b"",
            channel=_channel(server),
            mailbox=mailbox_for(self.config, envelope.rcpt_tos[0]),
            record=envelope_record(session, envelope), now=self.clock.now())
        return await asyncio.get_running_loop().run_in_executor(self.executor, save)

    def _save(self, message_id: str, *, raw: bytes, channel: str, mailbox: str | None,
              record: dict[str, Any], now: datetime) -> Saved:
        """Runs on the executor: one transaction for the message and all its recipients."""
        saved = save_raw(self.store, channel=channel, key=f"{channel}:{content_key(raw)}",
                         raw=raw, now=now, mailbox=mailbox, origin=record["peer"],
                         envelope=record)
        if saved.raw_id is None:  # save_raw found neither its insert nor an older row
            raise RuntimeError("raw message not stored")
        self._wake(message_id)
        return saved

    def _wake(self, message_id: str) -> None:
        if self.on_saved is None:
            return
        try:
            self.on_saved()
        except Exception:  # the message is committed; the pipeline's poll will find it
            log.exception("<%s> saved, but waking the pipeline failed", message_id)


def _channel(server: SMTP) -> str:
    return "lmtp" if isinstance(server, LMTP) else "smtp"


def _per_recipient(server: SMTP, reply: str, recipients: int) -> str:
    """LMTP answers DATA once per accepted recipient (RFC 2033 4.2); SMTP once."""
    if isinstance(server, LMTP):
        return "\r\n".join([reply] * max(1, recipients))
    return reply


class _OurRefusals:
    """Mixin for aiosmtpd's SMTP and LMTP: word its size refusals as we do, and in LMTP
    repeat a refused DATA once per recipient, or the client would wait for the rest."""

    async def push(self, status):
        if isinstance(status, str):
            status = self._reworded(status)
        await super().push(status)

    def _reworded(self, status: str) -> str:
        refused_data = status.startswith(_AIOSMTPD_DATA_REFUSALS)
        if status.startswith(_AIOSMTPD_SIZE_REFUSALS):
            status = REPLY_TOO_BIG
        if refused_data:
            status = _per_recipient(self, status, len(self.envelope.rcpt_tos))
        return status


class IntakeSMTP(_OurRefusals, SMTP):
    pass


class IntakeLMTP(_OurRefusals, LMTP):
    pass


class _IntakeController(Controller):
    """aiosmtpd's threaded controller, serving a socket we bound, in SMTP or LMTP."""

    def __init__(self, handler: IntakeHandler, sock: socket.socket, protocol: type[SMTP],
                 **smtp_kwargs):
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **smtp_kwargs)
        self._sock = sock
        self._protocol = protocol

    def factory(self) -> SMTP:
        return self._protocol(self.handler, **self.SMTP_kwargs)

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self._sock,
                                       ssl=self.ssl_context)


class Receiver:
    """A running receiver: `host`/`port` it listens on (the real port when 0 was asked)."""

    def __init__(self, controller: _IntakeController, executor: ThreadPoolExecutor,
                 protocol: str):
        self.protocol = protocol
        self._controller = controller
        self._executor = executor
        self._stopped = False

    @property
    def host(self) -> str:
        return self._controller.hostname

    @property
    def port(self) -> int:
        return self._controller.port

    def stop(self) -> None:
        """Stop listening, then wait for saves already running so none is cut mid-commit."""
        if self._stopped:
            return
        self._stopped = True
        self._controller.stop(no_assert=True)
        self._executor.shutdown(wait=True)
        log.info("<-> %s receiver on %s:%d stopped", self.protocol.upper(), self.host,
                 self.port)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_receiver(config: Config, store: Store, clock: Clock,
                   on_saved: Callable[[], None] | None = None, *,
                   refusals: IntakeRefusals | None = None,
                   sock: socket.socket | None = None) -> Receiver:
    """Listen on config.smtp_server.listen in its own thread; the caller checks `enabled`.

    REFUSALS: where each 451 for a message not saved is recorded (the daemon's, shared
    with its web's /healthz); without one the receiver keeps its own. SOCK: the socket
    `helpdesk run` bound before it opened the store (daemon.listeners); else bound here."""
    settings = config.smtp_server
    # Bound before the controller starts: an address in use fails before any thread, and
    # port 0 reports the port it got.
    sock = sock or listen_socket(*settings.listen)
    executor = ThreadPoolExecutor(max_workers=SAVE_THREADS, thread_name_prefix="smtp-intake")
    handler = IntakeHandler(config, store, clock, on_saved, executor=executor,
                            refusals=refusals)
    controller = _IntakeController(
        handler, sock, IntakeLMTP if settings.protocol == "lmtp" else IntakeSMTP,
        data_size_limit=settings.max_message_size, enable_SMTPUTF8=True, decode_data=False,
        # gethostname, not aiosmtpd's default getfqdn: that is a DNS lookup per connection.
        server_hostname=socket.gethostname(), ident="Jantar helpdesk",
        timeout=COMMAND_TIMEOUT)
    try:
        controller.start()
    except BaseException:
        controller.stop(no_assert=True)
        sock.close()
        executor.shutdown(wait=False)
        raise
    receiver = Receiver(controller, executor, settings.protocol)
    log.info("<-> %s receiver listening on %s:%d", settings.protocol.upper(), receiver.host,
             receiver.port)
    return receiver
