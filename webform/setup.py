"""Wire the Flask app: secret key, cookies, CSRF, sign-in, languages, blueprints, error pages."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from urllib.parse import urlencode

from flask import Flask, current_app, g, render_template, request, send_file
from flask_login import current_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from daemon.store import StoreUnavailable
from webform import WEB_TEMPLATES
from webform.auth import configure_login, public
from webform.config import WebConfig, web_config
from webform.i18n import LANGUAGES, configure_i18n, language, tr
from webform.params import BadParameter, bounded_converters
from webform.throttle import LoginThrottle, RateLimit

log = logging.getLogger(__name__)
SECRET_FILE = "secret_key"
STYLESHEET = WEB_TEMPLATES / "site.css"
# script-src 'self' and no inline scripts anywhere: whatever slips into a page cannot run.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")


def configure(app: Flask) -> None:
    desk = app.extensions["helpdesk"]
    desk.web = web = web_config(desk.config)
    desk.login_throttle = LoginThrottle(web.login_attempts, web.login_pause, web.login_pause_max)
    if web.login_ip_attempts:
        desk.login_ip_throttle = LoginThrottle(web.login_ip_attempts, web.login_pause,
                                               web.login_pause_max,
                                               forget_after=web.login_ip_window)
    desk.form_rate = RateLimit(web.form.rate_limit, web.form.rate_window)
    app.secret_key = secret_key(web, desk.config.data_dir)
    _cookies_and_limits(app, web, desk.config.web_url)
    if web.proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=web.proxies, x_proto=web.proxies,
                                x_host=web.proxies)
    CSRFProtect(app)
    configure_i18n(app, desk.config.language, desk.config.timezone)
    configure_login(app)
    bounded_converters(app.url_map)
    _blueprints(app)
    _layout(app)
    _error_pages(app)


# -- secret key -------------------------------------------------------------------------------
def secret_key(web: WebConfig, data_dir: Path) -> str:
    """[web] secret_key (or secret_key_env), else the one generated into DATA_DIR on first run."""
    if web.secret_key:
        return web.secret_key
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        _generate_secret(path)
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others: made private (0600)", path)
        path.chmod(0o600)
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise RuntimeError(f"{path}: the secret key is too short; delete the file to make a new one")
    return key


def _generate_secret(path: Path) -> None:
    """Write a new key private from the first byte; a second process racing us keeps ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(draft, path)  # fails if another process got there first: theirs wins
            log.info("generated the web's secret key into %s", path)
        except FileExistsError:
            pass
    finally:
        draft.unlink(missing_ok=True)


def _cookies_and_limits(app: Flask, web: WebConfig, web_url: str) -> None:
    secure = web.secure_cookies if web.secure_cookies is not None else web_url.startswith("https://")
    app.config.update(
        SESSION_COOKIE_NAME="jantar_session", SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=secure,
        # The token lives as long as the session: a long report typed slowly still goes through.
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=web.form.max_request_bytes,
    )


# -- blueprints and layout ------------------------------------------------------------------------
def _blueprints(app: Flask) -> None:
    from webform import auth, ops, public as public_form, rating, triage
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(public_form.blueprint)
    app.register_blueprint(auth.blueprint)
    app.register_blueprint(triage.blueprint)
    app.register_blueprint(rating.blueprint)
    from webform import calls
    app.register_blueprint(calls.blueprint)
    app.add_url_rule("/site.css", "site_css", public(_stylesheet))


def _stylesheet():
    return send_file(STYLESHEET, mimetype="text/css", max_age=3600)


def _language_url(wanted: str) -> str:
    """This very address in the other language (keeps the form's prefill parameters)."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"]
    return request.path + "?" + urlencode([*args, ("lang", wanted)])


def _layout_context() -> dict:
    other = next(lang for lang in LANGUAGES if lang != language())
    return {"staff": current_user if current_user.is_authenticated else None,
            "other_language": other, "other_language_url": _language_url(other)}


def _security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "site_css":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _layout(app: Flask) -> None:
    app.context_processor(_layout_context)
    app.after_request(_security_headers)


# -- error pages ----------------------------------------------------------------------------------
ERROR_TEXTS = {
    400: ("Nieprawidłowe żądanie", "Bad request",
          "Przeglądarka wysłała coś, czego nie rozumiemy.",
          "The browser sent something we do not understand."),
    403: ("Brak dostępu", "Forbidden",
          "Nie masz uprawnień do tej strony (np. jest tylko dla koordynatorów).",
          "You may not see this page (it may be for coordinators only)."),
    404: ("Nie ma takiej strony", "Page not found",
          "Sprawdź adres albo wróć do formularza.", "Check the address or go back to the form."),
    405: ("Niedozwolona metoda", "Method not allowed",
          "Tej strony nie można otworzyć w ten sposób.", "This page cannot be opened this way."),
    410: ("Już niedostępne", "No longer available",
          "Ten link wygasł albo jego treść została usunięta.",
          "This link has expired or what it pointed to was removed."),
    413: ("Za duże pliki", "Files too large",
          "Razem z załącznikami zgłoszenie jest za duże. Wybierz mniej lub mniejsze pliki.",
          "With its attachments the report is too large. Choose fewer or smaller files."),
    429: ("Zbyt wiele prób", "Too many attempts",
          "Spróbuj ponownie za chwilę.", "Try again in a moment."),
    500: ("Błąd serwera", "Server error",
          "Coś poszło nie tak po naszej stronie. Spróbuj ponownie za chwilę.",
          "Something went wrong on our side. Try again in a moment."),
    503: ("Baza danych niedostępna", "Database unavailable",
          "Nie możemy teraz połączyć się z bazą zgłoszeń. Spróbuj ponownie za kilka minut; "
          "pilne sprawy zgłoś telefonicznie.",
          "We cannot reach the ticket store right now. Try again in a few minutes; "
          "report urgent problems by phone."),
}


def error_page(code: int, detail: str | None = None):
    title_pl, title_en, text_pl, text_en = ERROR_TEXTS.get(code, ERROR_TEXTS[500])
    page = render_template("error.html", code=code, title=tr(title_pl, title_en),
                           text=detail or tr(text_pl, text_en))
    return page, code


def _http_error(exc: HTTPException):
    # Our parameter readers say which value was wrong, in the reader's language; other
    # descriptions are developers' English and stay out of the page.
    return error_page(exc.code or 500, exc.description if isinstance(exc, BadParameter) else None)


def _csrf_error(exc: CSRFError):
    log.warning("CSRF check failed for %s %s: %s", request.method, request.path, exc.description)
    return error_page(400, tr("Formularz wygasł albo został wysłany z innej strony. "
                              "Wróć, odśwież stronę i wyślij go ponownie.",
                              "The form expired or was sent from another site. "
                              "Go back, reload the page and send it again."))


def _store_down(exc: Exception):
    # Treat the visitor as anonymous: asking the store who is signed in would fail again
    # while the error page renders. (Flask-Login keeps the loaded user in g._login_user.)
    g._login_user = current_app.login_manager.anonymous_user()
    log.error("store unavailable during %s %s: %s", request.method, request.path, exc)
    page, code = error_page(503)
    return page, code, {"Retry-After": "60"}


def _error_pages(app: Flask) -> None:
    for code in (400, 403, 404, 405, 410, 413, 429, 500):
        app.register_error_handler(code, _http_error)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(OperationalError, _store_down)
    app.register_error_handler(StoreUnavailable, _store_down)
