"""Read [[pbx_sources]] and [calls] into typed objects; every problem named by section and key.

A source says where call records come from (`kind`: csv, mail, asterisk, http-json),
how often to fetch them (`every`), and how to read them: which of their columns holds
which of our fields, how their dates are written and in which time zone, and which of
their words means which outcome. So a new PBX export is mapped in configuration alone.
"""
from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.config import EMAIL_RE, Config, ConfigError, _Reader, _secret, parse_duration

KINDS = ("csv", "mail", "asterisk", "http-json")
OUTCOMES = ("answered", "missed", "abandoned", "busy", "failed", "voicemail")
DIRECTIONS = ("in", "out", "internal")
# Our fields a source can map; started_at is the one every mapped source needs.
FIELDS = ("call_id", "direction", "caller", "callee", "queue", "technician", "extension",
          "started_at", "answered_at", "ended_at", "wait_seconds", "talk_seconds",
          "duration_seconds", "outcome")
AUTH = ("none", "bearer", "basic")
PAGING = ("none", "page", "offset", "next")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SPECIAL_DATE_FORMATS = ("iso", "epoch", "epoch_ms")
# Keys each kind reads beyond name, kind, every and timezone; any other key is an error.
CSV_KEYS = ("delimiter", "encoding", "header", "skip_lines", "date_format", "columns",
            "outcomes", "directions")
KIND_KEYS = {
    "csv": ("path", *CSV_KEYS),
    "mail": ("mailbox", *CSV_KEYS),
    "asterisk": ("path", "queue_log", "encoding"),
    "http-json": ("url", "auth", "token", "token_env", "username", "password", "password_env",
                  "paging", "page_param", "size_param", "page_size", "first_page",
                  "records_path", "next_path", "since_param", "since_format", "overlap",
                  "timeout", "max_pages", "date_format", "columns", "outcomes", "directions"),
}
DEFAULT_PARAMS = {"page": ("page", "size"), "offset": ("offset", "limit"),
                  "none": ("page", "size"), "next": ("page", "size")}


@dataclass(frozen=True)
class PbxSource:
    name: str
    kind: str
    every: timedelta = timedelta(minutes=5)
    timezone: str = "Europe/Warsaw"
    # csv and mail (and the field mapping of http-json)
    path: str | None = None                  # csv: a glob; asterisk: Master.csv (a glob too)
    delimiter: str | None = None             # None: ";" or "," (or tab), whichever the header uses
    encoding: str = "utf-8"                  # utf-8 (with or without BOM), windows-1250, ...
    header: bool = True
    skip_lines: int = 0                      # lines before the header (a title, a blank line)
    date_format: str = "iso"                 # iso, epoch, epoch_ms or a strptime pattern
    # our field -> their column(s); their word (lower case) -> ours
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    directions: dict[str, str] = field(default_factory=dict)
    # mail
    mailbox: str | None = None
    # asterisk
    queue_log: str | None = None
    # http-json
    url: str | None = None
    auth: str = "none"
    token: str | None = None
    username: str | None = None
    password: str | None = None
    paging: str = "none"
    page_param: str = "page"
    size_param: str = "size"
    page_size: int = 100
    first_page: int = 1
    records_path: str = ""                   # dotted path to the list of records; "": the body
    next_path: str | None = None             # dotted path to the next page's URL
    since_param: str | None = None           # query parameter asking for records since a time
    since_format: str = "iso"
    overlap: timedelta = timedelta(hours=1)  # re-read this far back, for records that come late
    timeout: timedelta = timedelta(seconds=30)
    max_pages: int = 10000

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class CallSettings:
    callback_after: timedelta = timedelta(minutes=15)   # no contact this long: a callback ticket
    callback_target: timedelta = timedelta(minutes=30)  # business time to call back, L1's calendar
    service_level_seconds: int = 20                     # answered within this counts as in service
    # A missed call older than this when the check first sees it (an archive imported, a
    # report that came days late) is not called back: it is marked stale, no ticket.
    callback_max_age: timedelta = timedelta(hours=24)
    extensions: dict[str, str] = field(default_factory=dict)  # PBX extension -> technician email


@dataclass(frozen=True)
class CallsConfig:
    sources: tuple[PbxSource, ...] = ()
    settings: CallSettings = field(default_factory=CallSettings)

    def source(self, name: str) -> PbxSource | None:
        return next((s for s in self.sources if s.name == name), None)

    def mail_source(self, mailbox: str | None) -> PbxSource | None:
        wanted = (mailbox or "").lower()
        return next((s for s in self.sources if s.kind == "mail" and s.mailbox == wanted), None)


# -- entry points -------------------------------------------------------------------------
def calls_config(config: Config, env: dict[str, str] | None = None) -> CallsConfig:
    """[[pbx_sources]] and [calls] as a CallsConfig; raises ConfigError naming each bad key."""
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    sources = _sources(config, env, problems)
    settings = _settings(_Reader(config.extra.get("calls", {}), "calls", problems), config)
    if problems:
        raise ConfigError(problems)
    return CallsConfig(tuple(sources), settings)


