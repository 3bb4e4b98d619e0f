"""`helpdesk report` and `helpdesk calls report` speak the configured language: whole
words in their headings, the locale's decimal comma and dates; `--json` stays the
machine's (plain numbers, ISO dates). On the hand-made week of tests/test_reports.py."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

from daemon.cli import main
from tests.callsupport import calls_section, orange_source, row, write_export
from tests.conftest import NOW
from tests.test_reports import HOUR, make_week

WEEK = ["report", "--from", "2026-11-16", "--to", "2026-11-22"]
# The old table's cut words, and what a Polish reader should never meet.
CUT_WORDS = re.compile(r"resolv\b|backlg|\b1st\b|res med|res p90|SLA res\b")
ENGLISH = re.compile(r"\b(opened|resolved|backlog|median|total|Report|target)\b")


@pytest.fixture
def week_config(config_file, store, make_config, db_url):
    """config_file(language) -> the path of a configuration whose store holds the week."""
    make_week(store, make_config(db_url))

    def build(language: str):
        return config_file(helpdesk={"language": language})
    return build


def report_output(capsys, config, *options: str) -> str:
    capsys.readouterr()
    assert main(["--config", str(config), "--now", NOW.isoformat(), *WEEK, *options]) == 0
    return capsys.readouterr().out


def test_the_polish_report_speaks_polish_with_decimal_commas(week_config, capsys):
    text = report_output(capsys, week_config("pl"))
    assert text.startswith("Raport za okres 16.11.2026 – 22.11.2026 (Europe/Warsaw)")
    assert "przyjęte 6, rozwiązane 4, zaległe na koniec okresu 3" in text
    assert "czas do pierwszej odpowiedzi: mediana 3 h, 90. percentyl 6,8 h (4 zgłoszenia)" in text
    assert "czas do rozwiązania: mediana 8 h, 90. percentyl 14,8 h" in text
    assert "dotrzymane SLA: pierwsza odpowiedź 60% (3 z 5), rozwiązanie 60% (3 z 5)" in text
    assert "rozwiązane na L1: 50% (2 z 4; cel 60%)" in text
    assert "Według kanału\n  e-mail" in text and "  formularz" in text
    assert "średnia 3,67" in text
    assert not CUT_WORDS.search(text) and not ENGLISH.search(text)
    assert "6.8" not in text and "2026-11-16" not in text


def test_the_english_report_speaks_english_with_points(week_config, capsys):
    text = report_output(capsys, week_config("en"))
    assert text.startswith("Report for 16/11/2026 – 22/11/2026 (Europe/Warsaw)")
    assert "opened 6, resolved 4, backlog at the end 3" in text
    assert "time to first response: median 3 h, 90th percentile 6.8 h (4 tickets)" in text
    assert "resolved at L1: 50% (2 of 4; target 60%)" in text
    assert not CUT_WORDS.search(text)


def test_the_csv_is_a_spreadsheet_of_the_language(week_config, capsys):
    polish = report_output(capsys, week_config("pl"), "--csv")
    rows = list(csv.DictReader(io.StringIO(polish), delimiter=";"))
    total = rows[0]
    assert total["pierwsza odpowiedź, 90. percentyl (h)"] == "6,8"
    assert total["rozwiązanie, 90. percentyl (h)"] == "14,8"
    assert total["SLA rozwiązania dotrzymane (%)"] == "60"
    assert rows[-1]["grupa"] == "listopad 2026"
    english = report_output(capsys, week_config("en"), "--csv")
    total = next(csv.DictReader(io.StringIO(english)))
    assert (total["breakdown"], total["first response, 90th percentile (h)"],
            total["average rating"]) == ("total", "6.8", "3.67")


def test_json_stays_plain_numbers_and_iso_dates(week_config, capsys):
    result = json.loads(report_output(capsys, week_config("pl"), "--json"))
    assert (result["from"], result["to"]) == ("2026-11-16", "2026-11-22")
    assert result["totals"]["time_to_first_response"]["p90_seconds"] == 6.8 * HOUR
    assert result["totals"]["sla"]["first_response"]["share"] == 0.6
    assert result["ratings"]["by_month"][0]["month"] == "2026-11"


@pytest.mark.parametrize("language, expected", [
    ("pl", ["Połączenia w okresie 25.11.2026 – 25.11.2026", "przychodzące 2, odebrane 1",
            "odsetek odebranych 50%", "średni czas oczekiwania na odebranie 8 s",
            "poziom obsługi (odebrane do 20 s) 50%", "oddzwonienia: potrzebne"]),
    ("en", ["Calls for 25/11/2026 – 25/11/2026", "offered 2, answered 1", "answer rate 50%",
            "average speed of answer 8 s", "service level (answered within 20 s) 50%"]),
])
def test_the_call_report_speaks_the_language(tmp_path, config_file, capsys, language, expected):
    folder = tmp_path / "cdr"
    write_export(folder / "2026-11-25.csv", [
        row("1", "2026-11-25 10:00:00", "0611002030", "Nieodebrane", wait="40"),
        row("2", "2026-11-25 10:05:00", "Anonymous", "Odebrane", wait="8", talk="61",
            extension="101"),
    ])
    config = config_file(helpdesk={"language": language}, pbx_sources=[orange_source(folder)],
                         calls=calls_section())
    assert main(["--config", str(config), "--now", "2026-11-25T12:00:00+01:00", "calls",
                 "import", "--source", "orange"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "calls", "report", "--from", "2026-11-25", "--to",
                 "2026-11-25"]) == 0
    text = capsys.readouterr().out
    for words in expected:
        assert words in text
    assert "2026-11-25" not in text
