"""Read the [web] and [form] sections: where the web listens, how it signs in, what the form takes."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

from daemon.config import Config, ConfigError, _Reader, _secret, parse_duration, parse_listen

MB = 1024 * 1024
MIN_SESSION_TIME = timedelta(minutes=1)
MAX_SESSION_TIME = timedelta(days=366)


@dataclass(frozen=True)
class Category:
    """One choice of the form's category list; `key` is what the ticket stores."""

    key: str
    pl: str
    en: str

    def label(self, language: str) -> str:
        return self.en if language == "en" else self.pl


DEFAULT_CATEGORIES = (
    Category("cash_register", "Kasa", "Cash register"),
    Category("fiscal_printer", "Drukarka fiskalna", "Fiscal printer"),
    Category("network", "Sieć", "Network"),
    Category("software", "Oprogramowanie", "Software"),
    Category("other", "Inne", "Other"),
)
DEFAULT_ALLOWED_TYPES = ("jpg", "jpeg", "png", "gif", "webp", "heic", "pdf", "txt", "log", "csv",
                         "doc", "docx", "xls", "xlsx", "odt", "ods", "zip", "eml")


@dataclass(frozen=True)
class FormConfig:
    mailbox: str | None = None           # None: the first configured mailbox
    categories: tuple[Category, ...] = DEFAULT_CATEGORIES
    max_attachments: int = 5
    max_attachment_bytes: int = 10 * MB
    allowed_types: tuple[str, ...] = DEFAULT_ALLOWED_TYPES  # file name extensions, lower case
    # Accepted submissions per client IP and per email address within rate_window.
    rate_limit: int = 5
    rate_window: timedelta = timedelta(minutes=10)

    def category(self, key: str) -> Category | None:
        return next((c for c in self.categories if c.key == key), None)

    @property
    def max_request_bytes(self) -> int:
        """The largest request the form can legitimately send (files plus a margin for text)."""
        return self.max_attachments * self.max_attachment_bytes + MB


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = True                 # served by `helpdesk run`
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    secret_key: str | None = None        # None: generated once into <data_dir>/secret_key
    secure_cookies: bool | None = None   # None: when web_url is https
    proxies: int = 0                     # reverse proxies in front whose X-Forwarded-* to trust
    login_attempts: int = 5              # failed sign-ins per email and IP before a pause
    login_pause: timedelta = timedelta(seconds=30)  # doubled for each further failure
    login_pause_max: timedelta = timedelta(minutes=15)
    # Failed sign-ins from one client IP, whatever the addresses, before it pauses the same
    # way (0: no per-IP count); an IP's count is forgotten after login_ip_window without one.
    login_ip_attempts: int = 20
    login_ip_window: timedelta = timedelta(hours=1)
    # A signed-in session ends after this long without a request, and this long after
    # sign-in whatever happens (webform.sessions).
    session_idle_timeout: timedelta = timedelta(hours=8)
    session_lifetime: timedelta = timedelta(days=7)
    # /metrics: None answers loopback clients only; set, it wants `Authorization: Bearer <token>`.
    metrics_token: str | None = field(default=None, repr=False)
    form: FormConfig = field(default_factory=FormConfig)


def web_config(config: Config, env: dict[str, str] | None = None) -> WebConfig:
    """config.extra["web"] and ["form"] as a WebConfig; raises ConfigError naming each bad key."""
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    form = _form(_Reader(config.extra.get("form", {}), "form", problems), config)
    web = _web(_Reader(config.extra.get("web", {}), "web", problems), env, form)
    if problems:
        raise ConfigError(problems)
    return web


