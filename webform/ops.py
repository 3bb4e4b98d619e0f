"""/healthz and /metrics: the helpdesk as a monitor and Prometheus see it.

/healthz is public and says only what is well and what is not, never a URL or an error
text. /metrics answers loopback clients, or anyone with `[web] metrics_token` as a bearer
token when one is set, in the text format or OpenMetrics as the scraper asks.
"""
from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, abort, current_app, jsonify, request
from prometheus_client.exposition import choose_encoder

from daemon.health import check_health
from daemon.metrics import metrics_registry
from webform import helpdesk
from webform.auth import for_machines

blueprint = Blueprint("ops", __name__)
STARTED_AT = "ops_started_at"
METRICS = "helpdesk_metrics"  # the app's own prometheus-client registry


@blueprint.record_once
def _note_start(state) -> None:
    desk = state.app.extensions["helpdesk"]
    started = state.app.config[STARTED_AT] = desk.clock.now()
    state.app.extensions[METRICS] = metrics_registry(
        desk.config, desk.store, desk.clock.now, since=started, refusals=desk.intake_refusals)


def _started_at():
    return current_app.config[STARTED_AT]


@blueprint.route("/healthz")
@for_machines
def healthz():
    desk = helpdesk()
    health = check_health(desk.config, desk.store, desk.clock.now(), since=_started_at(),
                          refusals=desk.intake_refusals)
    response = jsonify(health.as_dict())
    response.status_code = 200 if health.healthy else 503
    return response


def _from_loopback() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _allowed() -> bool:
    token = helpdesk().web.metrics_token
    if token is None:
        return _from_loopback()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@blueprint.route("/metrics")
@for_machines  # not a person's page: guarded below by address or bearer token, not by sign-in
def metrics():
    if not _allowed():
        abort(403)
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(current_app.extensions[METRICS]), content_type=content_type)
