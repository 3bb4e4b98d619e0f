"""Which configuration file applies, and the HELPDESK_* variables the helpdesk will not read.

A misspelt `HELPDESK_CONFG` used to run the daemon on the built-in defaults without a
word: the operator thought their file was read. Now `check-config` and the first line
of `run` say which file was read (or that none was), and a variable that looks like one
of ours but is not read is named with the one it was probably meant to be.
"""
from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

# The variables the helpdesk itself reads.
READ = ("HELPDESK_CONFIG", "HELPDESK_DATABASE_URL")
# Read by the test suite and the benchmarks, never by the helpdesk: not misspellings.
FOR_TESTS = ("HELPDESK_KILL_SEED", "HELPDESK_KILL_BACKENDS", "HELPDESK_SCREENSHOTS",
             "HELPDESK_WALK_EXAMPLES")
FOR_TESTS_PREFIX = "HELPDESK_TEST_"     # HELPDESK_TEST_PG, HELPDESK_TEST_CORPUS, ...
PREFIX = "HELPDESK_"


def configuration_source(cli_path: str | None, source: Path | None) -> str:
    """Where the configuration came from, in words for check-config and the log."""
    if source is None:
        return ("no configuration file (neither --config nor HELPDESK_CONFIG is set): "
                "the built-in defaults apply")
    how = "--config" if cli_path else "HELPDESK_CONFIG"
    return f"configuration file {source.resolve()} (from {how})"


def referenced_variables(source: Path | None) -> set[str]:
    """Every variable the file names in an `…_env` key (imap_password_env, token_env, …)."""
    if source is None:
        return set()
    try:
        document = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()  # the loader reports that itself
    return set(_env_values(document))


def _env_values(value) -> Iterable[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.endswith("_env") and isinstance(item, str):
                yield item
            else:
                yield from _env_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _env_values(item)


def unread_variables(env: Mapping[str, str], referenced: set[str] = frozenset()) -> list[str]:
    """A warning for each variable that looks like one of ours and will not be read:
    HELPDESK_ and a name we do not read, or a near miss of one we do (HELPDSK_CONFIG)."""
    meant = sorted({*READ, *(r for r in referenced if r.startswith(PREFIX))})
    warnings = []
    for name in sorted(env):
        if name in READ or name in referenced or name in FOR_TESTS \
                or name.startswith(FOR_TESTS_PREFIX):
            continue
        close = difflib.get_close_matches(name, meant, n=1, cutoff=0.8)
        if not name.startswith(PREFIX) and not close:
            continue
        hint = f"; did you mean {close[0]}?" if close else \
            f"; the helpdesk reads {', '.join(READ)} and the variables the file names in *_env keys"
        warnings.append(f"environment variable {name} is set but the helpdesk does not read "
                        f"it{hint}")
    return warnings
