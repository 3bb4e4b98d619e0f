"""`helpdesk ingest --archive`: exported mail imported as history, on both backends.

History is filed onto closed, imported tickets dated by the mail itself, threaded among
itself and with the store as live mail is, and sends nothing; importing again changes
nothing, a run killed midway is finished by the next, and a live reply afterwards
follows the reopen rules and is acknowledged (issue 20, point 3).
"""
from __future__ import annotations

import json
import mailbox
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from daemon.cli import main
from daemon.clock import Clock
from daemon.config import load as load_config
from daemon.ingest import history_parse as history_module
from daemon.pipeline import Pipeline
from daemon.store import Store
from daemon.store.models import Message, OutboxMail, RawMessage, Ticket
from tests.callsupport import calls_section, export_bytes, orange_source, row
from tests.conftest import NOW
from tests.mailfactory import deliver, make_mail

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def archive(capsys, config, *paths, workers: str | None = "0") -> dict:
    options = ["--parse-workers", workers] if workers is not None else []
    code, out, err = run(capsys, "--config", str(config), "ingest", "--archive",
                         *map(str, paths), "--json", *options)
    assert code == 0, err
    return json.loads(out)


def tickets(capsys, config) -> list[dict]:
    code, out, _ = run(capsys, "--config", str(config), "tickets", "--json")
    assert code == 0
    return json.loads(out)


def ticket(capsys, config, number: str) -> dict:
    code, out, _ = run(capsys, "--config", str(config), "ticket", number, "--json")
    assert code == 0
    return json.loads(out)


