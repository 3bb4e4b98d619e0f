"""The README says what the code does: every `#command` the parser knows, with an example
that parses; every subcommand in a command table; first steps that add clients,
technicians, coordinators and web accounts; and a shipped example configuration that
passes `check-config` with exactly the variables those steps set."""
from __future__ import annotations

import argparse
import ast
import inspect
import re

from daemon.cli import build_parser
from daemon.environment import referenced_variables
from daemon.rules import commands
from daemon.rules.commands import parse_commands
from tests.test_daemon import ROOT
from tests.test_operators import helpdesk

README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "helpdesk.example.toml"


def section(title: str) -> str:
    """The README's text under `## TITLE`, to the next heading of that level."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"no section '## {title}' in README.md"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row (header and rule rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


# -- item 13: the commands in mail -------------------------------------------------------------
def commands_the_parser_knows() -> set[str]:
    """The names `_check` accepts: the parser is the truth, whatever any list says."""
    tree = ast.parse(inspect.getsource(commands._check))
    known = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) \
                and node.left.id == "name":
            for compared in node.comparators:
                values = compared.elts if isinstance(compared, ast.Tuple) else [compared]
                known |= {v.value for v in values if isinstance(v, ast.Constant)}
    return known


def test_the_commands_the_parser_knows_are_found():
    known = commands_the_parser_knows()
    assert known == {"internal", "resolve", "wait", "tier", "assign", "priority"}
    assert parse_commands("#nonsense").errors  # anything else is refused
    help_names = {re.match(r"#(\w+)", line).group(1) for line in commands.HELP}
    assert help_names == known  # the help mailed back after a bad line lists them all


def test_every_command_in_mail_is_in_the_readme_with_an_example_that_parses():
    text = section("Commands in technicians' mail")
    documented = {}
    for cells in table_rows(text):
        name = re.match(r"`#(\w+)", cells[0])
        if name:
            documented[name.group(1)] = cells[-1].strip("`")
    assert set(documented) == commands_the_parser_knows()
    for name, example in documented.items():
        parsed = parse_commands(example + "\nDzień dobry.")
        assert parsed.errors == [] and [c.name for c in parsed.commands] == [name], example
    for block in re.findall(r"```text\n(.*?)```", text, re.S):
        parsed = parse_commands(block)
        assert parsed.errors == [] and parsed.commands and parsed.body, block


# -- item 13: every subcommand in a command table ----------------------------------------------
def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_subcommand_is_in_the_readme_command_tables():
    main_table = [cells[0] for cells in table_rows(section("Command line"))]
    every_table = [cells[0] for cells in table_rows(README) if cells]
    missing = []
    for name, command in subcommands(build_parser()).items():
        if not any(re.match(rf"`helpdesk {re.escape(name)}[ `]", cell) for cell in main_table):
            missing.append(name)
        for action in subcommands(command):
            pattern = rf"`helpdesk {re.escape(name)} {re.escape(action)}[ `]"
            if not any(re.match(pattern, cell) for cell in every_table):
                missing.append(f"{name} {action}")
    assert missing == []
    assert any(cell.startswith("`helpdesk report --from DATE --to DATE") for cell in main_table)


# -- item 14: first steps and the shipped example ----------------------------------------------
def test_the_first_steps_add_clients_technicians_coordinators_and_web_accounts():
    steps = section("First steps")
    for needed in ("[[clients]]", "[[technicians]]", 'role = "coordinator"', "check-config",
                   "helpdesk user add koordynator@jantar.pl --role coordinator",
                   "helpdesk user add anna.kowalska@jantar.pl --role technician"):
        assert needed in steps, needed


def variables_the_first_steps_set() -> dict[str, str]:
    exported = re.findall(r"^export (\w+)=", section("First steps"), re.M)
    return {name: f"a value for {name}" for name in exported if name != "HELPDESK_CONFIG"}


def test_the_shipped_example_passes_check_config_with_what_the_readme_sets(tmp_path):
    named = referenced_variables(EXAMPLE)  # every variable an uncommented *_env key names
    assert named and named <= set(variables_the_first_steps_set())
    result = helpdesk("--config", str(EXAMPLE), "check-config",
                      env=variables_the_first_steps_set(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout and result.stderr == ""


def test_the_shipped_example_without_its_variables_names_each_one(tmp_path):
    result = helpdesk("--config", str(EXAMPLE), "check-config", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for name in referenced_variables(EXAMPLE):
        assert f"environment variable {name} is not set" in result.stderr
