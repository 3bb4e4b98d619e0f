"""Read [[calendars]], [[contracts]], [[rules]] and [sla] into one typed SlaConfig.

The sections refer to one another (a rule names a contract, a contract names calendars,
a client names its contract), so they are read and checked together; every problem is
named by section, index and key, rules also by their name:
``rules[2] "database outages".subject: bad regular expression ...``.

Built-in calendars ("l1", "24x7") and contracts ("standard", "extended") are always
there, so the embedded default run has clocks; a configured entry of the same name
replaces the built-in one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.config import (PRIORITIES, TIERS, Config, ConfigError, _Reader, derived,
                           parse_duration)
from daemon.rules.calendar import BusinessCalendar, CalendarError, check_country

CLOCKS = ("first_response", "resolution")
DEFAULT_WARNING_SHARE = 0.75

# The built-ins, written as configuration so that they are read (and checked) the same way.
BUILTIN_TARGETS = {
    "low": {"first_response": "8h", "resolution": "40h"},
    "normal": {"first_response": "4h", "resolution": "16h"},
    "high": {"first_response": "1h", "resolution": "8h"},
    "urgent": {"first_response": "30m", "resolution": "4h"},
}
BUILTIN_CALENDARS = (
    {"name": "l1", "hours": "Mon-Fri 08:00-16:00", "holidays": "PL"},
    {"name": "24x7", "hours": "Mon-Sun 00:00-24:00"},
)
BUILTIN_CONTRACTS = (
    {"name": "standard", "calendar": "l1", "after_hours_tier": "", "sla": BUILTIN_TARGETS},
    {"name": "extended", "calendar": "l1", "after_hours_tier": "L2",
     "after_hours_calendar": "24x7", "sla": BUILTIN_TARGETS},
)


@dataclass(frozen=True)
class Targets:
    """SLA targets for one priority: business time on the clock's calendar (None: no clock)."""

    first_response: timedelta | None = None
    resolution: timedelta | None = None

    def of(self, clock: str) -> timedelta | None:
        return getattr(self, clock)


@dataclass(frozen=True)
class Escalation:
    """What a breach does: raise the priority to at least `priority`, the tier to `tier`."""

    priority: str | None = None
    tier: str | None = None


@dataclass(frozen=True)
class Contract:
    name: str
    calendar: str                         # L1's hours for this client; the clock's calendar
    targets: dict[str, Targets] = field(default_factory=dict)
    after_hours_tier: str = ""            # "": tickets outside L1 hours wait for L1
    after_hours_calendar: str | None = None
    on_breach: Escalation | None = None

    def targets_for(self, priority: str) -> Targets:
        """The priority's targets, else those of the nearest lower priority listed."""
        rank = PRIORITIES.index(priority if priority in PRIORITIES else "normal")
        for candidate in reversed(PRIORITIES[:rank + 1]):
            if candidate in self.targets:
                return self.targets[candidate]
        return Targets()


@dataclass(frozen=True)
class Rule:
    """One routing rule: every condition given must hold; then its actions apply."""

    name: str
    # conditions (empty / None: not tested)
    mailbox: tuple[str, ...] = ()
    channel: tuple[str, ...] = ()
    client: tuple[str, ...] = ()          # client names; "" stands for "no known client"
    sender: tuple[str, ...] = ()          # addresses, or "@domain" (and its subdomains)
    subject: re.Pattern | None = None
    body: re.Pattern | None = None
    category: tuple[str, ...] = ()
    has_attachment: bool | None = None
    in_hours: bool | None = None          # inside the contract's L1 hours at arrival
    # actions (None: left as it is)
    tier: str | None = None
    priority: str | None = None
    set_category: str | None = None
    set_client: str | None = None
    assignee: str | None = None
    contract: str | None = None
    stop: bool = False


CONDITIONS = ("mailbox", "channel", "client", "sender", "subject", "body", "category",
              "has_attachment", "in_hours")
ACTIONS = ("tier", "priority", "set_category", "set_client", "assignee", "contract", "stop")


@dataclass(frozen=True)
class SlaConfig:
    calendars: dict[str, BusinessCalendar]
    contracts: dict[str, Contract]
    rules: tuple[Rule, ...] = ()
    default_contract: str = "standard"
    warning_share: float = DEFAULT_WARNING_SHARE

    def contract(self, name: str | None) -> Contract:
        """The named contract; an unknown or missing name gets the default contract."""
        return self.contracts.get(name or "") or self.contracts[self.default_contract]

    def calendar(self, name: str) -> BusinessCalendar:
        return self.calendars[name]


# -- entry points -----------------------------------------------------------------------
def sla_config(config: Config, env: dict[str, str] | None = None) -> SlaConfig:
    """The SLA sections of CONFIG as an SlaConfig; raises ConfigError naming each bad key.

    Read once per Config (daemon.config.derived).
    """
    return derived(config, ("sla",), lambda: _checked(config))


