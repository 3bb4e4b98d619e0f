"""Sign-in for coordinators and technicians: /login, /logout, and who may see which page.

Every view needs a signed-in user unless it is marked `@public` (the form, its
confirmation, the sign-in page): the check runs before every request, so a new page is
private even if its author forgets. `@coordinator_required` narrows a view further.
Who is signed in is decided on the server: the cookie names a session recorded in the
store (webform.sessions), which sign-out, a new password, a disabled account, the idle
timeout and the lifetime end.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import (Blueprint, Flask, abort, current_app, flash, redirect, render_template,
                   request, session, url_for)
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user

from daemon.store.models import Technician
from webform import helpdesk
from webform.accounts import authenticate
from webform.i18n import tr
from webform.params import CONTROL_RE
from webform.sessions import (MAX_CLIENT_IP, SIGNED_OUT, SessionPolicy, end_session,
                              live_session, open_session)

log = logging.getLogger(__name__)
blueprint = Blueprint("auth", __name__)
HOME = "/tickets"
MAX_NEXT = 2000
MAX_EMAIL = 320

__all__ = ["blueprint", "coordinator_required", "for_machines", "login_required", "public", "Staff"]


@dataclass(frozen=True, eq=False)
class Staff(UserMixin):
    """The signed-in person, copied out of their Technician row for the request."""

    id: int
    email: str
    name: str
    tier: str
    role: str
    token: str

    @classmethod
    def of(cls, row: Technician, token: str) -> Staff:
        return cls(row.id, row.email, row.name, row.tier, row.role, token)

    def get_id(self) -> str:
        return self.token

    @property
    def is_coordinator(self) -> bool:
        return self.role == "coordinator"


# -- who may see what ----------------------------------------------------------------------
def public(view):
    """Mark a view as open to everyone (the form, its confirmation, sign-in)."""
    view.public = True
    return view


def for_machines(view):
    """Mark a view as a monitor's (/healthz, /metrics): open to everyone like `public`, and
    nobody's session is looked up for it, so a browser's staff cookie cannot make a health
    check wait on, or fail with, the store."""
    view.public = view.for_machines = True
    return view


def coordinator_required(view):
    """Signed-in coordinators only: others get 403, anonymous visitors the sign-in page."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return current_app.login_manager.unauthorized()
        if not current_user.is_coordinator:
            abort(403)
        return view(*args, **kwargs)
    return wrapper


def _require_sign_in():
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if getattr(view, "for_machines", False):
        return None
    # Who is signed in is looked up now, for public pages too: a view's template asking
    # later would open a second store transaction inside the view's own, which on SQLite
    # waits for the view's write lock until it times out.
    signed_in = current_user.is_authenticated
    if view is None or getattr(view, "public", False):
        return None  # unknown addresses fall through to 404/405
    if not signed_in:
        return current_app.login_manager.unauthorized()
    return None


def session_policy() -> SessionPolicy:
    web = helpdesk().web
    return SessionPolicy(web.session_idle_timeout, web.session_lifetime)


def _load_staff(token: str) -> Staff | None:
    """Who the cookie's session token names, while that session counts (Flask-Login asks)."""
    desk = helpdesk()
    with desk.store.transaction() as db:
        found = live_session(db, token, session_policy(), desk.clock.now())
        return Staff.of(found[1], token) if found else None


def _unauthorized():
    flash(tr("Zaloguj się, aby zobaczyć tę stronę.", "Sign in to see this page."), "info")
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def configure_login(app: Flask) -> None:
    manager = LoginManager(app)
    manager.login_view = "auth.login"
    manager.user_loader(_load_staff)
    manager.unauthorized_handler(_unauthorized)
    app.before_request(_require_sign_in)


