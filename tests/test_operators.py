"""What an operator meets at the command line: busy ports and an unreachable database
refused in one line naming the setting, before anything is created; `user add`'s answer;
which configuration file was read, and misspelt HELPDESK_* variables.

Every test runs the real `helpdesk` command as a subprocess, as an operator would.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, merge
from tests.fixtures_smtp import send_mail
from tests.mailfactory import make_mail
from tests.test_daemon import ROOT, free_port, listening, start_daemon, stop_daemon, wait_until
from tests.tomlwrite import write_config


def helpdesk(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m daemon.cli ARGS` with ENV added to a copy of ours minus HELPDESK_*."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    environment.update(env or {})
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                              environment.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, env=environment)


def held_port() -> socket.socket:
    """A loopback port some other program listens on."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def fresh_config(tmp_path: Path, *, smtp_port: int, web_port: int, **sections) -> Path:
    """A configuration whose SQLite store and data folder do not exist yet."""
    doc = merge(BASE_CONFIG, sections)
    doc["helpdesk"] = {**doc["helpdesk"], "data_dir": str(tmp_path / "data"),
                       "database_url": f"sqlite:///{tmp_path / 'store' / 'helpdesk.db'}"}
    doc["smtp_server"] = {"listen": f"127.0.0.1:{smtp_port}", **doc.get("smtp_server", {})}
    doc["web"] = {"listen": f"127.0.0.1:{web_port}", **doc.get("web", {})}
    doc["outbound"] = {"transport": "maildir", "maildir": str(tmp_path / "sent")}
    return write_config(tmp_path / "helpdesk.toml", doc)


