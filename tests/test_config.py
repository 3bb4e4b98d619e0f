"""Configuration: the documented names load, and every mistake is named by section and key."""
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from daemon import config as config_module
from daemon.config import ConfigError, from_dict, load, parse_duration

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_loads_with_every_documented_name():
    config = load(ROOT / "helpdesk.example.toml", env={"SKLEP_IMAP_PASSWORD": "s3cret"})
    assert config.ticket_prefix == "JAN"
    assert config.timezone == "Europe/Warsaw"
    assert config.smtp_server.listen == ("127.0.0.1", 2525)
    sklep = config.mailbox("SKLEP@jantar.pl")
    assert sklep.imap_host and sklep.imap_folder == "INBOX" and sklep.new_mail == "create"
    assert sklep.imap_password == "s3cret"
    assert config.clients[0].domains == ("bursztyn.pl",)
    assert {t.role for t in config.technicians} == {"technician", "coordinator"}


def test_defaults_without_a_file_are_the_embedded_setup():
    config = load(None, env={})
    assert config.database_url.startswith("sqlite:///")
    assert config.smtp_server.listen == ("127.0.0.1", 2525)
    assert [m.address for m in config.mailboxes] == ["sklep@jantar.pl"]


def test_database_url_from_environment_wins():
    config = from_dict({"helpdesk": {"database_url": "sqlite:///a.db"}},
                       env={"HELPDESK_DATABASE_URL": "postgresql://db/helpdesk"})
    assert config.database_url == "postgresql://db/helpdesk"


def test_every_problem_is_named_by_section_and_key():
    doc = {
        "helpdesk": {"ticket_prefix": "jan-", "timezone": "Mars/Olympus", "langauge": "pl"},
        "smtp_server": {"listen": "localhost", "protocol": "pop3"},
        "mailboxes": [{"address": "sklep@jantar.pl", "imap_host": "imap", "imap_port": "993"},
                      {"address": "not-an-address"}],
        "technicians": [{"name": "Anna", "email": "anna@jantar.pl", "tier": "L4"}],
        "clinets": [],
    }
    with pytest.raises(ConfigError) as caught:
        from_dict(doc, env={})
    problems = "\n".join(caught.value.problems)
    for key in ("helpdesk.ticket_prefix", "helpdesk.timezone", "helpdesk.langauge: unknown key",
                "smtp_server.listen", "smtp_server.protocol", "mailboxes[0].imap_port",
                "mailboxes[0].imap_user", "mailboxes[0].imap_password", "mailboxes[1].address",
                "technicians[0].tier", "clinets: unknown section"):
        assert key in problems


def test_password_from_a_missing_environment_variable_is_named():
    doc = {"mailboxes": [{"address": "a@jantar.pl", "imap_host": "h", "imap_user": "u",
                          "imap_password_env": "NOPE"}]}
    with pytest.raises(ConfigError, match=r"mailboxes\[0\].imap_password_env: environment variable NOPE"):
        from_dict(doc, env={})


@pytest.mark.parametrize("text, expected", [("15m", timedelta(minutes=15)), ("4h", timedelta(hours=4)),
                                            ("1d 2h", timedelta(days=1, hours=2)), ("30s", timedelta(seconds=30))])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "4 hours", "h", "-5m", "99999999999999999999d",
                                  "999999999999h"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_duration_past_any_calendar_is_named_with_its_key():
    with pytest.raises(ConfigError, match=r"limits.poll_interval: too long a duration"):
        from_dict({"limits": {"poll_interval": "99999999999999999999d"}}, env={})


def test_check_config_command_names_the_bad_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[helpdesk]\nlanguage = "de"\n\n[[mailboxes]]\naddress = "sklep@jantar.pl"\nnew_mail = "ignore"\n')
    result = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(bad), "check-config"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "helpdesk.language: must be one of pl, en" in result.stderr
    assert "mailboxes[0].new_mail: must be one of create, form" in result.stderr


def test_check_config_reports_toml_syntax_errors(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[helpdesk\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_module.load(bad)