# -- views -------------------------------------------------------------------------------------
def _safe_next(target: str | None) -> str:
    """Only a path on this site: never `//evil.example` or `https://evil.example`, nor
    anything with a control character (a line break would split the Location header)."""
    if not target or len(target) > MAX_NEXT or CONTROL_RE.search(target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return HOME
    return target


def _next_field(source) -> str:
    """`next` as the sign-in form carries it on: only a value _safe_next would follow."""
    wanted = source.get("next", "")
    return wanted if _safe_next(wanted) == wanted else ""


def _client_ip() -> str:
    # Behind trusted proxies this is what X-Forwarded-For said: anything, of any length.
    address = "".join(c for c in request.remote_addr or "" if c.isprintable())
    return address[:MAX_CLIENT_IP] or "-"


def _refused(email: str, wait: int):
    message = tr("Zbyt wiele nieudanych prób logowania. Spróbuj ponownie za {seconds} s.",
                 "Too many failed sign-in attempts. Try again in {seconds} s.", seconds=wait)
    page = render_template("login.html", email=email, next=_next_field(request.form),
                           error=message)
    return page, 429, {"Retry-After": str(wait)}


# -- throttling: per (address, client IP), and per client IP across addresses ------------------
def _throttles(email: str):
    """(throttle, key) pairs a sign-in from this request counts against."""
    desk, ip = helpdesk(), _client_ip()
    pairs = [(desk.login_throttle, (email, ip))]
    if desk.login_ip_throttle is not None:
        pairs.append((desk.login_ip_throttle, ip))
    return pairs


def _wait_before_trying(email: str) -> int:
    return max(throttle.retry_after(key) for throttle, key in _throttles(email))


def _count_failure(email: str) -> int:
    return max([throttle.failed(key) for throttle, key in _throttles(email)])


def _count_success(email: str) -> None:
    # Only the address's count: the IP's stays, or one known password would buy an
    # attacker fresh guesses at every other address.
    helpdesk().login_throttle.succeeded((email, _client_ip()))


# -- views -------------------------------------------------------------------------------------
@blueprint.route("/login", methods=["GET", "POST"])
@public
def login():
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html", email="", next=_next_field(request.args))
    # Shown back, logged and used as a key: line breaks and other controls made harmless.
    email = "".join(c if c.isprintable() else "?"
                    for c in request.form.get("email", "").strip().lower()[:MAX_EMAIL])
    if wait := _wait_before_trying(email):
        return _refused(email, wait)
    staff = _signed_in(email, request.form.get("password", ""))
    if staff is None:
        wait = _count_failure(email)
        log.warning("<%s> sign-in failed from %s", email, _client_ip())
        if wait:
            return _refused(email, wait)
        error = tr("Nieprawidłowy e-mail lub hasło.", "Wrong email or password.")
        return render_template("login.html", email=email, next=_next_field(request.form),
                               error=error), 200
    _count_success(email)
    _start_session(staff)
    log.info("<%s> signed in from %s", staff.email, _client_ip())
    return redirect(_safe_next(request.form.get("next")))


def _signed_in(email: str, password: str) -> Staff | None:
    """The account's new session if EMAIL and PASSWORD are right, else None."""
    desk = helpdesk()
    with desk.store.transaction() as db:
        row = authenticate(db, email, password)
        if row is None:
            return None
        token = open_session(db, row, session_policy(), client_ip=_client_ip(),
                             now=desk.clock.now())
        return Staff.of(row, token)


def _start_session(staff: Staff) -> None:
    """A fresh cookie session for the signed-in user, keeping only the language choice."""
    _clear_session()
    login_user(staff)


def _clear_session() -> None:
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language


@blueprint.route("/logout", methods=["POST"])
@public  # signing out of an expired session must not ask to sign in first
def logout():
    if current_user.is_authenticated:
        desk = helpdesk()
        with desk.store.transaction() as db:
            end_session(db, current_user.token, SIGNED_OUT, desk.clock.now())
        log.info("<%s> signed out", current_user.email)
    logout_user()
    _clear_session()
    flash(tr("Wylogowano.", "Signed out."), "info")
    return redirect(url_for("auth.login"))