# -- [[pbx_sources]] ----------------------------------------------------------------------
def _sources(config: Config, env: dict[str, str], problems: list[str]) -> list[PbxSource]:
    tables = config.extra.get("pbx_sources", [])
    if not isinstance(tables, list):
        problems.append("pbx_sources: must be an array of tables ([[pbx_sources]])")
        return []
    sources = [_source(_Reader(t, f"pbx_sources[{i}]", problems), config, env)
               for i, t in enumerate(tables)]
    _unique(sources, "name", problems)
    _unique([s for s in sources if s.kind == "mail"], "mailbox", problems)
    return sources


def _unique(sources: list[PbxSource], attr: str, problems: list[str]) -> None:
    seen: set[str] = set()
    for index, source in enumerate(sources):
        value = getattr(source, attr)
        if value and value in seen:
            problems.append(f"pbx_sources[{index}].{attr}: duplicate {value!r}")
        seen.add(value)


def _source(r: _Reader, config: Config, env: dict[str, str]) -> PbxSource:
    name = r.get("name", str, "", required=True)
    if name and not NAME_RE.match(name):
        r.fail("name", f"use letters, digits, '.', '_' or '-' (at most 100), got {name!r}")
    kind = r.choice("kind", KINDS, "csv")
    every = _positive(r, "every", PbxSource.every)
    values = {"name": name, "kind": kind, "every": every,
              "timezone": _zone(r, config.timezone)}
    reader = {"csv": _csv_keys, "mail": _mail_keys, "asterisk": _asterisk_keys,
              "http-json": _http_keys}[kind]
    values.update(reader(r, config, env))
    r.finish()
    return PbxSource(**values)


def _zone(r: _Reader, default: str) -> str:
    name = r.get("timezone", str, default)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        r.fail("timezone", f"unknown time zone {name!r}")
        return default
    return name


def _positive(r: _Reader, key: str, default: timedelta) -> timedelta:
    value = r.convert(key, parse_duration, default)
    if value <= timedelta(0):
        r.fail(key, "must be longer than zero")
        return default
    return value


def _csv_keys(r: _Reader, config: Config, env: dict[str, str]) -> dict:
    values = {"path": r.get("path", str, None, required=True)}
    values.update(_csv_options(r))
    return values


def _mail_keys(r: _Reader, config: Config, env: dict[str, str]) -> dict:
    mailbox = r.email("mailbox")
    if mailbox and not config.mailbox(mailbox):
        r.fail("mailbox", f"{mailbox!r} is not one of the [[mailboxes]]: the PBX's mail must "
                          f"reach the helpdesk")
    return {"mailbox": (mailbox or "").lower() or None, **_csv_options(r)}


def _csv_options(r: _Reader) -> dict:
    skip_lines = r.get("skip_lines", int, 0)
    if skip_lines < 0:
        r.fail("skip_lines", "must be 0 or more")
    return {"delimiter": _delimiter(r), "encoding": _encoding(r),
            "header": r.get("header", bool, True), "skip_lines": max(skip_lines, 0),
            **_mapping(r, required=("started_at",))}


def _asterisk_keys(r: _Reader, config: Config, env: dict[str, str]) -> dict:
    return {"path": r.get("path", str, None, required=True),
            "queue_log": r.get("queue_log", str, None), "encoding": _encoding(r)}


def _http_keys(r: _Reader, config: Config, env: dict[str, str]) -> dict:
    url = r.get("url", str, "", required=True)
    if url and not re.match(r"^https?://[^/\s]+", url):
        r.fail("url", f"must be an http:// or https:// URL, got {url!r}")
    paging = r.choice("paging", PAGING, "none")
    page_param, size_param = DEFAULT_PARAMS[paging]
    values = {
        "url": url, **_auth(r, env), "paging": paging,
        "page_param": r.get("page_param", str, page_param),
        "size_param": r.get("size_param", str, size_param),
        "page_size": r.get("page_size", int, PbxSource.page_size),
        "first_page": r.get("first_page", int, 0 if paging == "offset" else 1),
        "records_path": r.get("records_path", str, ""),
        "next_path": r.get("next_path", str, None),
        "since_param": r.get("since_param", str, None),
        "since_format": r.choice("since_format", SPECIAL_DATE_FORMATS, "iso"),
        "overlap": r.convert("overlap", parse_duration, PbxSource.overlap),
        "timeout": _positive(r, "timeout", PbxSource.timeout),
        "max_pages": r.get("max_pages", int, PbxSource.max_pages),
        **_mapping(r, required=("started_at",)),
    }
    if values["page_size"] < 1:
        r.fail("page_size", "must be 1 or more")
    if values["max_pages"] < 1:
        r.fail("max_pages", "must be 1 or more")
    if paging == "next" and not values["next_path"]:
        r.fail("next_path", "is required with paging = \"next\" (where the next page's URL is, "
                            "e.g. \"links.next\")")
    return values


