"""The Flask web: the public problem form and the coordinator's screens.

`create_app(config)` builds the app for `helpdesk run`, `helpdesk web` and WSGI servers
(`gunicorn 'webform:create_app()'` reads $HELPDESK_CONFIG).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app

import templates as templates_package
from daemon import config as config_module
from daemon.clock import Clock
from daemon.config import Config
from daemon.ingest.refusals import IntakeRefusals
from daemon.store import Store
from webform.config import WebConfig
from webform.throttle import LoginThrottle, RateLimit

WEB_TEMPLATES = Path(next(iter(templates_package.__path__))) / "web"


@dataclass
class Helpdesk:
    """What every view needs, handed in once (no module globals)."""

    config: Config
    store: Store
    clock: Clock
    # Mails this process's intake could not save (/healthz, /metrics); the daemon hands in
    # the one its receiver and pullers share.
    intake_refusals: IntakeRefusals
    # Filled in by webform.setup.configure: the [web]/[form] settings and the in-memory
    # brakes on sign-in guessing and form flooding (webform.throttle).
    web: WebConfig | None = None
    login_throttle: LoginThrottle | None = None       # per (address, client IP)
    login_ip_throttle: LoginThrottle | None = None    # per client IP; None: not counted
    form_rate: RateLimit | None = None


def helpdesk() -> Helpdesk:
    return current_app.extensions["helpdesk"]


def create_app(config: Config | None = None, *, store: Store | None = None,
               clock: Clock | None = None, testing: bool = False,
               intake_refusals: IntakeRefusals | None = None) -> Flask:
    """INTAKE_REFUSALS: the daemon's recorder; without one (`helpdesk web`, WSGI) the app
    keeps its own, which sees only this web's form."""
    config = config or config_module.load()
    clock = clock or Clock()
    app = Flask(__name__, template_folder=str(WEB_TEMPLATES), static_folder=None)
    app.config["TESTING"] = testing
    app.extensions["helpdesk"] = Helpdesk(config, store or Store(config.database_url), clock,
                                          intake_refusals or IntakeRefusals(clock.now))
    from webform.setup import configure
    configure(app)
    return app