def assert_one_clear_line(result: subprocess.CompletedProcess, *named: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr, result.stderr
    for text in named:
        assert text in result.stderr, result.stderr


# -- item 3: busy ports ----------------------------------------------------------------------
def test_a_busy_smtp_port_names_the_setting_and_creates_no_store(tmp_path):
    with held_port() as holder:
        port = holder.getsockname()[1]
        config = fresh_config(tmp_path, smtp_port=port, web_port=free_port())
        result = helpdesk("--config", str(config), "run")
    assert_one_clear_line(result, f"127.0.0.1:{port}", "[smtp_server] listen", "already in use")
    assert not (tmp_path / "store").exists() and not (tmp_path / "data").exists()


def test_a_busy_web_port_names_the_setting_and_creates_no_store(tmp_path):
    with held_port() as holder:
        port = holder.getsockname()[1]
        config = fresh_config(tmp_path, smtp_port=free_port(), web_port=port)
        result = helpdesk("--config", str(config), "run")
    assert_one_clear_line(result, f"127.0.0.1:{port}", "[web] listen", "already in use")
    assert "is in use by another program" not in result.stderr  # Werkzeug's own words
    assert not (tmp_path / "store").exists() and not (tmp_path / "data").exists()


def test_helpdesk_web_on_a_busy_port_names_the_setting_and_creates_no_store(tmp_path):
    with held_port() as holder:
        port = holder.getsockname()[1]
        config = fresh_config(tmp_path, smtp_port=free_port(), web_port=port)
        result = helpdesk("--config", str(config), "web")
        assert_one_clear_line(result, f"127.0.0.1:{port}", "[web] listen")
        other = helpdesk("--config", str(config), "web", "--listen", f"127.0.0.1:{port}")
    assert_one_clear_line(other, f"127.0.0.1:{port}", "--listen")
    assert not (tmp_path / "store").exists()


# -- item 3: an unreachable database ---------------------------------------------------------
@pytest.mark.parametrize("command", ["migrate", "run", "run --once", "tickets"])
def test_an_unreachable_database_is_one_line_naming_the_host_never_the_password(tmp_path,
                                                                                command):
    closed = free_port()  # nothing listens there
    config = fresh_config(tmp_path, smtp_port=free_port(), web_port=free_port())
    url = f"postgresql://helpdesk:s3cret-Pa55@127.0.0.1:{closed}/helpdesk"
    result = helpdesk("--config", str(config), *command.split(),
                      env={"HELPDESK_DATABASE_URL": url})
    assert_one_clear_line(result, f"127.0.0.1:{closed}", "database")
    assert "s3cret" not in result.stderr
    assert len([line for line in result.stderr.splitlines()
                if line.startswith("helpdesk:")]) == 1, result.stderr


# -- item 9: `helpdesk user add` ---------------------------------------------------------------
@pytest.mark.parametrize("language, created, updated", [
    ("pl", "konto utworzone (technik, L1)", "konto zaktualizowane"),
    ("en", "account created (technician, L1)", "account updated"),
])
def test_user_add_says_created_for_a_configured_technicians_first_account(
        tmp_path, language, created, updated):
    """The configuration's technicians have rows from the start (mirrored on every start),
    but no web account until `user add`: that first one is created, not updated."""
    config = fresh_config(tmp_path, smtp_port=free_port(), web_port=free_port(),
                          helpdesk={"language": language})
    add = ("--config", str(config), "user", "add", "anna.kowalska@jantar.pl", "--role",
           "technician", "--password", "dobre-haslo-na-start")
    first = helpdesk(*add)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"anna.kowalska@jantar.pl: {created}"
    again = helpdesk(*add)
    assert again.returncode == 0 and f"anna.kowalska@jantar.pl: {updated}" in again.stdout
    stranger = helpdesk(*add[:4], "zofia.nowa@jantar.pl", *add[5:])
    assert stranger.stdout.strip() == f"zofia.nowa@jantar.pl: {created}"


# -- item 16: which configuration was read ----------------------------------------------------
def test_check_config_names_the_file_it_read_and_how_it_was_named(tmp_path):
    config = fresh_config(tmp_path, smtp_port=free_port(), web_port=free_port())
    by_option = helpdesk("--config", str(config), "check-config", cwd=tmp_path)
    assert by_option.returncode == 0, by_option.stderr
    assert f"configuration file {config.resolve()} (from --config)" in by_option.stdout
    by_variable = helpdesk("check-config", env={"HELPDESK_CONFIG": str(config)}, cwd=tmp_path)
    assert f"configuration file {config.resolve()} (from HELPDESK_CONFIG)" in by_variable.stdout
    assert "built-in defaults" not in by_variable.stdout


def test_a_misspelt_helpdesk_config_is_named_and_the_defaults_are_said(tmp_path):
    config = fresh_config(tmp_path, smtp_port=free_port(), web_port=free_port())
    result = helpdesk("check-config", env={"HELPDESK_CONFG": str(config)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no configuration file" in result.stdout and "built-in defaults apply" in result.stdout
    assert "HELPDESK_CONFG is set but the helpdesk does not read it; did you mean " \
           "HELPDESK_CONFIG?" in result.stderr


def test_variables_the_file_names_are_read_and_near_misses_are_not(tmp_path):
    config = fresh_config(tmp_path, smtp_port=free_port(), web_port=free_port(),
                          web={"secret_key_env": "HELPDESK_WEB_SECRET"})
    result = helpdesk("--config", str(config), "check-config", cwd=tmp_path,
                      env={"HELPDESK_WEB_SECRET": "x" * 40, "HELPDSK_DATABASE_URL": "sqlite://",
                           "HELPDESK_SMTP_PASWORD": "x"})
    assert result.returncode == 0, result.stderr
    assert "HELPDESK_WEB_SECRET" not in result.stderr  # named by secret_key_env: read
    assert "HELPDSK_DATABASE_URL is set but the helpdesk does not read it; did you mean " \
           "HELPDESK_DATABASE_URL?" in result.stderr
    assert "HELPDESK_SMTP_PASWORD is set but the helpdesk does not read it" in result.stderr


def test_the_first_log_line_of_run_names_the_configuration(tmp_path):
    """Without a file `run` says the defaults apply before anything else; the unreachable
    database then ends it, so no default port or store is kept."""
    closed = f"postgresql://helpdesk@127.0.0.1:{free_port()}/helpdesk"
    config = fresh_config(tmp_path, smtp_port=free_port(), web_port=free_port())
    with_file = helpdesk("--config", str(config), "run", cwd=tmp_path,
                         env={"HELPDESK_DATABASE_URL": closed})
    assert with_file.returncode == 1
    first = with_file.stderr.splitlines()[0]
    assert f"helpdesk run: configuration file {config.resolve()} (from --config)" in first
    defaults = helpdesk("run", cwd=tmp_path, env={"HELPDESK_DATABASE_URL": closed,
                                                  "HELPDESK_CONFG": str(config)})
    assert defaults.returncode == 1
    lines = defaults.stderr.splitlines()
    assert "helpdesk run: no configuration file" in lines[0] and "built-in defaults" in lines[0]
    assert "HELPDESK_CONFG" in lines[1]


# -- item 15: the daemon's log ------------------------------------------------------------------
LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$")
# What our lines lead with: a ticket number, a Message-ID, "<->" for an SMTP session
# without one, a puller's mailbox/folder, a job's name, or the daemon, store or web itself.
OWN_LEAD = re.compile(r"^(<[^>\s]*>|<->|[A-Z][A-Z0-9]{0,9}-\d+\b|[^\s/]+@[^\s/]+/\S+:|"
                      r"(process|send|sla sweep|import history|purge discarded mail|"
                      r"coordinator digest|pbx [\w.-]+|history|store|health check):|"
                      r"helpdesk\b|web\b)")
OURS = ("daemon", "webform", "helpdesk")
# webform/setup.py belongs to the web's part of the work; its one start-up line
# ("generated the web's secret key into …") is reported there, not changed here.
NOT_YET = {"webform.setup"}


def run_with_a_mail(tmp_path: Path, *options: str) -> list[re.Match]:
    """`helpdesk run` for as long as one mail takes in and out; its log, line by line."""
    smtp_port, web_port = free_port(), free_port()
    config = fresh_config(tmp_path, smtp_port=smtp_port, web_port=web_port)
    log_path = tmp_path / "daemon.log"
    process = start_daemon(config, *options, log_path=log_path)
    try:
        wait_until(lambda: listening(smtp_port) and listening(web_port), what="the ports")
        send_mail(smtp_port, make_mail(message_id="<logged@bursztyn.pl>"))
        wait_until(lambda: "JAN-1: sent ack" in log_path.read_text(), what="the ack sent")
        urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=10).read()
    finally:
        assert stop_daemon(process, log_path) == 0
    text = log_path.read_text()
    assert "Traceback" not in text, text
    return [LOG_LINE.match(line) for line in text.splitlines()]


def test_the_daemons_log_leads_with_what_each_line_is_about_and_libraries_keep_quiet(tmp_path):
    lines = run_with_a_mail(tmp_path)
    assert all(lines)  # one line each: no continuation, no traceback
    ours = [m for m in lines if m["logger"].split(".")[0] in OURS]
    assert any(m["message"].startswith("JAN-1 <logged@bursztyn.pl> opened") for m in ours)
    assert any(m["message"].startswith("send: ") for m in ours)  # the job's own summary
    strays = [m.group(0) for m in ours if m["logger"] not in NOT_YET
              and not OWN_LEAD.match(m["message"])]
    assert strays == []
    chatter = [m.group(0) for m in lines if m["logger"].split(".")[0] not in OURS
               and m["level"] in ("DEBUG", "INFO")]
    assert chatter == []  # APScheduler per run, aiosmtpd's conversation and self-probe, ...


def test_with_v_the_libraries_speak_again(tmp_path):
    lines = [m for m in run_with_a_mail(tmp_path, "-v") if m]
    chatter = {m["logger"].split(".")[0] for m in lines if m["level"] == "DEBUG"}
    assert {"apscheduler", "mail", "alembic"} <= chatter
    assert not [m for m in lines if m["logger"].startswith(("apscheduler", "mail.log"))
                and m["level"] == "INFO"]  # shown, at DEBUG