def _auth(r: _Reader, env: dict[str, str]) -> dict:
    auth = r.choice("auth", AUTH, "none")
    token = _secret(r, "token", env)
    username = r.get("username", str, None)
    password = _secret(r, "password", env)
    if auth == "bearer" and not token:
        r.fail("token", "is required with auth = \"bearer\" (or token_env)")
    if auth == "basic" and (not username or password is None):
        r.fail("username" if not username else "password",
               "username and password (or password_env) are required with auth = \"basic\"")
    return {"auth": auth, "token": token, "username": username, "password": password}


def _delimiter(r: _Reader) -> str | None:
    value = r.get("delimiter", str, None)
    if value is not None and (len(value) != 1 or value in "\"\r\n"):
        r.fail("delimiter", f"must be one character such as \";\" or \",\", got {value!r}")
        return None
    return value


def _encoding(r: _Reader) -> str:
    value = r.get("encoding", str, "utf-8")
    try:
        codecs.lookup(value)
    except LookupError:
        r.fail("encoding", f"unknown encoding {value!r} (e.g. \"utf-8\", \"windows-1250\")")
        return "utf-8"
    return value


# -- the field mapping --------------------------------------------------------------------
def _mapping(r: _Reader, required: tuple[str, ...]) -> dict:
    return {"date_format": _date_format(r), "columns": _columns(r, required),
            "outcomes": _words(r, "outcomes", OUTCOMES),
            "directions": _words(r, "directions", DIRECTIONS)}


def _date_format(r: _Reader) -> str:
    value = r.get("date_format", str, "iso")
    if value in SPECIAL_DATE_FORMATS:
        return value
    sample = datetime(2026, 10, 25, 2, 30, 15)
    try:
        if "%" not in value or datetime.strptime(sample.strftime(value), value) is None:
            raise ValueError
    except ValueError:
        r.fail("date_format", f"use \"iso\", \"epoch\", \"epoch_ms\" or a strptime pattern "
                              f"such as \"%d.%m.%Y %H:%M:%S\", got {value!r}")
        return "iso"
    return value


def _columns(r: _Reader, required: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    table = r.get("columns", dict, None, required=True) or {}
    columns: dict[str, tuple[str, ...]] = {}
    for ours, theirs in table.items():
        names = [theirs] if isinstance(theirs, str) else theirs
        if ours not in FIELDS:
            r.fail(f"columns.{ours}", f"not a call field: use {', '.join(FIELDS)}")
        elif not isinstance(names, list) or not names or \
                not all(isinstance(n, str) and n.strip() for n in names):
            r.fail(f"columns.{ours}", "must be a column name or a list of them (joined with "
                                      "a space, e.g. [\"Data\", \"Godzina\"])")
        else:
            columns[ours] = tuple(n.strip() for n in names)
    for ours in required:
        if table and ours not in table:
            r.fail(f"columns.{ours}", "is required: which of their columns holds it")
    return columns


def _words(r: _Reader, key: str, allowed: tuple[str, ...]) -> dict[str, str]:
    table = r.get(key, dict, {})
    words: dict[str, str] = {}
    for theirs, ours in table.items():
        if ours not in allowed:
            r.fail(f"{key}.{theirs}", f"must be one of {', '.join(allowed)}, got {ours!r}")
        else:
            words[theirs.strip().lower()] = ours
    return words


# -- [calls] ------------------------------------------------------------------------------
def _settings(r: _Reader, config: Config) -> CallSettings:
    settings = CallSettings(
        callback_after=_positive(r, "callback_after", CallSettings.callback_after),
        callback_target=_positive(r, "callback_target", CallSettings.callback_target),
        service_level_seconds=r.get("service_level_seconds", int,
                                    CallSettings.service_level_seconds),
        callback_max_age=_positive(r, "callback_max_age", CallSettings.callback_max_age),
        extensions=_extensions(r, config),
    )
    if settings.service_level_seconds < 0:
        r.fail("service_level_seconds", "must be 0 or more")
    r.finish()
    return settings


def _extensions(r: _Reader, config: Config) -> dict[str, str]:
    table = r.get("extensions", dict, {})
    known = {t.email for t in config.technicians}
    extensions: dict[str, str] = {}
    for extension, email in table.items():
        if not isinstance(email, str) or not EMAIL_RE.match(email):
            r.fail(f"extensions.{extension}", f"must be a technician's address, got {email!r}")
        elif email.lower() not in known:
            r.fail(f"extensions.{extension}", f"{email!r} is not one of the [[technicians]]")
        else:
            extensions[str(extension).strip()] = email.lower()
    return extensions
