"""Bind the daemon's listening ports first, before the store is created or migrated.

The sockets are kept and handed to the SMTP receiver and the web server, so a busy port
stops the start with one sentence naming the setting to change, nothing is created
before it, and no other program can take the port between the check and the serving.
"""
from __future__ import annotations

import errno
import socket
from dataclasses import dataclass


class PortUnavailable(Exception):
    """A listening address cannot be bound; the message names the setting to change."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on HOST:PORT (port 0: any free port)."""
    family, _type, _proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return socket.create_server(address, family=family, backlog=100)


def bind(address: tuple[str, int], setting: str) -> socket.socket:
    """Listen on ADDRESS, or raise PortUnavailable naming SETTING (e.g. "[web] listen")."""
    host, port = address
    try:
        return listen_socket(host, port)
    except OSError as exc:
        raise PortUnavailable(f"cannot listen on {host}:{port} ({setting}): {_why(exc, port)}; "
                              f"change {setting}, or stop the program that has it") from None


def _why(exc: OSError, port: int) -> str:
    if isinstance(exc, socket.gaierror):
        return f"no such host ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (another helpdesk, or another program)"
    if exc.errno == errno.EACCES:
        return (f"permission denied (port {port} needs privileges: use a port above 1023 "
                "or give the service CAP_NET_BIND_SERVICE)" if port < 1024
                else "permission denied")
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address"
    return exc.strerror or str(exc)


@dataclass
class Listeners:
    """The sockets `helpdesk run` serves on; None where that server is off."""

    smtp: socket.socket | None = None
    web: socket.socket | None = None

    def close(self) -> None:
        for sock in (self.smtp, self.web):
            if sock is not None:
                sock.close()


def bind_listeners(smtp: tuple[str, int] | None, web: tuple[str, int] | None) -> Listeners:
    """Both at once, or neither: a failure closes what was already bound."""
    listeners = Listeners()
    try:
        if smtp is not None:
            listeners.smtp = bind(smtp, "[smtp_server] listen")
        if web is not None:
            listeners.web = bind(web, "[web] listen")
    except PortUnavailable:
        listeners.close()
        raise
    return listeners
