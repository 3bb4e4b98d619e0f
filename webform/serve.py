"""Serve the web app on [web] listen from a thread: beside the daemon (`helpdesk run`) or alone.

Werkzeug's threaded server is enough for a helpdesk's handful of staff and its form; a
bigger site puts gunicorn ('webform:create_app()') behind a reverse proxy instead.
"""
from __future__ import annotations

import logging
import socket
import threading

from werkzeug.serving import BaseWSGIServer, make_server

from daemon.clock import Clock
from daemon.config import Config
from daemon.ingest.refusals import IntakeRefusals
from daemon.listeners import bind
from daemon.store import Store
from webform import create_app
from webform.config import web_config

log = logging.getLogger(__name__)


class WebServer:
    """The app on a listening socket; `start` serves from a thread, `stop` ends it."""

    def __init__(self, config: Config, store: Store, clock: Clock,
                 listen: tuple[str, int] | None = None,
                 intake_refusals: IntakeRefusals | None = None,
                 sock: socket.socket | None = None):
        """SOCK: a listening socket bound before the store was opened (daemon.listeners);
        else LISTEN (or [web] listen) is bound here. A busy port raises PortUnavailable."""
        if sock is None:
            sock = bind(listen or web_config(config).listen,
                        "--listen" if listen else "[web] listen")
        host, port = sock.getsockname()[:2]
        app = create_app(config, store=store, clock=clock, intake_refusals=intake_refusals)
        with sock:  # Werkzeug serves a duplicate of it; never binds (nor prints) itself
            self.server: BaseWSGIServer = make_server(host, port, app, threaded=True,
                                                      fd=sock.fileno())
        self._thread: threading.Thread | None = None
        # Access lines carry the form's prefill links (names, addresses): debug logging only.
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.getLogger("werkzeug").setLevel(logging.WARNING)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self.server.serve_forever, name="web", daemon=True)
        self._thread.start()
        log.info("web listening on http://%s:%s/", *self.address)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=30)


def start_web(config: Config, store: Store, clock: Clock,
              intake_refusals: IntakeRefusals | None = None,
              sock: socket.socket | None = None) -> WebServer | None:
    """The web server for `helpdesk run`, started; None when [web] enabled = false.

    INTAKE_REFUSALS: the daemon's, so its /healthz sees its receiver's and pullers' refusals.
    SOCK: [web] listen, bound by `helpdesk run` before it opened the store."""
    if not web_config(config).enabled:
        return None
    return WebServer(config, store, clock, intake_refusals=intake_refusals, sock=sock).start()
