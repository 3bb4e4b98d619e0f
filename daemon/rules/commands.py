"""Read the `#command` lines at the top of a technician's mail.

Commands stand on their own lines before the first line of text; they are removed
before the rest is relayed. A line that starts with `#` but is not a valid command
stops the whole mail (nothing is relayed) so a typo never reaches a customer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from daemon.config import PRIORITIES, TIERS

HELP = (
    "#internal            — notatka wewnętrzna, nie trafia do klienta / internal note, not sent to the customer",
    "#resolve             — zgłoszenie rozwiązane / mark resolved",
    "#wait                — czekamy na klienta / waiting for the customer",
    "#tier L1|L2|L3       — przekaż do poziomu / hand over to a tier",
    "#assign ADRES|IMIĘ   — przypisz osobie / assign to a person (email or short name)",
    "#priority " + "|".join(PRIORITIES) + " — priorytet / priority",
)
_LINE_RE = re.compile(r"^#([a-z_-]+)(?:[ \t]+(.*?))?[ \t]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Command:
    name: str
    argument: str = ""
    line: str = ""


@dataclass
class CommandMail:
    commands: list[Command] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   # one per bad line, naming it
    body: str = ""                                     # the text after the commands

    def has(self, name: str) -> bool:
        return any(c.name == name for c in self.commands)


def _check(name: str, argument: str) -> str | None:
    """An error message for a malformed command, or None when it is well-formed."""
    if name in ("internal", "resolve", "wait"):
        return f"#{name} takes no argument" if argument else None
    if name == "tier":
        return None if argument.upper() in TIERS else f"#tier needs one of {', '.join(TIERS)}"
    if name == "priority":
        return None if argument.lower() in PRIORITIES else \
            f"#priority needs one of {', '.join(PRIORITIES)}"
    if name == "assign":
        return None if argument and " " not in argument else "#assign needs an address or a name"
    return f"unknown command #{name}"


def parse_commands(text: str) -> CommandMail:
    result = CommandMail()
    lines = text.replace("\r\n", "\n").split("\n")
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if not line:
            index += 1
            continue
        match = _LINE_RE.match(line)
        if not line.startswith("#") or (match is None and not re.match(r"^#\S", line)):
            break  # the first line of text: commands are over
        name, argument = (match.group(1).lower(), (match.group(2) or "").strip()) if match else ("", "")
        error = _check(name, argument) if match else "not a command"
        if error:
            result.errors.append(f"{line!r}: {error}")
        else:
            argument = argument.upper() if name == "tier" else argument
            result.commands.append(Command(name, argument.lower() if name == "priority" else argument, line))
        index += 1
    result.body = "\n".join(lines[index:]).strip("\n")
    return result
