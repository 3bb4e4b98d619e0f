"""Importing call records: CSV exports (encodings, separators, DST, withheld, bad rows, cursors),
Asterisk Master.csv with queue_log, and a paginated JSON API with a late record and a duplicate."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest

from daemon.directory import sync_directory
from daemon.ingest.calls.run import CallImportError, import_file, run_source
from tests.callsupport import (CallApi, by_id, calls_section, local, orange_source, row,
                               stored_calls, write_export)

UTC = timezone.utc
NOW = local("2026-11-25 12:00")


@pytest.fixture
def calls_config(make_config, db_url, store):
    """calls_config(**sections) -> a Config with the directory synced into the store."""

    def build(**sections):
        config = make_config(db_url, **sections)
        with store.transaction() as session:
            sync_directory(session, config)
        return config

    return build


# -- CSV ----------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding, delimiter, bom", [
    ("windows-1250", ";", False), ("windows-1250", ",", False),
    ("utf-8", ";", True), ("utf-8", ",", False)])
def test_orange_export_in_both_encodings_and_separators(tmp_path, calls_config, store,
                                                        encoding, delimiter, bom):
    folder = tmp_path / "cdr"
    write_export(folder / "2026-11-25.csv", [
        row("A1", "2026-11-25 10:00:00", "0611002030", "Odebrane", wait="00:12", talk="95",
            extension="101"),
        row("A2", "2026-11-25 10:05:00", "0048 600 123 456", "Nieodebrane", wait="41"),
        row("A3", "2026-11-25 10:07:30", "+48 61 100 20 30", "Porzucone", wait="1:05"),
    ], encoding=encoding, delimiter=delimiter, bom=bom)
    source = orange_source(folder, encoding=encoding)
    del source["delimiter"]   # found from the header line
    config = calls_config(pbx_sources=[source], calls=calls_section())

    result = run_source(config, store, "orange", NOW)

    assert (result.read, result.imported, result.malformed) == (3, 3, 0)
    calls = by_id(stored_calls(store))
    answered = calls["A1"]
    assert answered["caller"] == "+48611002030" and answered["client"] == "Sieć Bursztyn"
    assert answered["started_at"] == "2026-11-25T10:00:00+01:00"
    assert (answered["outcome"], answered["wait_seconds"], answered["talk_seconds"]) == \
        ("answered", 12, 95)
    assert answered["technician"] == "anna.kowalska@jantar.pl"
    assert answered["direction"] == "in" and answered["callee"] == "500"
    assert (calls["A2"]["caller"], calls["A2"]["outcome"], calls["A2"]["wait_seconds"]) == \
        ("+48600123456", "missed", 41)
    assert (calls["A3"]["outcome"], calls["A3"]["wait_seconds"]) == ("abandoned", 65)
    assert calls["A1"]["source_line"].endswith("2026-11-25.csv:2")


def test_raw_row_keeps_their_polish_column_names(tmp_path, calls_config, store):
    folder = tmp_path / "cdr"
    write_export(folder / "a.csv", [row("B1", "2026-11-25 10:00:00", "0611002030", "Odebrane")])
    config = calls_config(pbx_sources=[orange_source(folder)])
    run_source(config, store, "orange", NOW)
    from daemon.store.models import Call
    with store.transaction() as session:
        raw = session.query(Call).one().raw
    assert raw["Numer dzwoniącego"] == "0611002030" and raw["Id połączenia"] == "B1"


def test_the_batch_writer_stores_the_text_an_orm_insert_stores(tmp_path, calls_config, store):
    """The writer converts values itself (raw to JSON, instants to the column's text); the
    same calls added through the ORM must give the same stored text, byte for byte."""
    from sqlalchemy import text

    from daemon.store.models import Call
    folder = tmp_path / "cdr"
    write_export(folder / "a.csv", [
        row("Q1", "2026-11-25 10:00:00", "0611002030", "Odebrane", extension="101"),
        row('Q"2', "2026-10-25 02:30:00.250001", "Zastrzeżony", "Nieodebrane",
            extension='ą "x" \\ \t\x1f\u2028 😀'),
        row("Q3", "2026-03-29T02:30:00+05:30", "+48 61 100 20 30", "Porzucone", wait="1:05")],
        encoding="utf-8")
    config = calls_config(pbx_sources=[orange_source(folder, encoding="utf-8")],
                          calls=calls_section())
    assert run_source(config, store, "orange", NOW).imported == 3
    columns = [c.key for c in Call.__table__.columns if c.key not in ("id", "source")]
    with store.transaction() as session:
        for call in session.query(Call).filter(Call.source == "orange").all():
            session.add(Call(source="orm", **{name: getattr(call, name) for name in columns}))

    def stored(source: str) -> dict[str, tuple]:
        with store.transaction() as session:
            return {r[0]: tuple(r[1:]) for r in session.execute(text(
                "SELECT call_id, CAST(raw AS TEXT), CAST(started_at AS TEXT), "
                "CAST(imported_at AS TEXT), CAST(callback_due AS TEXT) FROM calls "
                "WHERE source = :source"), {"source": source})}

    written, reference = stored("orange"), stored("orm")
    assert sorted(written) == ['Q"2', "Q1", "Q3"] and written == reference
    assert "\\u0105 \\\"x\\\" \\\\ \\t\\u001f\\u2028 \\ud83d\\ude00" in written['Q"2'][0]


def test_dst_days_in_warsaw(tmp_path, calls_config, store):
    """29 March 2026: 02:00-03:00 does not exist; 25 October 2026: 02:00-03:00 happens twice."""
    folder = tmp_path / "cdr"
    write_export(folder / "dst.csv", [
        row("M1", "29.03.2026 01:30:00", "0611002030", "Odebrane"),
        row("M2", "29.03.2026 02:30:00", "0611002030", "Odebrane"),   # skipped hour
        row("M3", "29.03.2026 03:30:00", "0611002030", "Odebrane"),
        row("O1", "25.10.2026 01:30:00", "0611002030", "Odebrane"),
        row("O2", "25.10.2026 02:30:00", "0611002030", "Odebrane"),   # repeated hour
        row("O3", "25.10.2026 03:30:00", "0611002030", "Odebrane"),
    ])
    config = calls_config(pbx_sources=[orange_source(folder, date_format="%d.%m.%Y %H:%M:%S")])
    run_source(config, store, "orange", NOW)
    started = {c["call_id"]: c["started_at"] for c in stored_calls(store, UTC)}
    assert started == {
        "M1": "2026-03-29T00:30:00+00:00",
        "M2": "2026-03-29T01:30:00+00:00",   # read with the winter offset: 03:30 summer time
        "M3": "2026-03-29T01:30:00+00:00",
        "O1": "2026-10-24T23:30:00+00:00",
        "O2": "2026-10-25T00:30:00+00:00",   # its first occurrence, summer time
        "O3": "2026-10-25T02:30:00+00:00",
    }
    shown = {c["call_id"]: c["started_at"] for c in stored_calls(store)}
    assert shown["O2"] == "2026-10-25T02:30:00+02:00" and shown["O3"] == "2026-10-25T03:30:00+01:00"


def test_times_with_an_offset_are_taken_as_written(tmp_path, calls_config, store):
    folder = tmp_path / "cdr"
    write_export(folder / "a.csv", [
        row("Z1", "2026-10-25T02:30:00+01:00", "0611002030", "Odebrane"),  # the second 02:30
        row("Z2", "2026-10-25T01:00:00Z", "0611002030", "Odebrane")])
    config = calls_config(pbx_sources=[orange_source(folder)])
    run_source(config, store, "orange", NOW)
    started = {c["call_id"]: c["started_at"] for c in stored_calls(store, UTC)}
    assert started == {"Z1": "2026-10-25T01:30:00+00:00", "Z2": "2026-10-25T01:00:00+00:00"}


@pytest.mark.parametrize("withheld", ["", "Anonymous", "unknown", "Zastrzeżony"])
def test_withheld_caller_is_kept_without_a_number(tmp_path, calls_config, store, withheld):
    folder = tmp_path / "cdr"
    write_export(folder / "a.csv", [row("W1", "2026-11-25 10:00:00", withheld, "Nieodebrane")])
    config = calls_config(pbx_sources=[orange_source(folder)], calls=calls_section())
    result = run_source(config, store, "orange", NOW)
    [call] = stored_calls(store)
    assert call["caller"] is None and call["withheld"] is True and call["outcome"] == "missed"
    assert call["callback"] is None and call["ticket"] is None   # no one to call back
    assert result.callbacks == {}


def test_malformed_rows_are_reported_with_file_and_line_and_the_rest_imports(
        tmp_path, calls_config, store):
    folder = tmp_path / "cdr"
    path = folder / "bad.csv"
    write_export(path, [
        row("G1", "2026-11-25 10:00:00", "0611002030", "Odebrane"),
        row("G2", "2026-13-45 10:00:00", "0611002030", "Odebrane"),          # line 3
        row("G3", "2026-11-25 10:01:00", "0611002030", "Przekierowane"),     # line 4
        ["G4", "2026-11-25 10:02:00"],                                        # line 5
        row("G5", "2026-11-25 10:03:00", "0611002030", "Odebrane", wait="dużo"),  # line 6
        row("G6", "2026-11-25 10:04:00", "0611002030", "Nieodebrane"),
    ])
    config = calls_config(pbx_sources=[orange_source(folder)])
    result = run_source(config, store, "orange", NOW)
    assert (result.read, result.imported, result.malformed) == (6, 2, 4)
    errors = [(e["file"], e["line"]) for e in result.call_import_errors]
    assert errors == [(str(path), 3), (str(path), 4), (str(path), 5), (str(path), 6)]
    messages = [e["error"] for e in result.call_import_errors]
    assert "started_at" in messages[0] and "'Przekierowane'" in messages[1]
    assert "fields" in messages[2] and "wait_seconds" in messages[3]
    assert sorted(c["call_id"] for c in stored_calls(store)) == ["G1", "G6"]
    assert result.as_dict()["call_import_errors"][0] == {
        "file": str(path), "line": 3, "error": messages[0]}


def test_bytes_not_in_the_encoding_are_a_bad_row_not_a_bad_file(tmp_path, calls_config, store):
    folder = tmp_path / "cdr"
    path = write_export(folder / "a.csv", [
        row("U1", "2026-11-25 10:00:00", "0611002030", "Odebrane"),
        row("U2", "2026-11-25 10:01:00", "0611002030", "Odebrane")], encoding="utf-8")
    path.write_bytes(path.read_bytes().replace(b"U2", b"U\xff2"))
    config = calls_config(pbx_sources=[orange_source(folder, encoding="utf-8")])
    result = run_source(config, store, "orange", NOW)
    assert result.imported == 1 and result.call_import_errors[0]["line"] == 3
    assert "utf-8" in result.call_import_errors[0]["error"]


def test_a_file_without_a_mapped_column_is_reported_once_and_read_after_the_fix(
        tmp_path, calls_config, store):
    folder = tmp_path / "cdr"
    write_export(folder / "a.csv", [row("H1", "2026-11-25 10:00:00", "0611002030", "Odebrane")])
    wrong = orange_source(folder, columns={**orange_source(folder)["columns"],
                                           "outcome": "Wynik"})
    result = run_source(calls_config(pbx_sources=[wrong]), store, "orange", NOW)
    assert result.imported == 0 and result.call_import_errors[0]["line"] == 1
    assert "'Wynik' (outcome)" in result.call_import_errors[0]["error"]
    result = run_source(calls_config(pbx_sources=[orange_source(folder)]), store, "orange", NOW)
    assert result.imported == 1


def test_cursor_resumes_an_appended_file_and_rereads_a_rewritten_one(tmp_path, calls_config,
                                                                     store):
    folder = tmp_path / "cdr"
    path = folder / "today.csv"
    first = [row(f"C{n}", f"2026-11-25 10:0{n}:00", "0611002030", "Odebrane") for n in range(3)]
    write_export(path, first)
    config = calls_config(pbx_sources=[orange_source(folder)])
    assert run_source(config, store, "orange", NOW).imported == 3
    assert run_source(config, store, "orange", NOW).read == 0          # unchanged: not read

    more = [row("C3", "2026-11-25 10:03:00", "0611002030", "Odebrane")]
    write_export(path, first + more)                                    # appended
    result = run_source(config, store, "orange", NOW)
    assert (result.read, result.imported, result.duplicates) == (1, 1, 0)

    # Regenerated with a late record in the middle: read again, only the new one stored.
    late = [row("C9", "2026-11-25 10:01:30", "0611002030", "Nieodebrane")]
    write_export(path, first[:2] + late + first[2:] + more)
    result = run_source(config, store, "orange", NOW)
    assert (result.read, result.imported, result.duplicates) == (5, 1, 4)
    assert len(stored_calls(store)) == 5


def test_a_record_in_two_files_is_stored_once(tmp_path, calls_config, store):
    folder = tmp_path / "cdr"
    write_export(folder / "a.csv", [row("D1", "2026-11-25 10:00:00", "0611002030", "Odebrane")])
    write_export(folder / "b.csv", [row("D1", "2026-11-25 10:00:00", "0611002030", "Odebrane"),
                                    row("D1", "2026-11-25 10:00:00", "0611002030", "Odebrane")])
    result = run_source(calls_config(pbx_sources=[orange_source(folder)]), store, "orange", NOW)
    assert (result.read, result.imported, result.duplicates) == (3, 1, 2)


def test_export_without_call_ids_is_deduplicated_by_content(tmp_path, calls_config, store):
    folder = tmp_path / "cdr"
    columns = {k: v for k, v in orange_source(folder)["columns"].items() if k != "call_id"}
    rows = [row("", "2026-11-25 10:00:00", "0611002030", "Odebrane"),
            row("", "2026-11-25 10:01:00", "0611002030", "Odebrane")]
    write_export(folder / "a.csv", rows)
    write_export(folder / "b.csv", rows)
    result = run_source(calls_config(pbx_sources=[orange_source(folder, columns=columns)]),
                        store, "orange", NOW)
    assert (result.imported, result.duplicates) == (2, 2)


def test_import_one_file_by_hand_leaves_the_cursor_alone(tmp_path, calls_config, store):
    folder, other = tmp_path / "cdr", tmp_path / "archive" / "old.csv"
    write_export(other, [row("F1", "2026-11-20 10:00:00", "0611002030", "Odebrane")])
    config = calls_config(pbx_sources=[orange_source(folder)])
    seen = []
    result = import_file(config, store, "orange", str(other), "csv", NOW,
                         progress=lambda name, done, total: seen.append((done, total)))
    assert result.imported == 1 and seen[-1][0] == seen[-1][1] == other.stat().st_size
    with pytest.raises(CallImportError, match="no pbx source named 'nope'"):
        import_file(config, store, "nope", str(other), "csv", NOW)


# -- Asterisk -----------------------------------------------------------------------------
def cdr(uniqueid, src, dst, start, answer, end, duration, billsec, disposition, *,
        dstchannel="", lastapp="Dial", lastdata="", clid=""):
    cells = ["", src, dst, "from-trunk", clid or f'"" <{src}>', "SIP/trunk-0001", dstchannel,
             lastapp, lastdata, start, answer, end, str(duration), str(billsec), disposition,
             "DOCUMENTATION", uniqueid, ""]
    return ",".join(c if c.isdigit() else '"' + c.replace('"', '""') + '"' for c in cells)


def asterisk_source(tmp_path, queue_log=True) -> dict:
    source = {"name": "asterisk", "kind": "asterisk", "every": "1m",
              "path": str(tmp_path / "cdr-csv" / "Master.csv"), "timezone": "Europe/Warsaw"}
    if queue_log:
        source["queue_log"] = str(tmp_path / "queue_log")
    return source


def epoch(text: str) -> int:
    return int(local(text).timestamp())


def test_asterisk_master_csv_with_queue_log(tmp_path, calls_config, store):
    (tmp_path / "cdr-csv").mkdir()
    master = tmp_path / "cdr-csv" / "Master.csv"
    master.write_text("\n".join([
        # answered in the queue by extension 101: CDR ring time is not the queue wait
        cdr("1764061200.1", "0611002030", "500", "2026-11-25 10:00:00", "2026-11-25 10:00:01",
            "2026-11-25 10:03:01", 181, 180, "ANSWERED", dstchannel="SIP/101-00000002",
            lastapp="Queue", lastdata="wsparcie,t"),
        # Asterisk answered it for the queue; the caller gave up: queue_log says ABANDON
        cdr("1764061500.2", "600123456", "500", "2026-11-25 10:05:00", "2026-11-25 10:05:00",
            "2026-11-25 10:05:40", 40, 40, "ANSWERED", lastapp="Queue", lastdata="wsparcie"),
        cdr("1764061800.3", "", "500", "2026-11-25 10:10:00", "", "2026-11-25 10:10:30",
            30, 0, "NO ANSWER", clid="Anonymous"),
        cdr("1764062100.4", "101", "0600123456", "2026-11-25 10:15:00", "2026-11-25 10:15:08",
            "2026-11-25 10:17:08", 128, 120, "ANSWERED", dstchannel="SIP/trunk-0003"),
        cdr("1764062400.5", "0612223344", "500", "2026-11-25 10:20:00", "",
            "2026-11-25 10:20:02", 2, 0, "BUSY"),
        '"","0611002030","500","from-trunk"',                           # line 6: cut short
        cdr("1764062700.6", "0612223344", "500", "2026-11-25 10:25:00", "",
            "2026-11-25 10:25:20", 20, 0, "NO ANSWER", lastapp="VoiceMail"),
    ]) + "\n")
    (tmp_path / "queue_log").write_text("\n".join([
        f"{epoch('2026-11-25 10:00:00')}|1764061200.1|wsparcie|NONE|ENTERQUEUE||0611002030|1",
        f"{epoch('2026-11-25 10:00:14')}|1764061200.1|wsparcie|SIP/101|CONNECT|14|1764061214.9|3",
        f"{epoch('2026-11-25 10:03:01')}|1764061200.1|wsparcie|SIP/101|COMPLETECALLER|14|167|1",
        f"{epoch('2026-11-25 10:05:00')}|1764061500.2|wsparcie|NONE|ENTERQUEUE||600123456|1",
        f"{epoch('2026-11-25 10:05:40')}|1764061500.2|wsparcie|NONE|ABANDON|1|1|38",
        # a call whose CDR line is not written yet
        f"{epoch('2026-11-25 10:30:00')}|1764063000.7|wsparcie|NONE|ENTERQUEUE||0611002030|1",
        f"{epoch('2026-11-25 10:31:00')}|1764063000.7|wsparcie|NONE|EXITWITHTIMEOUT|1|1|60",
    ]) + "\n")
    config = calls_config(pbx_sources=[asterisk_source(tmp_path)], calls=calls_section())

    result = run_source(config, store, "asterisk", NOW)

    assert (result.imported, result.malformed, result.queue_updates) == (6, 1, 2)
    assert result.call_import_errors[0]["line"] == 6
    calls = by_id(stored_calls(store))
    queued = calls["1764061200.1"]
    assert (queued["outcome"], queued["wait_seconds"], queued["talk_seconds"]) == \
        ("answered", 14, 167)
    assert queued["queue"] == "wsparcie" and queued["technician"] == "anna.kowalska@jantar.pl"
    assert queued["client"] == "Sieć Bursztyn" and queued["answered_at"] == \
        "2026-11-25T10:00:01+01:00"
    abandoned = calls["1764061500.2"]
    assert (abandoned["outcome"], abandoned["wait_seconds"], abandoned["talk_seconds"]) == \
        ("abandoned", 38, 0)
    assert abandoned["caller"] == "+48600123456"
    withheld = calls["1764061800.3"]
    assert (withheld["caller"], withheld["outcome"], withheld["wait_seconds"]) == \
        (None, "missed", 30)
    out = calls["1764062100.4"]
    assert (out["direction"], out["caller"], out["callee"], out["talk_seconds"]) == \
        ("out", "101", "+48600123456", 120)
    assert out["technician"] == "anna.kowalska@jantar.pl"
    assert calls["1764062400.5"]["outcome"] == "busy"
    assert calls["1764062700.6"]["outcome"] == "voicemail"

    # The CDR line of the queued call arrives later: the kept queue_log facts apply then.
    with master.open("a") as handle:
        handle.write(cdr("1764063000.7", "0611002030", "500", "2026-11-25 10:30:00",
                         "2026-11-25 10:30:00", "2026-11-25 10:31:00", 60, 60, "ANSWERED",
                         lastapp="Queue", lastdata="wsparcie") + "\n")
    result = run_source(config, store, "asterisk", NOW)
    assert (result.read, result.imported, result.queue_updates) == (1, 1, 1)
    late = by_id(stored_calls(store))["1764063000.7"]
    assert (late["outcome"], late["wait_seconds"], late["talk_seconds"]) == ("missed", 60, 0)


def test_asterisk_file_imported_by_hand(tmp_path, calls_config, store):
    path = tmp_path / "Master.csv"
    path.write_text(cdr("1.1", "0611002030", "500", "2026-11-25 10:00:00", "",
                        "2026-11-25 10:00:10", 10, 0, "NO ANSWER") + "\n")
    config = calls_config(pbx_sources=[asterisk_source(tmp_path, queue_log=False)])
    result = import_file(config, store, "asterisk", str(path), "asterisk", NOW)
    assert result.imported == 1 and stored_calls(store)[0]["outcome"] == "missed"


# -- http-json ----------------------------------------------------------------------------
def api_record(call_id: str, start: str, caller: str = "0611002030", status: str = "answered",
               wait: int = 5, talk: int = 60) -> dict:
    return {"id": call_id, "start": local(start).isoformat(),
            "parties": {"from": caller, "to": "500"}, "status": status,
            "times": {"wait": wait, "talk": talk}}


def http_source(url: str, paging: str, **extra) -> dict:
    source = {"name": "api", "kind": "http-json", "url": url, "paging": paging, "every": "5m",
              "records_path": "data.calls", "since_param": "since", "overlap": "1h",
              "columns": {"call_id": "id", "started_at": "start", "caller": "parties.from",
                          "callee": "parties.to", "outcome": "status",
                          "wait_seconds": "times.wait", "talk_seconds": "times.talk"}}
    if paging in ("page", "offset"):
        source["page_size"] = 2
    if paging == "next":
        source["next_path"] = "links.next"
    source.update(extra)
    return source


AUTH = {"page": ("Bearer s3cret", {"auth": "bearer", "token": "s3cret"}),
        "offset": ("Basic " + base64.b64encode(b"jantar:tajne").decode(),
                   {"auth": "basic", "username": "jantar", "password": "tajne"}),
        "next": (None, {})}


@pytest.mark.parametrize("paging", ["page", "offset", "next"])
def test_http_json_pages_late_record_and_duplicate(calls_config, store, paging):
    header, auth = AUTH[paging]
    records = [api_record("r1", "2026-11-25 09:00"), api_record("r2", "2026-11-25 09:30"),
               api_record("r2", "2026-11-25 09:30"),              # the API repeats a record
               api_record("r3", "2026-11-25 10:00", status="missed", talk=0),
               api_record("r4", "2026-11-25 10:30")]
    with CallApi(records, paging, auth=header) as api:
        config = calls_config(pbx_sources=[http_source(api.url, paging, **auth)])
        first = run_source(config, store, "api", NOW)
        assert (first.read, first.imported, first.duplicates) == (5, 4, 1)
        assert "since" not in api.requests[0]
        assert len(api.requests) >= 3                              # it paged

        # A record of 10:15 is published after the 10:30 one was fetched.
        api.records.insert(4, api_record("r-late", "2026-11-25 10:15", caller="600123456"))
        api.requests.clear()
        second = run_source(config, store, "api", NOW)
        assert second.imported == 1 and second.duplicates == 4     # r2 twice, r3, r4 again
        assert api.requests[0]["since"] == "2026-11-25T08:30:00Z"  # newest (09:30Z) less 1h
    calls = by_id(stored_calls(store))
    assert sorted(calls) == ["r-late", "r1", "r2", "r3", "r4"]
    assert calls["r-late"]["caller"] == "+48600123456"
    assert calls["r3"]["outcome"] == "missed" and calls["r1"]["wait_seconds"] == 5


def test_http_json_without_overlap_would_miss_the_late_record(calls_config, store):
    """The overlap is what catches it: with none, the late record is never asked for."""
    records = [api_record("r1", "2026-11-25 09:00"), api_record("r4", "2026-11-25 10:30")]
    with CallApi(records, "page") as api:
        config = calls_config(pbx_sources=[http_source(api.url, "page", overlap="0s")])
        run_source(config, store, "api", NOW)
        api.records.insert(1, api_record("r-late", "2026-11-25 10:15"))
        assert run_source(config, store, "api", NOW).imported == 0


def test_http_json_failure_is_recorded_and_the_cursor_stays(calls_config, store):
    with CallApi([api_record("r1", "2026-11-25 09:00")], "page", auth="Bearer right") as api:
        config = calls_config(pbx_sources=[http_source(api.url, "page", auth="bearer",
                                                       token="wrong")])
        with pytest.raises(CallImportError, match="HTTP 401"):
            run_source(config, store, "api", NOW)
    from daemon.ingest.calls.run import load_state
    state = load_state(store, "api")
    assert "HTTP 401" in state.last_error and state.cursor == {}
    assert state.last_run_at == NOW and state.last_success_at is None


def test_http_json_bad_record_is_reported_by_page_and_place(calls_config, store):
    records = [api_record("r1", "2026-11-25 09:00"), {"id": "r2", "start": "yesterday"}]
    with CallApi(records, "page") as api:
        config = calls_config(pbx_sources=[http_source(api.url, "page", page_size=10)])
        result = run_source(config, store, "api", NOW)
    assert result.imported == 1
    [error] = result.call_import_errors
    assert error["file"].startswith(api.url) and error["line"] == 2
    assert "started_at" in error["error"]


# -- the daemon ---------------------------------------------------------------------------
def test_daemon_runs_each_source_as_a_job_on_its_schedule(tmp_path, calls_config, store):
    from datetime import timedelta

    from daemon.clock import Clock
    from daemon.service import Daemon
    folder = tmp_path / "cdr"
    write_export(folder / "a.csv", [row("J1", "2026-11-25 10:00:00", "0611002030", "Nieodebrane")])
    config = calls_config(pbx_sources=[orange_source(folder, every="2m")], calls=calls_section())
    daemon = Daemon(config, store, Clock(start=NOW))
    [job] = [j for j in daemon.jobs if j.name == "pbx orange"]
    assert job.every == timedelta(minutes=2)
    report = job.run()
    assert report["imported"] == 1 and report["callbacks"] == {"opened": 1, "decided": 1}
    assert job.run()["read"] == 0       # safe to run again: nothing new


# -- the README's worked example ---------------------------------------------------------------
README_EXPORT = """\
Nr;Początek;Koniec;Od;Do;Kierunek;Czekał [s];Rozmowa;Wynik;Agent
88213;25.11.2026 09:58:12;25.11.2026 10:01:40;0611002030;226 000 500;przychodzące;12;0:03:16;ODEBRANO;101
88214;25.11.2026 10:03:05;25.11.2026 10:03:45;Zastrzeżony;226 000 500;przychodzące;40;0:00:00;NIEODEBRANO;
88215;25.11.2026 10:10:00;;0600123456;226 000 500;przychodzące;25;;PORZUCONO;
88216;25.11.2026 10:20:31;25.11.2026 10:22:02;101;0600123456;wychodzące;0;0:01:31;ODEBRANO;101
"""
README_SOURCE = {
    "name": "nowa-centralka", "kind": "csv", "every": "10m", "encoding": "windows-1250",
    "delimiter": ";", "date_format": "%d.%m.%Y %H:%M:%S",
    "columns": {"call_id": "Nr", "started_at": "Początek", "ended_at": "Koniec", "caller": "Od",
                "callee": "Do", "direction": "Kierunek", "wait_seconds": "Czekał [s]",
                "talk_seconds": "Rozmowa", "outcome": "Wynik", "extension": "Agent"},
    "outcomes": {"ODEBRANO": "answered", "NIEODEBRANO": "missed", "PORZUCONO": "abandoned"},
    "directions": {"przychodzące": "in", "wychodzące": "out"},
}


def test_the_readme_worked_example(tmp_path, config_file, capsys):
    """README "Mapping a new PBX export": this file, this configuration, these calls."""
    import json

    from daemon.cli import main
    export = tmp_path / "export" / "polaczenia_2026-11-25.csv"
    export.parent.mkdir()
    export.write_bytes(README_EXPORT.replace("\n", "\r\n").encode("windows-1250"))
    config = config_file(pbx_sources=[{**README_SOURCE, "path": str(export.parent / "*.csv")}],
                         calls={"extensions": {"101": "anna.kowalska@jantar.pl"}})
    assert main(["--config", str(config), "check-config"]) == 0
    assert main(["--config", str(config), "--now", "2026-11-25T11:00:00+01:00", "calls",
                 "import", str(export), "--source", "nowa-centralka"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "nowa-centralka: 4 calls imported"
    assert main(["--config", str(config), "calls", "--json", "--from", "2026-11-25"]) == 0
    calls = by_id(json.loads(capsys.readouterr().out))
    assert {k: calls["88213"][k] for k in ("direction", "caller", "callee", "technician",
                                            "wait_seconds", "talk_seconds", "outcome",
                                            "started_at", "ended_at")} == {
        "direction": "in", "caller": "+48611002030", "callee": "+48226000500",
        "technician": "anna.kowalska@jantar.pl", "wait_seconds": 12, "talk_seconds": 196,
        "outcome": "answered", "started_at": "2026-11-25T09:58:12+01:00",
        "ended_at": "2026-11-25T10:01:40+01:00"}
    assert (calls["88214"]["caller"], calls["88214"]["withheld"], calls["88214"]["outcome"]) == \
        (None, True, "missed")
    assert (calls["88215"]["outcome"], calls["88215"]["wait_seconds"],
            calls["88215"]["callback"], calls["88215"]["ticket"]) == \
        ("abandoned", 25, "followed", None)
    assert (calls["88216"]["direction"], calls["88216"]["callee"],
            calls["88216"]["technician"]) == ("out", "+48600123456", "anna.kowalska@jantar.pl")


def test_an_import_waits_for_the_disk_only_at_the_end_of_a_file(tmp_path, calls_config, store,
                                                                 monkeypatch):
    """Full batches commit without the WAL flush (PostgreSQL); the file's last batch waits
    for it, and that makes the earlier ones durable before the cursor moves past the file.
    Read back inside each batch's own transaction: the setting its commit will use."""
    from daemon.ingest.calls import writer
    monkeypatch.setattr(writer, "BATCH_SIZE", 3)
    seen = []
    real = writer._CallInsert.execute

    def execute(self, connection, values, wait_for_flush=True):
        inserted = real(self, connection, values, wait_for_flush)
        setting = connection.exec_driver_sql("SHOW synchronous_commit").scalar() \
            if self.postgresql else None
        seen.append((len(values), wait_for_flush, setting))
        return inserted

    monkeypatch.setattr(writer._CallInsert, "execute", execute)
    folder = tmp_path / "cdr"
    write_export(folder / "a.csv", [row(f"W{i}", f"2026-11-25 10:0{i}:00", "0611002030",
                                        "Odebrane") for i in range(7)])
    result = run_source(calls_config(pbx_sources=[orange_source(folder)]), store, "orange", NOW)
    assert result.imported == 7 and [n for n, *_ in seen] == [3, 3, 1]
    assert [durable for _, durable, _ in seen] == [False, False, True]
    if store.backend == "postgresql":
        assert [setting for *_, setting in seen] == ["off", "off", "on"]