def _web(r: _Reader, env: dict[str, str], form: FormConfig) -> WebConfig:
    secure = r.get("secure_cookies", bool, None)
    web = WebConfig(
        enabled=r.get("enabled", bool, True),
        listen=r.convert("listen", parse_listen, WebConfig.listen),
        secret_key=_secret(r, "secret_key", env),
        secure_cookies=secure,
        proxies=r.get("proxies", int, 0),
        login_attempts=r.get("login_attempts", int, WebConfig.login_attempts),
        login_pause=r.convert("login_pause", parse_duration, WebConfig.login_pause),
        login_pause_max=r.convert("login_pause_max", parse_duration, WebConfig.login_pause_max),
        login_ip_attempts=r.get("login_ip_attempts", int, WebConfig.login_ip_attempts),
        login_ip_window=r.convert("login_ip_window", parse_duration, WebConfig.login_ip_window),
        session_idle_timeout=r.convert("session_idle_timeout", parse_duration,
                                       WebConfig.session_idle_timeout),
        session_lifetime=r.convert("session_lifetime", parse_duration, WebConfig.session_lifetime),
        metrics_token=_secret(r, "metrics_token", env),
        form=form,
    )
    if web.secret_key is not None and len(web.secret_key) < 32:
        r.fail("secret_key", "must be at least 32 characters (or leave it out: one is generated)")
    if web.metrics_token is not None and len(web.metrics_token) < 16:
        r.fail("metrics_token", "must be at least 16 characters")
    if web.login_attempts < 1:
        r.fail("login_attempts", "must be 1 or more")
    if web.proxies < 0:
        r.fail("proxies", "must be 0 or more")
    if web.login_pause_max < web.login_pause:
        r.fail("login_pause_max", "must not be shorter than login_pause")
    if web.login_ip_attempts < 0:
        r.fail("login_ip_attempts", "must be 0 (no per-IP count) or more")
    for name in ("login_ip_window", "session_idle_timeout", "session_lifetime"):
        if not MIN_SESSION_TIME <= getattr(web, name) <= MAX_SESSION_TIME:
            r.fail(name, "must be from 1m to 366d")
    r.finish()
    return web


def _form(r: _Reader, config: Config) -> FormConfig:
    mailbox = r.get("mailbox", str, None)
    form = FormConfig(
        mailbox=mailbox.lower() if mailbox else None,
        categories=_categories(r),
        max_attachments=r.get("max_attachments", int, FormConfig.max_attachments),
        max_attachment_bytes=r.get("max_attachment_bytes", int, FormConfig.max_attachment_bytes),
        allowed_types=tuple(t.lower().lstrip(".") for t in r.strings("allowed_types"))
        or FormConfig.allowed_types,
        rate_limit=r.get("rate_limit", int, FormConfig.rate_limit),
        rate_window=r.convert("rate_window", parse_duration, FormConfig.rate_window),
    )
    if mailbox and not config.mailbox(mailbox):
        r.fail("mailbox", f"is not one of the [[mailboxes]]: {mailbox!r}")
    for name in ("max_attachments", "max_attachment_bytes", "rate_limit"):
        if getattr(form, name) < 0:
            r.fail(name, "must be 0 or more")
    r.finish()
    return form


def _categories(r: _Reader) -> tuple[Category, ...]:
    """`categories = ["Kasa", {key = "printer", pl = "Drukarka", en = "Printer"}, ...]`."""
    entries = r.get("categories", list, None)
    if entries is None:
        return DEFAULT_CATEGORIES
    categories = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and entry.strip():
            categories.append(Category(entry.strip()[:100], entry.strip(), entry.strip()))
        elif isinstance(entry, dict) and isinstance(entry.get("pl"), str) \
                and set(entry) <= {"key", "pl", "en"}:
            key = str(entry.get("key") or entry["pl"]).strip()[:100]
            categories.append(Category(key, entry["pl"], str(entry.get("en") or entry["pl"])))
        else:
            r.fail(f"categories[{i}]", 'must be a name or a table {key = "...", pl = "...", '
                                       'en = "..."}')
    if not categories:
        r.fail("categories", "must name at least one category")
    return tuple(categories) or DEFAULT_CATEGORIES
