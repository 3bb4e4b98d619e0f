"""Render a mail's subject, text and HTML from the jinja2 templates in templates/email/<lang>/.

A mail NAME is three files in a language folder: `NAME.subject.txt`, `NAME.txt` and,
optionally, `NAME.html` (which extends that folder's `_layout.html`). Only .html is
autoescaped; a variable the caller did not pass is an error, never an empty string.

Templates write the store's codes, numbers and instants the reader's way, through the
filters `word` (daemon.words: `{{ ticket.priority | word }}` is "normalny"), `number`
and `local` (daemon.formats: 1 234,5 and 25.11.2026, 15:00 CET in Polish).
"""
from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from daemon.config import Config
from daemon.formats import moment as formatted_moment
from daemon.formats import number as formatted_number
from daemon.outbound.config import outbound_config
from daemon.words import word

LANGUAGE_RE = re.compile(r"[a-z]{2}")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_]*")


class TemplateMissing(LookupError):
    """No NAME.txt / NAME.subject.txt in the requested language nor the default one."""


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str | None


@functools.cache
def builtin_templates() -> Path:
    """templates/email from the installed (or editable) project, found once per process.

    Not importlib.resources.files("templates"): on Python 3.11 it fails for a namespace
    package whose __path__ holds an editable install's path hook.
    """
    import templates
    for entry in templates.__path__:
        candidate = Path(entry) / "email"
        if candidate.is_dir():
            return candidate
    fallback = Path(__file__).resolve().parents[2] / "templates" / "email"
    if fallback.is_dir():
        return fallback
    raise TemplateMissing(f"templates/email not found in {list(templates.__path__)}")


def render_mail(config: Config, name: str, language: str | None, **context) -> RenderedMail:
    """Render mail NAME in LANGUAGE, else in the configured default language.

    The context always has `web_url` and `ticket_prefix` from the configuration
    (a caller's value wins). Raises TemplateMissing, or jinja2.UndefinedError for a
    variable the template uses but the caller did not pass.
    """
    roots = _roots(config)
    chosen = _language_with(roots, name, language, config.language)
    environment = _environment(tuple(roots), chosen, config.timezone)
    context = {"web_url": config.web_url, "ticket_prefix": config.ticket_prefix,
               "language": chosen, **context}
    subject = environment.get_template(f"{name}.subject.txt").render(context)
    text = environment.get_template(f"{name}.txt").render(context)
    html = None
    if _present(tuple(roots), chosen, name)[1]:
        html = environment.get_template(f"{name}.html").render(context)
    return RenderedMail(subject=" ".join(subject.split()), text=text, html=html)


def local_time(moment: datetime | None, tz: tzinfo, language: str = "pl") -> str:
    """`{{ instant | local }}` in templates: the helpdesk's wall clock the LANGUAGE's way,
    with its zone (Polish 25.11.2026, 15:00 CET; English 25/11/2026, 15:00 CET)."""
    if not moment:
        return ""
    zone = moment.astimezone(tz).strftime("%Z")  # CET or CEST: a reader abroad sees which
    return f"{formatted_moment(moment, language, tz)} {zone}"


def _roots(config: Config) -> list[Path]:
    """The operator's templates_dir first (overrides file by file), then the built-in ones."""
    override = outbound_config(config).templates_dir
    return [*([override] if override else []), builtin_templates()]


def _language_with(roots: list[Path], name: str, wanted: str | None, default: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise TemplateMissing(f"not a mail template name: {name!r}")
    # A language comes from ticket data; it must not become a path like "../..".
    wanted = wanted.lower() if wanted and LANGUAGE_RE.fullmatch(wanted.lower()) else default
    for language in dict.fromkeys([wanted, default]):
        if _present(tuple(roots), language, name)[0]:
            return language
    raise TemplateMissing(f"no mail template {name!r} in {wanted!r} "
                          f"nor {default!r} under {', '.join(map(str, roots))}")


FILES_TTL = 2.0   # seconds a look at which template files exist is reused
_PRESENT: dict[tuple, tuple[float, tuple[bool, bool]]] = {}


def _present(roots: tuple[Path, ...], language: str, name: str) -> tuple[bool, bool]:
    """(NAME has its subject and text in LANGUAGE, NAME has its HTML there).

    Looked at once per FILES_TTL: an SLA sweep renders a thousand notices, and each look
    is six to eight stat calls. A file added to or removed from the operator's folder
    counts within FILES_TTL; an edited one at once (the environments' auto_reload).
    """
    key, now = (roots, language, name), time.monotonic()
    seen = _PRESENT.get(key)
    if seen is not None and 0 <= now - seen[0] < FILES_TTL:
        return seen[1]

    def exists(suffix: str) -> bool:
        return any((root / language / f"{name}{suffix}").is_file() for root in roots)

    present = (exists(".subject.txt") and exists(".txt"), exists(".html"))
    if len(_PRESENT) > 1024:
        _PRESENT.clear()
    _PRESENT[key] = (now, present)
    return present


@functools.lru_cache(maxsize=64)
def _environment(roots: tuple[Path, ...], language: str, timezone: str) -> jinja2.Environment:
    """One environment per folder set and language, kept: compiling templates for every mail
    cost more than the rest of the pipeline (edited files are still reloaded: auto_reload)."""
    # One folder per language, so `{% extends "_layout.html" %}` finds the same language.
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader([root / language for root in roots]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                            default_for_string=False, default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    zone = ZoneInfo(timezone)
    environment.filters["local"] = lambda moment: local_time(moment, zone, language)
    environment.filters["word"] = lambda code: word(code, language)
    environment.filters["number"] = lambda value, digits=1: formatted_number(value, language,
                                                                            digits)
    return environment