def old_mail(*, message_id: str | None, subject: str = "Kasa nr 3 nie drukuje",
             sender: str = "Jan Nowak <jan.nowak@bursztyn.pl>", date: str | None = None,
             received: str | None = None, in_reply_to: str | None = None,
             cc: str | None = None, body: str = "Dzień dobry, kasa nie drukuje.") -> bytes:
    """A mail as an old system exported it: only the headers given."""
    lines = []
    if received:
        lines.append(f"Received: from mx.bursztyn.pl by mx.jantar.pl; {received}")
    lines += [f"From: {sender}", "To: sklep@jantar.pl", f"Subject: {subject}"]
    if cc:
        lines.append(f"Cc: {cc}")
    if date:
        lines.append(f"Date: {date}")
    if message_id:
        lines.append(f"Message-ID: <{message_id}>")
    if in_reply_to:
        lines += [f"In-Reply-To: <{in_reply_to}>", f"References: <{in_reply_to}>"]
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
              "Content-Transfer-Encoding: 8bit"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def write_mbox(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    """An mbox of (From_ line, mail) written by hand, so the From_ lines are ours."""
    with open(path, "wb") as out:
        for from_line, raw in entries:
            out.write(from_line.encode() + b"\n" + raw.replace(b"\r\n", b"\n") + b"\n")
    return path


def outbox_count(store: Store) -> int:
    with store.transaction() as session:
        return session.scalar(select(func.count(OutboxMail.id)))


def at(text: str) -> str:
    """An instant as the JSON views show it (Europe/Warsaw)."""
    from zoneinfo import ZoneInfo
    return datetime.fromisoformat(text).astimezone(ZoneInfo("Europe/Warsaw")).isoformat()


@pytest.fixture
def store(db_url):
    store = Store(db_url)
    yield store
    store.dispose()


# ----------------------------------------------------------------- what history is


def test_an_mbox_is_imported_as_closed_history_dated_by_its_mail_and_sends_nothing(
        tmp_path, config_file, capsys, store):
    config = config_file()
    mbox = write_mbox(tmp_path / "stare.mbox", [
        ("From jan.nowak@bursztyn.pl Fri Mar  1 08:00:00 2024",
         old_mail(message_id="a1@bursztyn.pl", date="Fri, 01 Mar 2024 09:15:00 +0100",
                  cc="kierownik@bursztyn.pl")),
        ("From jan.nowak@bursztyn.pl Sat Mar  2 08:00:00 2024",
         old_mail(message_id="a2@bursztyn.pl", subject="Re: Kasa nr 3 nie drukuje",
                  date="Sat, 02 Mar 2024 10:00:00 +0100", in_reply_to="a1@bursztyn.pl")),
        # No Date: the newest Received says when it came.
        ("From ola@kaszub.com.pl Mon Apr  1 08:00:00 2024",
         old_mail(message_id="b1@kaszub.com.pl", sender="ola@kaszub.com.pl",
                  subject="Terminal", received="Mon, 01 Apr 2024 12:30:00 +0200")),
        # Neither: the mbox From_ line does.
        ("From adam@bursztyn.pl Mon Jan 15 08:30:00 2024",
         old_mail(message_id="c1@bursztyn.pl", sender="adam@bursztyn.pl", subject="Waga")),
    ])

    summary = archive(capsys, config, mbox, workers=None)  # the default: a parsing process

    assert summary == {"files": {"saved": 4}, "history": {"imported": 4, "tickets": 3}}
    listed = {t["subject"]: t for t in tickets(capsys, config)}
    assert set(listed) == {"Kasa nr 3 nie drukuje", "Terminal", "Waga"}
    for summary_row in listed.values():
        assert summary_row["imported"] is True and summary_row["status"] == "closed"
        assert summary_row["first_response_due"] is None and summary_row["resolution_due"] is None
        assert summary_row["sla_state"] is None
    kasa = ticket(capsys, config, listed["Kasa nr 3 nie drukuje"]["number"])
    assert kasa["imported"] is True
    assert kasa["created_at"] == at("2024-03-01T09:15:00+01:00")
    assert kasa["updated_at"] == at("2024-03-02T10:00:00+01:00")
    assert [m["created_at"] for m in kasa["messages"]] == [at("2024-03-01T09:15:00+01:00"),
                                                           at("2024-03-02T10:00:00+01:00")]
    assert [m["kind"] for m in kasa["messages"]] == ["customer", "customer"]
    assert kasa["cc"] == ["kierownik@bursztyn.pl"] and kasa["client"] == "Sieć Bursztyn"
    assert [e["action"] for e in kasa["events"]] == ["imported", "message_imported"]
    terminal = ticket(capsys, config, listed["Terminal"]["number"])
    assert terminal["created_at"] == at("2024-04-01T12:30:00+02:00")
    waga = ticket(capsys, config, listed["Waga"]["number"])
    assert waga["created_at"] == at("2024-01-15T08:30:00+00:00")

    assert outbox_count(store) == 0
    code, out, _ = run(capsys, "--config", str(config), "outbox", "--json")
    assert json.loads(out) == []
    with store.transaction() as session:
        assert session.scalar(select(func.count(Ticket.id)).where(
            Ticket.sla_alarm_at.is_not(None))) == 0
        assert dict(session.execute(select(RawMessage.status, func.count())
                                    .group_by(RawMessage.status)).all()) == {"processed": 4}


def test_maildir_and_eml_files_without_a_date_take_the_files_time(tmp_path, config_file,
                                                                  capsys):
    config = config_file()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    key = maildir.add(old_mail(message_id="md1@bursztyn.pl", subject="Z Maildira"))
    maildir_file = tmp_path / "Maildir" / maildir._lookup(key)
    eml = tmp_path / "stary.eml"
    eml.write_bytes(old_mail(message_id="eml1@bursztyn.pl", subject="Z pliku"))
    then = datetime(2023, 6, 5, 14, 0, tzinfo=timezone.utc).timestamp()
    os.utime(maildir_file, (then, then))
    os.utime(eml, (then + 3600, then + 3600))

    summary = archive(capsys, config, tmp_path / "Maildir", eml)

    assert summary["history"] == {"imported": 2, "tickets": 2}
    listed = {t["subject"]: t for t in tickets(capsys, config)}
    assert listed["Z Maildira"]["created_at"] == at("2023-06-05T14:00:00+00:00")
    assert listed["Z pliku"]["created_at"] == at("2023-06-05T15:00:00+00:00")
    assert all(t["imported"] and t["status"] == "closed" for t in listed.values())


def test_importing_the_same_files_again_changes_nothing(tmp_path, config_file, capsys):
    config = config_file()
    box = mailbox.mbox(tmp_path / "old.mbox")
    for n in range(4):
        box.add(old_mail(message_id=f"r{n}@bursztyn.pl", subject=f"Sklep {n}",
                         date="Tue, 05 Mar 2024 10:00:00 +0100",
                         in_reply_to="r0@bursztyn.pl" if n == 3 else None))
    box.flush()
    first = archive(capsys, config, tmp_path / "old.mbox")
    before = [ticket(capsys, config, t["number"]) for t in tickets(capsys, config)]

    again = archive(capsys, config, tmp_path / "old.mbox")

    assert first == {"files": {"saved": 4}, "history": {"imported": 4, "tickets": 3}}
    assert again == {"files": {"already stored": 4}, "history": {}}
    assert [ticket(capsys, config, t["number"]) for t in tickets(capsys, config)] == before


def test_history_saved_without_processing_is_imported_by_the_next_run(tmp_path, config_file,
                                                                      capsys, store):
    config = config_file()
    eml = tmp_path / "old.eml"
    eml.write_bytes(old_mail(message_id="np@bursztyn.pl", date="Fri, 01 Mar 2024 09:15:00 +0100"))
    code, out, err = run(capsys, "--config", str(config), "ingest", "--archive", str(eml),
                         "--no-process", "--json")
    assert code == 0, err
    assert json.loads(out) == {"files": {"saved": 1}, "history": {}}
    assert tickets(capsys, config) == []
    with store.transaction() as session:
        assert session.scalars(select(RawMessage.status)).all() == ["history"]

    assert archive(capsys, config, eml) == {"files": {"already stored": 1},
                                            "history": {"imported": 1, "tickets": 1}}
    [imported] = tickets(capsys, config)
    assert imported["imported"] is True and outbox_count(store) == 0


def test_a_running_daemon_imports_history_saved_without_processing(tmp_path, config_file,
                                                                    capsys, store):
    config = config_file()
    eml = tmp_path / "old.eml"
    eml.write_bytes(old_mail(message_id="daemon@bursztyn.pl",
                             date="Fri, 01 Mar 2024 09:15:00 +0100"))
    code, _, err = run(capsys, "--config", str(config), "ingest", "--archive", str(eml),
                       "--no-process", "--json")
    assert code == 0, err

    code, out, err = run(capsys, "--config", str(config), "run", "--once")

    assert code == 0, err
    [imported] = tickets(capsys, config)
    assert imported["imported"] is True and imported["status"] == "closed"
    assert outbox_count(store) == 0


# -------------------------------------------------------------- threading with the store


def test_history_threading_into_a_live_ticket_is_appended_and_changes_nothing_live(
        tmp_path, config_file, capsys, store, make_config, db_url):
    config = config_file()
    live = make_mail(message_id="<live1@bursztyn.pl>", subject="Drukarka fiskalna",
                     cc="kierownik@bursztyn.pl")
    deliver(store, make_config(db_url), live)
    [opened] = tickets(capsys, config)
    sent = outbox_count(store)
    assert opened["imported"] is False and sent >= 1
    mbox = write_mbox(tmp_path / "old.mbox", [
        # Someone the customer copied, answering by reference: tied, so on it, as live.
        ("From kierownik@bursztyn.pl Mon Nov 23 10:00:00 2026",
         old_mail(message_id="old-reply@bursztyn.pl", sender="kierownik@bursztyn.pl",
                  subject="Re: Drukarka fiskalna", date="Mon, 23 Nov 2026 10:00:00 +0100",
                  in_reply_to="live1@bursztyn.pl")),
        # Tagged with the live ticket by its own requester: on it, as live.
        ("From jan.nowak@bursztyn.pl Mon Nov 23 11:00:00 2026",
         old_mail(message_id="old-tag@bursztyn.pl", subject=f"[#{opened['number']}] jeszcze",
                  date="Mon, 23 Nov 2026 11:00:00 +0100")),
    ])

    summary = archive(capsys, config, mbox)

    assert summary["history"] == {"imported": 2}
    [after] = tickets(capsys, config)
    detail = ticket(capsys, config, after["number"])
    assert after["number"] == opened["number"] and after["imported"] is False
    assert after["status"] == opened["status"]
    assert after["cc"] == opened["cc"] == ["kierownik@bursztyn.pl"]
    assert after["first_response_due"] == opened["first_response_due"]
    assert [m["message_id"] for m in detail["messages"] if m["direction"] == "in"] == [
        "live1@bursztyn.pl", "old-reply@bursztyn.pl", "old-tag@bursztyn.pl"]
    assert detail["events"][-1]["action"] == "message_imported"
    assert outbox_count(store) == sent


@pytest.mark.parametrize("matched_by", ["tag", "reference"])
def test_a_mail_from_a_stranger_is_not_joined_to_that_ticket(
        tmp_path, config_file, capsys, store, make_config, db_url, matched_by):
    config = config_file()
    deliver(store, make_config(db_url), make_mail(message_id="<live2@bursztyn.pl>"))
    [opened] = tickets(capsys, config)
    eml = tmp_path / "obcy.eml"
    tagged = f"Re: [#{opened['number']}] moje pytanie"
    eml.write_bytes(old_mail(message_id="stranger@gmail.com", sender="obcy@gmail.com",
                             subject=tagged if matched_by == "tag" else "Re: moje pytanie",
                             in_reply_to="live2@bursztyn.pl" if matched_by == "reference"
                             else None,
                             date="Mon, 23 Nov 2026 10:00:00 +0100"))

    archive(capsys, config, eml)

    listed = {t["number"]: t for t in tickets(capsys, config)}
    assert len(listed) == 2 and listed[opened["number"]]["message_count"] == \
        opened["message_count"]
    [own] = [t for t in listed.values() if t["imported"]]
    assert own["requester"] == "obcy@gmail.com" and own["held"] is False
    assert ticket(capsys, config, own["number"])["events"][0]["detail"]["not_joined"] == \
        opened["number"]


def test_a_mail_the_store_holds_already_is_a_duplicate(tmp_path, config_file, capsys, store,
                                                       make_config, db_url):
    config = config_file()
    raw = make_mail(message_id="<twice@bursztyn.pl>")
    deliver(store, make_config(db_url), raw)
    [before] = tickets(capsys, config)
    eml = tmp_path / "twice.eml"
    eml.write_bytes(raw.replace(b"Dzie\xc5\x84 dobry", b"Dzien dobry"))  # other bytes, same mail

    assert archive(capsys, config, eml)["history"] == {"duplicate": 1}
    assert tickets(capsys, config) == [before]


def test_a_live_reply_to_history_opens_a_new_ticket_that_follows_it_and_is_acknowledged(
        tmp_path, config_file, capsys, store, make_config, db_url):
    config = config_file()
    eml = tmp_path / "old.eml"
    eml.write_bytes(old_mail(message_id="hist1@bursztyn.pl",
                             date="Fri, 01 Mar 2024 09:15:00 +0100"))
    archive(capsys, config, eml)
    [imported] = tickets(capsys, config)
    assert outbox_count(store) == 0

    deliver(store, make_config(db_url), make_mail(
        message_id="<live-reply@bursztyn.pl>", subject="Re: Kasa nr 3 nie drukuje",
        in_reply_to="<hist1@bursztyn.pl>", references="<hist1@bursztyn.pl>"))

    listed = {t["number"]: t for t in tickets(capsys, config)}
    [new] = [t for t in listed.values() if not t["imported"]]
    assert listed[imported["number"]]["status"] == "closed"
    assert listed[imported["number"]]["message_count"] == 1
    assert new["status"] == "new"
    detail = ticket(capsys, config, new["number"])
    follows = [e for e in detail["events"] if e["action"] == "follows"]
    assert follows and follows[0]["detail"]["previous"] == imported["number"]
    with store.transaction() as session:
        kinds = session.scalars(select(OutboxMail.kind).join(
            Ticket, Ticket.id == OutboxMail.ticket_id).where(Ticket.number == new["number"])).all()
    assert "ack" in kinds


# ------------------------------------------------------------------ failures


def test_unparseable_history_is_quarantined_and_a_retry_imports_it_as_history(
        tmp_path, config_file, capsys, store, monkeypatch):
    config = config_file()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "a.eml").write_bytes(b"no header line at all, just text\r\n")
    (tmp_path / "old" / "b.eml").write_bytes(old_mail(message_id="bug@bursztyn.pl",
                                                      date="Fri, 01 Mar 2024 09:15:00 +0100"))
    (tmp_path / "old" / "c.eml").write_bytes(old_mail(message_id="fine@bursztyn.pl",
                                                      subject="Inna sprawa",
                                                      date="Fri, 01 Mar 2024 09:16:00 +0100"))
    real_parse = history_module.parse_mail

    def buggy(raw, **options):
        if b"bug@bursztyn.pl" in raw:
            raise RuntimeError("a bug in a step")
        return real_parse(raw, **options)
    monkeypatch.setattr(history_module, "parse_mail", buggy)

    summary = archive(capsys, config, tmp_path / "old")

    assert summary["history"] == {"imported": 1, "quarantined": 2, "tickets": 1}
    code, out, _ = run(capsys, "--config", str(config), "quarantine", "--json")
    reasons = sorted(row["reason"] for row in json.loads(out))
    assert reasons[0].startswith("RuntimeError: a bug in a step")
    assert reasons[1].startswith("unparseable: no header lines")

    monkeypatch.setattr(history_module, "parse_mail", real_parse)  # the fix
    bug_id = next(row["id"] for row in json.loads(out) if "RuntimeError" in row["reason"])
    code, out, _ = run(capsys, "--config", str(config), "quarantine", "retry", str(bug_id))
    assert code == 0 and out.strip() == f"{bug_id}: processed"
    assert sorted(t["imported"] for t in tickets(capsys, config)) == [True, True]
    assert outbox_count(store) == 0


