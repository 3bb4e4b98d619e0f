"""`helpdesk calls`: import a source or a file, list calls as JSON, figures, calls on tickets."""
import json

from daemon.cli import main
from tests.callsupport import calls_section, orange_source, row, write_export

NOW = "2026-11-25T12:00:00+01:00"


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def setup(tmp_path, config_file):
    folder = tmp_path / "cdr"
    write_export(folder / "2026-11-25.csv", [
        row("1", "2026-11-25 10:00:00", "0611002030", "Nieodebrane", wait="40"),
        row("2", "2026-11-25 10:05:00", "Anonymous", "Odebrane", wait="8", talk="61",
            extension="101"),
        row("3", "2026-11-25 10:06:00", "0611002030", "Bzdura"),
    ])
    return config_file(pbx_sources=[orange_source(folder)], calls=calls_section())


def test_import_a_source_then_list_calls_as_json(tmp_path, config_file, capsys):
    config = setup(tmp_path, config_file)
    code, out, err = run(capsys, "--config", str(config), "--now", NOW, "calls", "import",
                         "--source", "orange", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["imported"], result["malformed"]) == (2, 1)
    assert result["call_import_errors"][0]["line"] == 4
    assert result["callbacks"] == {"opened": 1, "decided": 1}

    code, out, _ = run(capsys, "--config", str(config), "calls", "--json")
    assert code == 0
    calls = json.loads(out)
    for call in calls:
        for key in ("source", "call_id", "direction", "caller", "callee", "started_at", "outcome",
                    "wait_seconds", "talk_seconds", "client", "ticket"):
            assert key in call
    missed, answered = calls
    assert missed == missed | {"source": "orange", "call_id": "1", "direction": "in",
                               "caller": "+48611002030", "callee": "500",
                               "started_at": "2026-11-25T10:00:00+01:00", "outcome": "missed",
                               "wait_seconds": 40, "talk_seconds": 0, "client": "Sieć Bursztyn",
                               "ticket": "JAN-1"}
    assert answered["caller"] is None and answered["technician"] == "anna.kowalska@jantar.pl"

    code, out, _ = run(capsys, "--config", str(config), "calls", "--json", "--number",
                       "+48 61 100 20 30")
    assert [c["call_id"] for c in json.loads(out)] == ["1"]
    code, out, _ = run(capsys, "--config", str(config), "calls", "--json", "--from", "2026-11-26")
    assert json.loads(out) == []

    code, out, _ = run(capsys, "--config", str(config), "ticket", "JAN-1", "--json")
    ticket = json.loads(out)
    assert ticket["channel"] == "phone" and [c["call_id"] for c in ticket["calls"]] == ["1"]


def test_import_a_file_with_a_progress_bar(tmp_path, config_file, capsys):
    config = setup(tmp_path, config_file)
    other = write_export(tmp_path / "old.csv", [row("9", "2026-11-24 09:00:00", "0611002030",
                                                    "Odebrane")])
    code, out, err = run(capsys, "--config", str(config), "--now", NOW, "calls", "import",
                         str(other), "--format", "csv", "--source", "orange", "--progress")
    assert code == 0 and out.startswith("orange: 1 calls imported")
    assert "old.csv [" in err and "100%" in err
    code, _, err = run(capsys, "--config", str(config), "calls", "import", str(tmp_path / "x.csv"),
                       "--source", "orange")
    assert code == 1 and "no such file" in err
    code, _, err = run(capsys, "--config", str(config), "calls", "import", "--source", "nope")
    assert code == 1 and "no pbx source named 'nope'" in err


def test_report_figures(tmp_path, config_file, capsys):
    config = setup(tmp_path, config_file)
    run(capsys, "--config", str(config), "--now", NOW, "calls", "import", "--source", "orange")
    code, out, _ = run(capsys, "--config", str(config), "calls", "report", "--from", "2026-11-25",
                       "--to", "2026-11-25", "--json")
    figures = json.loads(out)
    assert code == 0
    assert {k: figures["totals"][k] for k in ("offered", "answered", "missed", "answer_rate",
                                              "service_level", "average_speed_of_answer")} == \
        {"offered": 2, "answered": 1, "missed": 1, "answer_rate": 0.5, "service_level": 0.5,
         "average_speed_of_answer": 8.0}
    assert figures["per_hour"][10]["offered"] == 2
    code, out, _ = run(capsys, "--config", str(config), "calls", "report", "--from", "2026-11-25",
                       "--to", "2026-11-25")
    assert code == 0 and "odsetek odebranych 50%" in out  # [helpdesk] language = "pl"
