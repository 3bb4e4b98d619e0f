"""Polish first, English on request: which language a request gets, and `tr(pl, en)`.

Every text is written where it is used, in both languages: ``tr("Zgłoszenia", "Tickets")``
in Python and templates alike. With two languages this beats a catalog: no extraction or
compile step, and a missing English text cannot go unnoticed. Flask-Babel still picks the
locale and formats dates, times and numbers (``|datetimeformat`` in templates).
"""
from __future__ import annotations

from flask import Flask, current_app, g, has_request_context, request, session
from flask_babel import Babel, get_locale

LANGUAGES = ("pl", "en")


def language() -> str:
    """The current request's language, "pl" or "en"."""
    if not has_request_context():
        return str(get_locale() or "pl").split("_")[0]
    # Flask-Babel keeps the locale for the request too, but asking it costs ~30 µs, and a
    # page of the triage list asks hundreds of times (every label, every `tr`).
    chosen = g.get("_language")
    if chosen is None:
        chosen = g._language = str(get_locale() or "pl").split("_")[0]
    return chosen


def tr(pl: str, en: str, **values) -> str:
    """The text in the request's language; `values` fill `{name}` places in either."""
    text = en if language() == "en" else pl
    return text.format(**values) if values else text


def _remember_choice() -> None:
    """`?lang=en` on any address switches the language for the rest of the visit."""
    wanted = request.args.get("lang")
    if wanted in LANGUAGES:
        session["lang"] = wanted


def _select_locale() -> str:
    """The visitor's choice, else the browser's preference, else the configured language."""
    if session.get("lang") in LANGUAGES:
        return session["lang"]
    preferred = request.accept_languages.best_match(LANGUAGES)
    return preferred or current_app.extensions["helpdesk"].config.language


def configure_i18n(app: Flask, default_language: str, timezone: str) -> None:
    app.config["BABEL_DEFAULT_LOCALE"] = default_language
    app.config["BABEL_DEFAULT_TIMEZONE"] = timezone
    Babel(app, locale_selector=_select_locale, timezone_selector=lambda: timezone)
    app.before_request(_remember_choice)
    app.jinja_env.globals.update(tr=tr, language=language)