@pytest.mark.slow
def test_an_import_killed_midway_is_completed_by_the_next_run_and_nothing_is_twice(
        tmp_path, config_file, db_url):
    from benchmarks.generate_mbox import write_mbox as generate
    config = config_file()
    mbox = tmp_path / "archive.mbox"
    facts = generate(mbox, count=1200, attachment_share=0.05)
    reader = create_engine(db_url)

    def imported() -> int:
        with reader.connect() as connection:
            return connection.scalar(select(func.count(Message.id)))

    command = [sys.executable, "-m", "daemon.cli", "--config", str(config), "ingest",
               "--archive", str(mbox)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while imported() < 300 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # with its parsing process
        process.wait(timeout=30)
    midway = imported()
    assert 0 < midway < len(facts), "the kill should land while the archive is imported"

    done = subprocess.run(command + ["--json"], cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    with reader.connect() as connection:
        on = dict(connection.execute(select(Message.message_id, Message.ticket_id)).all())
        messages = connection.scalar(select(func.count(Message.id)))
        statuses = dict(connection.execute(select(RawMessage.status, func.count())
                                           .group_by(RawMessage.status)).all())
        tickets_ = connection.scalar(select(func.count(Ticket.id)))
        outbox = connection.scalar(select(func.count(OutboxMail.id)))
    reader.dispose()
    assert messages == len(on) == len(facts)
    assert statuses == {"processed": len(facts)}
    assert tickets_ == sum(f["new"] for f in facts) and outbox == 0
    replies = [f for f in facts if f["parent"]]
    assert replies and all(on[f["message_id"]] == on[f["parent"]] for f in replies)


# ------------------------------------------------------------------ reports


def test_imported_tickets_count_in_no_report_figure(tmp_path, config_file, capsys, store,
                                                    make_config, db_url):
    config = config_file()
    eml = tmp_path / "old.eml"
    eml.write_bytes(old_mail(message_id="rep1@bursztyn.pl",
                             date="Tue, 24 Nov 2026 09:15:00 +0100"))
    archive(capsys, config, eml)
    deliver(store, make_config(db_url), make_mail(message_id="<rep-live@bursztyn.pl>"), now=NOW)

    code, out, _ = run(capsys, "--config", str(config), "--now", "2026-11-30T12:00:00+01:00",
                       "report", "--from", "2026-11-23", "--to", "2026-11-29", "--json")

    assert code == 0
    totals = json.loads(out)["totals"]
    # The live one only: the imported one, dated 24 November, is inside the period too.
    assert totals["opened"] == 1 and totals["backlog"] == 1


def test_a_call_report_in_the_history_of_a_pbx_mailbox_files_calls_not_a_ticket(
        tmp_path, config_file, capsys, store):
    source = orange_source(tmp_path / "cdr", name="orange-mail", kind="mail",
                           mailbox="centralka@jantar.pl")
    del source["path"]
    config = config_file(mailboxes=[{"address": "sklep@jantar.pl"},
                                    {"address": "centralka@jantar.pl"}],
                         pbx_sources=[source], calls=calls_section())
    report = export_bytes([row("R1", "2024-03-01 10:01:00", "0600123456", "Odebrane")])
    eml = tmp_path / "raport.eml"
    eml.write_bytes(make_mail(sender="centralka@orange.pl", to="centralka@jantar.pl",
                              message_id="<raport@orange.pl>",
                              attachments=[("raport.csv", "text/csv", report)]))

    code, out, err = run(capsys, "--config", str(config), "ingest", "--archive", str(eml),
                         "--mailbox", "centralka@jantar.pl", "--json", "--parse-workers", "0")

    assert code == 0, err
    assert json.loads(out)["history"] == {"new mail": 1}   # handed to the pipeline
    Pipeline(load_config(config), store, Clock()).process_pending()
    with store.transaction() as session:
        [raw] = session.scalars(select(RawMessage)).all()
        assert raw.status == "processed" and raw.reason.startswith("PBX call report: 1 call")
    assert tickets(capsys, config) == [] and outbox_count(store) == 0
