"""Load the TOML configuration once into typed, validated objects.

Every problem is reported with its section and key (``mailboxes[2].imap_port``) so an
operator can find the line; all problems are collected before anything fails.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TIERS = ("L1", "L2", "L3")
PRIORITIES = ("low", "normal", "high", "urgent")
ROLES = ("technician", "coordinator")
EXISTING_MAIL = ("archive", "process", "skip")
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
DURATION_RE = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*(?:(\d+)\s*s)?\s*$")


class ConfigError(Exception):
    """Raised with every problem found; ``problems`` holds one ``key: message`` each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def parse_duration(text: str) -> timedelta:
    """'90m', '4h', '1d 2h', '30s' -> timedelta; raises ValueError on anything else."""
    match = DURATION_RE.match(str(text))
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration like '15m', '4h' or '1d': {text!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    try:
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:  # past timedelta's 999,999,999 days
        raise ValueError(f"too long a duration: {text!r}") from None


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Mailbox:
    address: str
    imap_host: str | None = None
    imap_port: int = 993
    imap_tls: bool = True
    imap_user: str | None = None
    # Out of the repr, like `extra` below: a logged or printed Config shows no secrets.
    imap_password: str | None = field(default=None, repr=False)
    imap_folder: str = "INBOX"
    # After a message is committed: "flag" sets \Seen and $Helpdesk, "move" moves it here.
    imap_done_folder: str | None = None
    new_mail: str = "create"
    language: str | None = None
    # The first connection to a folder (no cursor yet): "archive" imports the mail already
    # there as history, "process" takes it as new mail, "skip" starts after it. Under
    # "archive", unseen mail younger than existing_unseen_live is still taken as new.
    existing_mail: str = "archive"
    existing_unseen_live: timedelta = timedelta(days=3)

    @property
    def pulls_imap(self) -> bool:
        return bool(self.imap_host)


@dataclass(frozen=True)
class Client:
    name: str
    domains: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    contract: str = "standard"
    language: str | None = None


@dataclass(frozen=True)
class Technician:
    name: str
    email: str
    tier: str = "L1"
    role: str = "technician"


@dataclass(frozen=True)
class SmtpServer:
    enabled: bool = True
    listen: tuple[str, int] = ("127.0.0.1", 2525)
    protocol: str = "smtp"
    max_message_size: int = 50 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    attachment_max_bytes: int = 25 * 1024 * 1024
    poll_interval: timedelta = timedelta(seconds=60)
    idle_timeout: timedelta = timedelta(minutes=9)
    # A mailbox whose last successful poll is older fails /healthz; None: see poll_stale_limit.
    poll_stale_after: timedelta | None = None
    min_free_bytes: int = 100 * 1024 * 1024  # `run` and `migrate` refuse a fuller data folder
    # /healthz names "intake" this long after intake last failed to commit a mail.
    intake_unhealthy_for: timedelta = timedelta(minutes=5)

    @property
    def poll_stale_limit(self) -> timedelta:
        """poll_stale_after, else a few polls: an IDLE poller records success once per idle_timeout."""
        return self.poll_stale_after or max(3 * self.poll_interval,
                                            self.idle_timeout + 2 * self.poll_interval)


@dataclass(frozen=True)
class TicketPolicy:
    reopen_days: int = 14              # a customer reply reopens a resolved ticket this long
    attach_max_bytes: int = 5 * 1024 * 1024  # larger customer files reach technicians as links
    coordinator_digest: timedelta | None = None  # None: one notice per new ticket
    discard_keep_days: int = 30        # discarded quarantine records keep their bytes this long
    # New tickets one sender may open per hour before the rest are held as one bundle;
    # per address, and per domain for domains no configured client has. 0: no limit.
    flood_per_address: int = 20
    flood_per_domain: int = 20


@dataclass(frozen=True)
class MailAuth:
    """Whose verdicts on a mail's origin are believed ([mail_auth])."""

    # authserv-ids (RFC 8601) of our own receiving servers; empty: no verdict is believed.
    trusted_authserv_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    database_url: str = "sqlite:///var/helpdesk.db"
    ticket_prefix: str = "JAN"
    timezone: str = "Europe/Warsaw"
    language: str = "pl"
    web_url: str = "http://127.0.0.1:8080"
    data_dir: Path = Path("var")
    smtp_server: SmtpServer = field(default_factory=SmtpServer)
    limits: Limits = field(default_factory=Limits)
    tickets: TicketPolicy = field(default_factory=TicketPolicy)
    mail_auth: MailAuth = field(default_factory=MailAuth)
    mailboxes: tuple[Mailbox, ...] = ()
    clients: tuple[Client, ...] = ()
    technicians: tuple[Technician, ...] = ()
    source: Path | None = None
    # Sections that later components parse themselves (outbound, web, calendars, ...).
    # Not in the repr: they hold the relay password and the web's secret key.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def mailbox(self, address: str) -> Mailbox | None:
        wanted = address.lower()
        return next((m for m in self.mailboxes if m.address.lower() == wanted), None)

    def technician(self, email: str) -> Technician | None:
        wanted = email.lower()
        return next((t for t in self.technicians if t.email.lower() == wanted), None)

    @property
    def own_addresses(self) -> frozenset[str]:
        return frozenset(m.address.lower() for m in self.mailboxes)

    def mailbox_or_default(self, address: str | None) -> Mailbox:
        return (self.mailbox(address) if address else None) or self.mailboxes[0]

    @property
    def coordinators(self) -> tuple[Technician, ...]:
        return tuple(t for t in self.technicians if t.role == "coordinator")


DEFAULT_MAILBOX = Mailbox(address="sklep@jantar.pl")
KNOWN_LATER_SECTIONS = ("outbound", "web", "calendars", "contracts", "rules", "sla",
                        "pbx_sources", "calls", "form")
# Components that parse a later section themselves, as "module:loader" where
# loader(config, env) returns their typed settings or raises ConfigError. Named, not
# imported: those modules import this one.
LATE_VALIDATORS = ("daemon.outbound.config:outbound_config", "webform.config:web_config",
                   "daemon.rules.sla_config:sla_config",
                   "daemon.ingest.calls.config:calls_config")


class _Reader:
    """Takes values out of one TOML table, recording problems under their full key."""

    def __init__(self, table: Any, where: str, problems: list[str]):
        self.where, self.problems = where, problems
        if not isinstance(table, dict):
            self.fail(None, f"must be a table, got {type(table).__name__}")
            table = {}
        self.table = dict(table)
        self.used: set[str] = set()

    def key(self, name: str | None) -> str:
        return f"{self.where}.{name}" if name else self.where

    def fail(self, name: str | None, message: str) -> None:
        self.problems.append(f"{self.key(name)}: {message}")

    def get(self, name: str, kind: type | tuple, default: Any = None, *, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required:
                self.fail(name, "is required")
            return default
        value = self.table[name]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(name, f"must be {names}, got {value!r}")
            return default
        return value

    def convert(self, name: str, converter: Callable[[Any], Any], default: Any) -> Any:
        raw = self.get(name, (str, int), None)
        if raw is None:
            return default
        try:
            return converter(raw)
        except ValueError as exc:
            self.fail(name, str(exc))
            return default

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name, list, [])
        if not all(isinstance(v, str) for v in value):
            self.fail(name, "must be a list of strings")
            return ()
        return tuple(value)

    def email(self, name: str, *, required: bool = True) -> str | None:
        value = self.get(name, str, None, required=required)
        if value is not None and not EMAIL_RE.match(value):
            self.fail(name, f"is not an email address: {value!r}")
        return value

    def finish(self) -> None:
        for name in sorted(set(self.table) - self.used):
            self.fail(name, "unknown key")


def _secret(reader: _Reader, name: str, env: dict[str, str]) -> str | None:
    value = reader.get(name, str, None)
    env_name = reader.get(f"{name}_env", str, None)
    if env_name:
        if env_name not in env:
            reader.fail(f"{name}_env", f"environment variable {env_name} is not set")
        else:
            value = env[env_name]
    return value


def _mailbox(table: Any, where: str, problems: list[str], env: dict[str, str]) -> Mailbox | None:
    r = _Reader(table, where, problems)
    address = r.email("address")
    mailbox = Mailbox(
        address=(address or "").lower(),
        imap_host=r.get("imap_host", str, None),
        imap_port=r.get("imap_port", int, 993),
        imap_tls=r.get("imap_tls", bool, True),
        imap_user=r.get("imap_user", str, None),
        imap_password=_secret(r, "imap_password", env),
        imap_folder=r.get("imap_folder", str, "INBOX"),
        imap_done_folder=r.get("imap_done_folder", str, None),
        new_mail=r.choice("new_mail", ("create", "form"), "create"),
        language=r.get("language", str, None),
        existing_mail=r.choice("existing_mail", EXISTING_MAIL, Mailbox.existing_mail),
        existing_unseen_live=r.convert("existing_unseen_live", parse_duration,
                                       Mailbox.existing_unseen_live),
    )
    if mailbox.imap_host and not mailbox.imap_user:
        r.fail("imap_user", "is required when imap_host is set")
    if mailbox.imap_host and mailbox.imap_password is None:
        r.fail("imap_password", "is required when imap_host is set (or imap_password_env)")
    if not 0 < mailbox.imap_port < 65536:
        r.fail("imap_port", f"must be a port number, got {mailbox.imap_port}")
    r.finish()
    return mailbox if address else None


def _client(table: Any, where: str, problems: list[str]) -> Client:
    r = _Reader(table, where, problems)
    client = Client(
        name=r.get("name", str, "", required=True),
        domains=tuple(d.lower().lstrip("@") for d in r.strings("domains")),
        phones=r.strings("phones"),
        contract=r.get("contract", str, "standard"),
        language=r.get("language", str, None),
    )
    r.finish()
    return client


def _technician(table: Any, where: str, problems: list[str]) -> Technician:
    r = _Reader(table, where, problems)
    tech = Technician(
        name=r.get("name", str, "", required=True),
        email=(r.email("email") or "").lower(),
        tier=r.choice("tier", TIERS, "L1"),
        role=r.choice("role", ROLES, "technician"),
    )
    r.finish()
    return tech


def _tables(doc: dict, name: str, problems: list[str]) -> list[tuple[str, Any]]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        problems.append(f"{name}: must be an array of tables ([[{name}]])")
        return []
    return [(f"{name}[{i}]", item) for i, item in enumerate(value)]


def _unique(items: list, attr: str, section: str, problems: list[str]) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        value = getattr(item, attr).lower()
        if value and value in seen:
            problems.append(f"{section}[{i}].{attr}: duplicate {value!r}")
        seen.add(value)


def _helpdesk(doc: dict, problems: list[str], env: dict[str, str]) -> dict[str, Any]:
    r = _Reader(doc.get("helpdesk", {}), "helpdesk", problems)
    values = {
        "database_url": r.get("database_url", str, Config.database_url),
        "ticket_prefix": r.get("ticket_prefix", str, Config.ticket_prefix),
        "timezone": r.get("timezone", str, Config.timezone),
        "language": r.choice("language", ("pl", "en"), Config.language),
        "web_url": r.get("web_url", str, Config.web_url).rstrip("/"),
        "data_dir": Path(r.get("data_dir", str, str(Config.data_dir))),
    }
    values["database_url"] = env.get("HELPDESK_DATABASE_URL") or values["database_url"]
    if not re.fullmatch(r"[A-Z][A-Z0-9]{0,9}", values["ticket_prefix"]):
        r.fail("ticket_prefix", "must be 1-10 capital letters or digits, starting with a letter")
    try:
        ZoneInfo(values["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        r.fail("timezone", f"unknown time zone {values['timezone']!r}")
        values["timezone"] = Config.timezone
    if "://" not in values["database_url"]:
        r.fail("database_url", "must be a SQLAlchemy URL such as sqlite:///var/helpdesk.db")
    r.finish()
    return values


def _smtp_server(doc: dict, problems: list[str]) -> SmtpServer:
    r = _Reader(doc.get("smtp_server", {}), "smtp_server", problems)
    server = SmtpServer(
        enabled=r.get("enabled", bool, True),
        listen=r.convert("listen", parse_listen, SmtpServer.listen),
        protocol=r.choice("protocol", ("smtp", "lmtp"), "smtp"),
        max_message_size=r.get("max_message_size", int, SmtpServer.max_message_size),
    )
    r.finish()
    return server


def _limits(doc: dict, problems: list[str]) -> Limits:
    r = _Reader(doc.get("limits", {}), "limits", problems)
    limits = Limits(
        attachment_max_bytes=r.get("attachment_max_bytes", int, Limits.attachment_max_bytes),
        poll_interval=r.convert("poll_interval", parse_duration, Limits.poll_interval),
        idle_timeout=r.convert("idle_timeout", parse_duration, Limits.idle_timeout),
        poll_stale_after=r.convert("poll_stale_after", parse_duration, None),
        min_free_bytes=r.get("min_free_bytes", int, Limits.min_free_bytes),
        intake_unhealthy_for=r.convert("intake_unhealthy_for", parse_duration,
                                       Limits.intake_unhealthy_for),
    )
    if limits.min_free_bytes < 0:
        r.fail("min_free_bytes", f"must be 0 or more, got {limits.min_free_bytes}")
    r.finish()
    return limits


def _ticket_policy(doc: dict, problems: list[str]) -> TicketPolicy:
    tickets = _Reader(doc.get("tickets", {}), "tickets", problems)
    notifications = _Reader(doc.get("notifications", {}), "notifications", problems)
    digest = notifications.convert("coordinator_digest", lambda v: parse_duration(v) if v else None,
                                   None)
    policy = TicketPolicy(
        reopen_days=tickets.get("reopen_days", int, TicketPolicy.reopen_days),
        attach_max_bytes=notifications.get("attach_max_bytes", int, TicketPolicy.attach_max_bytes),
        coordinator_digest=digest,
        discard_keep_days=tickets.get("discard_keep_days", int, TicketPolicy.discard_keep_days),
        flood_per_address=tickets.get("flood_per_address", int, TicketPolicy.flood_per_address),
        flood_per_domain=tickets.get("flood_per_domain", int, TicketPolicy.flood_per_domain),
    )
    for name in ("discard_keep_days", "flood_per_address", "flood_per_domain"):
        if getattr(policy, name) < 0:
            tickets.fail(name, f"must be 0 or more, got {getattr(policy, name)}")
    tickets.finish()
    notifications.finish()
    return policy


def _mail_auth(doc: dict, problems: list[str]) -> MailAuth:
    r = _Reader(doc.get("mail_auth", {}), "mail_auth", problems)
    ids = tuple(i.strip().lower() for i in r.strings("trusted_authserv_ids"))
    for i, authserv_id in enumerate(ids):
        if not authserv_id or any(c.isspace() or c == ";" for c in authserv_id):
            r.fail(f"trusted_authserv_ids[{i}]", f"is not a host name: {authserv_id!r}")
    r.finish()
    return MailAuth(trusted_authserv_ids=ids)


def derived(config: Config, key: tuple, build: Callable[[], Any]) -> Any:
    """BUILD(), worked out once per CONFIG and KEY: a section read from `config.extra`
    (the SLA or outbound settings) is asked for with every notice and every ticket, and a
    Config is frozen, its sections never changed after loading. An exception is not kept.
    """
    slot = (id(config), *key)
    kept = _DERIVED.get(slot)
    if kept is not None and kept[0] is config:
        return kept[1]
    value = build()
    if len(_DERIVED) >= 32:     # tests build many configs; a daemon has one
        _DERIVED.clear()
    _DERIVED[slot] = (config, value)
    return value


# (id(config), *key) -> (config, value); the config is kept so that its id is not reused.
_DERIVED: dict[tuple, tuple[Config, Any]] = {}


def from_dict(doc: dict, *, env: dict[str, str] | None = None, source: Path | None = None) -> Config:
    """Build a Config from a parsed TOML document; raises ConfigError with every problem."""
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    for name in sorted(set(doc) - {"helpdesk", "smtp_server", "limits", "tickets", "notifications",
                                    "mail_auth", "mailboxes", "clients", "technicians",
                                    *KNOWN_LATER_SECTIONS}):
        problems.append(f"{name}: unknown section")
    mailboxes = [m for where, t in _tables(doc, "mailboxes", problems)
                 if (m := _mailbox(t, where, problems, env))]
    clients = [_client(t, where, problems) for where, t in _tables(doc, "clients", problems)]
    technicians = [_technician(t, where, problems) for where, t in _tables(doc, "technicians", problems)]
    _unique(mailboxes, "address", "mailboxes", problems)
    _unique(clients, "name", "clients", problems)
    _unique(technicians, "email", "technicians", problems)
    config = Config(
        **_helpdesk(doc, problems, env),
        smtp_server=_smtp_server(doc, problems),
        limits=_limits(doc, problems),
        tickets=_ticket_policy(doc, problems),
        mail_auth=_mail_auth(doc, problems),
        mailboxes=tuple(mailboxes) or (DEFAULT_MAILBOX,),
        clients=tuple(clients),
        technicians=tuple(technicians),
        source=source,
        extra={k: doc[k] for k in KNOWN_LATER_SECTIONS if k in doc},
    )
    problems += _late_problems(config, env)
    if problems:
        raise ConfigError(problems)
    return config


def _late_problems(config: Config, env: dict[str, str]) -> list[str]:
    """Problems in the sections other components parse (see LATE_VALIDATORS)."""
    import importlib
    problems: list[str] = []
    for name in LATE_VALIDATORS:
        module, _, function = name.partition(":")
        try:
            getattr(importlib.import_module(module), function)(config, env)
        except ConfigError as exc:
            problems += exc.problems
    return problems


def load(path: str | os.PathLike | None = None, *, env: dict[str, str] | None = None) -> Config:
    """Load PATH, or $HELPDESK_CONFIG, or the built-in embedded defaults."""
    env = dict(os.environ if env is None else env)
    path = path or env.get("HELPDESK_CONFIG")
    if not path:
        return from_dict({}, env=env)
    source = Path(path)
    try:
        doc = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
    return from_dict(doc, env=env, source=source)