def _checked(config: Config) -> SlaConfig:
    problems: list[str] = []
    sla = _read(config, problems)
    if problems:
        raise ConfigError(problems)
    return sla


def _read(config: Config, problems: list[str]) -> SlaConfig:
    extra = config.extra
    calendars = _named(BUILTIN_CALENDARS, extra, "calendars", problems,
                       lambda r: _calendar(r, config))
    contracts = _named(BUILTIN_CONTRACTS, extra, "contracts", problems,
                       lambda r: _contract(r, calendars))
    rules = [_rule(r, config, contracts) for r in _readers(extra, "rules", problems)]
    _unique_names(rules, "rules", problems)
    settings = _Reader(extra.get("sla", {}), "sla", problems)
    sla = SlaConfig(
        calendars={k: v for k, v in calendars.items() if v is not None},
        contracts={k: v for k, v in contracts.items() if v is not None},
        rules=tuple(rules),
        default_contract=settings.get("default_contract", str, "standard"),
        warning_share=settings.get("warning_share", (float, int), DEFAULT_WARNING_SHARE),
    )
    if sla.default_contract not in contracts:
        settings.fail("default_contract", f"no contract named {sla.default_contract!r}")
    if not 0 < sla.warning_share < 1:
        settings.fail("warning_share", f"must be between 0 and 1 (0.75 = at 75% of the time), "
                                       f"got {sla.warning_share!r}")
    settings.finish()
    _check_clients(config, contracts, problems)
    return sla


def _readers(extra: dict, section: str, problems: list[str]) -> list[_Reader]:
    tables = extra.get(section, [])
    if not isinstance(tables, list):
        problems.append(f"{section}: must be an array of tables ([[{section}]])")
        return []
    readers = []
    for index, table in enumerate(tables):
        name = table.get("name") if isinstance(table, dict) else None
        where = f'{section}[{index}] "{name}"' if section == "rules" and name else \
            f"{section}[{index}]"
        readers.append(_Reader(table, where, problems))
    return readers


def _named(builtins: tuple[dict, ...], extra: dict, section: str, problems: list[str],
           read) -> dict[str, Any]:
    """Built-in entries, then the configured ones (replacing a built-in of the same name).

    A configured entry that fails to read is kept as None, so references to it are not
    reported a second time as unknown names.
    """
    entries: dict[str, Any] = {}
    for table in builtins:
        entries[table["name"]] = read(_Reader(table, f"built-in {section}", problems))
    seen: set[str] = set()
    for reader in _readers(extra, section, problems):
        name = reader.table.get("name")
        entry = read(reader)
        if isinstance(name, str) and name:
            if name in seen:
                reader.fail("name", f"duplicate {name!r}")
            seen.add(name)
            entries[name] = entry
    return entries


def _unique_names(rules: list[Rule], section: str, problems: list[str]) -> None:
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.name in seen:
            problems.append(f'{section}[{index}] "{rule.name}".name: duplicate rule name')
        seen.add(rule.name)


# -- calendars --------------------------------------------------------------------------
def _calendar(r: _Reader, config: Config) -> BusinessCalendar | None:
    name = r.get("name", str, "", required=True)
    hours = r.get("hours", (str, list), None, required=True)
    tz = _zone(r, config.timezone)
    country = r.get("holidays", str, "") or None
    closed = _dates(r, "extra_closed")
    r.finish()
    if country:
        try:
            check_country(country)
        except CalendarError as exc:
            r.fail("holidays", str(exc))
            country = None
    if not name or hours is None:
        return None
    try:
        return BusinessCalendar.parse(name, hours, tz, holidays=country, extra_closed=closed)
    except CalendarError as exc:
        r.fail("hours", str(exc))
        return None


def _zone(r: _Reader, default: str) -> ZoneInfo:
    name = r.get("timezone", str, default)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        r.fail("timezone", f"unknown time zone {name!r}")
        return ZoneInfo(default)


def _dates(r: _Reader, key: str) -> list[date]:
    found = []
    for value in r.get(key, list, []):
        try:
            found.append(value if isinstance(value, date) else date.fromisoformat(str(value)))
        except ValueError:
            r.fail(key, f"not a date like 2026-12-31: {value!r}")
    return found


# -- contracts --------------------------------------------------------------------------
def _contract(r: _Reader, calendars: dict[str, Any]) -> Contract | None:
    name = r.get("name", str, "", required=True)
    contract = Contract(
        name=name,
        calendar=_calendar_name(r, "calendar", calendars, required=True),
        targets=_targets(r),
        after_hours_tier=r.get("after_hours_tier", str, ""),
        after_hours_calendar=_calendar_name(r, "after_hours_calendar", calendars),
        on_breach=_escalation(r),
    )
    if contract.after_hours_tier and contract.after_hours_tier not in TIERS:
        r.fail("after_hours_tier", f"must be one of {', '.join(TIERS)} or \"\" (wait for L1), "
                                   f"got {contract.after_hours_tier!r}")
    if contract.after_hours_tier and not contract.after_hours_calendar:
        r.fail("after_hours_calendar", "is required when after_hours_tier is set "
                                       "(the calendar that tier works on, e.g. \"24x7\")")
    r.finish()
    return contract if name else None


