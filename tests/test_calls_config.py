"""[[pbx_sources]] and [calls]: the issue's example reads, and check-config names each bad key."""
from datetime import timedelta

import pytest

from daemon.config import ConfigError, from_dict
from daemon.ingest.calls.config import calls_config
from tests.conftest import BASE_CONFIG, merge

ISSUE_EXAMPLE = {
    "pbx_sources": [{
        "name": "orange", "kind": "csv", "path": "var/cdr/*.csv", "every": "5m",
        "timezone": "Europe/Warsaw", "delimiter": ";", "encoding": "windows-1250",
        "columns": {"call_id": "Id połączenia", "started_at": "Data i godzina",
                    "caller": "Numer dzwoniącego", "callee": "Numer wybierany",
                    "wait_seconds": "Czas oczekiwania", "talk_seconds": "Czas rozmowy",
                    "outcome": "Status"},
        "outcomes": {"Odebrane": "answered", "Nieodebrane": "missed", "Porzucone": "abandoned"},
    }],
    "calls": {"callback_after": "15m", "callback_target": "30m"},
}


def load(sections: dict, env=None):
    return from_dict(merge(BASE_CONFIG, sections), env=env or {})


def problems(sections: dict, env=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(sections, env)
    return caught.value.problems


def test_the_issue_example_reads():
    calls = calls_config(load(ISSUE_EXAMPLE))
    [orange] = calls.sources
    assert (orange.kind, orange.every, orange.delimiter, orange.encoding) == \
        ("csv", timedelta(minutes=5), ";", "windows-1250")
    assert orange.columns["caller"] == ("Numer dzwoniącego",)
    assert orange.outcomes == {"odebrane": "answered", "nieodebrane": "missed",
                               "porzucone": "abandoned"}
    assert calls.settings.callback_after == timedelta(minutes=15)
    assert calls.settings.callback_target == timedelta(minutes=30)
    assert calls.settings.service_level_seconds == 20


def test_no_sections_no_sources():
    assert calls_config(load({})).sources == ()


def test_bad_keys_are_named_by_section_index_and_key():
    found = problems({
        "pbx_sources": [
            {**ISSUE_EXAMPLE["pbx_sources"][0], "kind": "fax"},
            {"name": "bad csv", "kind": "csv", "path": "x", "every": "soon",
             "columns": {"started_at": "Data", "colour": "Kolor"},
             "outcomes": {"Odebrane": "picked up"}, "queue_log": "/var/log/queue_log",
             "date_format": "dd.mm.yyyy", "encoding": "klingon", "delimiter": ";;"},
            {"name": "api", "kind": "http-json", "url": "ftp://pbx", "auth": "bearer",
             "paging": "next", "columns": {"caller": "from"}},
            {"name": "mailed", "kind": "mail", "mailbox": "centralka@jantar.pl",
             "columns": {"started_at": "Data"}},
            {"name": "orange", "kind": "asterisk", "path": "/var/log/asterisk/Master.csv",
             "columns": {"started_at": "start"}},
        ],
        "calls": {"callback_after": "later", "extensions": {"101": "nobody@jantar.pl"},
                  "service_level_seconds": "20", "colour": "red"},
    })
    expected = [
        "pbx_sources[0].kind: must be one of csv, mail, asterisk, http-json, got 'fax'",
        "pbx_sources[1].name: use letters",
        "pbx_sources[1].every: not a duration",
        "pbx_sources[1].columns.colour: not a call field",
        "pbx_sources[1].outcomes.Odebrane: must be one of answered, missed",
        "pbx_sources[1].queue_log: unknown key",
        "pbx_sources[1].date_format: use \"iso\"",
        "pbx_sources[1].encoding: unknown encoding 'klingon'",
        "pbx_sources[1].delimiter: must be one character",
        "pbx_sources[2].url: must be an http:// or https:// URL",
        "pbx_sources[2].token: is required with auth = \"bearer\"",
        "pbx_sources[2].next_path: is required with paging = \"next\"",
        "pbx_sources[2].columns.started_at: is required",
        "pbx_sources[3].mailbox: 'centralka@jantar.pl' is not one of the [[mailboxes]]",
        "pbx_sources[4].columns: unknown key",
        "pbx_sources[4].name: duplicate 'orange'",
        "calls.callback_after: not a duration",
        "calls.service_level_seconds: must be int",
        "calls.extensions.101: 'nobody@jantar.pl' is not one of the [[technicians]]",
        "calls.colour: unknown key",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)


def test_secrets_come_from_the_environment():
    source = {"name": "api", "kind": "http-json", "url": "https://pbx.example/api/calls",
              "auth": "basic", "username": "jantar", "password_env": "PBX_PASSWORD",
              "columns": {"started_at": "start"}}
    assert problems({"pbx_sources": [source]}) == [
        "pbx_sources[0].password_env: environment variable PBX_PASSWORD is not set",
        "pbx_sources[0].password: username and password (or password_env) are required "
        "with auth = \"basic\""]
    config = load({"pbx_sources": [source]}, env={"PBX_PASSWORD": "tajne"})
    assert calls_config(config, env={"PBX_PASSWORD": "tajne"}).sources[0].password == "tajne"


def test_check_config_reports_them(tmp_path, capsys):
    from daemon.cli import main
    from tests.tomlwrite import write_config
    doc = merge(BASE_CONFIG, {"pbx_sources": [{"name": "x", "kind": "csv"}]})
    path = write_config(tmp_path / "helpdesk.toml", doc)
    assert main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "pbx_sources[0].path: is required" in err
    assert "pbx_sources[0].columns: is required" in err


def test_the_example_configuration_has_a_pbx_source_and_calls():
    from pathlib import Path

    from daemon.config import load
    config = load(Path(__file__).resolve().parents[1] / "helpdesk.example.toml",
                  env={"SKLEP_IMAP_PASSWORD": "x"})
    calls = calls_config(config, env={})
    assert [s.name for s in calls.sources] == ["orange"]
    assert calls.settings.extensions == {"101": "anna.kowalska@jantar.pl"}