def _calendar_name(r: _Reader, key: str, calendars: dict[str, Any], *,
                   required: bool = False) -> str | None:
    name = r.get(key, str, None, required=required)
    if name and name not in calendars:
        r.fail(key, f"no calendar named {name!r} (known: {', '.join(sorted(calendars))})")
    return name or None


def _targets(r: _Reader) -> dict[str, Targets]:
    table = r.get("sla", dict, {})
    targets = {}
    for priority, value in table.items():
        where = _Reader(value, r.key(f"sla.{priority}"), r.problems)
        if priority not in PRIORITIES:
            r.fail(f"sla.{priority}", f"not a priority: use {', '.join(PRIORITIES)}")
        targets[priority] = Targets(**{clock: _positive(where, clock) for clock in CLOCKS})
        where.finish()
    return targets


def _positive(r: _Reader, key: str) -> timedelta | None:
    value = r.convert(key, parse_duration, None)
    if value is not None and value <= timedelta(0):
        r.fail(key, "must be longer than zero")
        return None
    return value


def _escalation(r: _Reader) -> Escalation | None:
    table = r.get("on_breach", dict, None)
    if table is None:
        return None
    where = _Reader(table, r.key("on_breach"), r.problems)
    escalation = Escalation(priority=_choice_or_none(where, "priority", PRIORITIES),
                            tier=_choice_or_none(where, "tier", TIERS))
    where.finish()
    return escalation


def _choice_or_none(r: _Reader, key: str, choices: tuple[str, ...]) -> str | None:
    value = r.get(key, str, None)
    if value is not None and value not in choices:
        r.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return None
    return value


def _check_clients(config: Config, contracts: dict[str, Any], problems: list[str]) -> None:
    for index, client in enumerate(config.clients):
        if client.contract not in contracts:
            problems.append(f"clients[{index}].contract: no contract named {client.contract!r} "
                            f"(known: {', '.join(sorted(contracts))})")


# -- rules ------------------------------------------------------------------------------
def _rule(r: _Reader, config: Config, contracts: dict[str, Any]) -> Rule:
    rule = Rule(
        name=r.get("name", str, "", required=True),
        mailbox=_known(r, "mailbox", {m.address.lower() for m in config.mailboxes}, lower=True),
        channel=_strings(r, "channel", lower=True),
        client=_known(r, "client", {c.name for c in config.clients} | {""}),
        sender=_strings(r, "sender", lower=True),
        subject=_pattern(r, "subject"),
        body=_pattern(r, "body"),
        category=_strings(r, "category"),
        has_attachment=r.get("has_attachment", bool, None),
        in_hours=r.get("in_hours", bool, None),
        tier=_choice_or_none(r, "tier", TIERS),
        priority=_choice_or_none(r, "priority", PRIORITIES),
        set_category=r.get("set_category", str, None),
        set_client=_one_known(r, "set_client", {c.name for c in config.clients}),
        assignee=_one_known(r, "assignee", {t.email for t in config.technicians}, lower=True),
        contract=_one_known(r, "contract", set(contracts)),
        stop=r.get("stop", bool, False),
    )
    for address in rule.sender:
        if "@" not in address:
            r.fail("sender", f"{address!r}: give an address or @domain")
    r.finish()
    return rule


def _strings(r: _Reader, key: str, *, lower: bool = False) -> tuple[str, ...]:
    value = r.get(key, (str, list), None)
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not all(isinstance(v, str) for v in values):
        r.fail(key, "must be a string or a list of strings")
        return ()
    return tuple(v.strip().lower() if lower else v.strip() for v in values)


def _known(r: _Reader, key: str, known: set[str], *, lower: bool = False) -> tuple[str, ...]:
    values = _strings(r, key, lower=lower)
    for value in values:
        if value not in known:
            r.fail(key, f"{value!r} is not configured (known: {', '.join(sorted(known - {''}))})")
    return values


def _one_known(r: _Reader, key: str, known: set[str], *, lower: bool = False) -> str | None:
    value = r.get(key, str, None)
    if value is None:
        return None
    value = value.strip().lower() if lower else value.strip()
    if value not in known:
        r.fail(key, f"{value!r} is not configured (known: {', '.join(sorted(known))})")
        return None
    return value


def _pattern(r: _Reader, key: str) -> re.Pattern | None:
    text = r.get(key, str, None)
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        r.fail(key, f"bad regular expression {text!r}: {exc}")
        return None
