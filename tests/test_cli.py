"""The `helpdesk` command: ingest files (eml, mbox, Maildir), list tickets, quarantine, --now."""
import json
import mailbox

import pytest

from daemon import pipeline as pipeline_module
from daemon.cli import main
from tests.mailfactory import make_mail


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def tickets(capsys, config) -> list[dict]:
    code, out, _ = run(capsys, "--config", str(config), "tickets", "--json")
    assert code == 0
    return json.loads(out)


def test_ingest_mbox_and_maildir_and_again_stores_nothing_twice(tmp_path, config_file, capsys):
    config = config_file()
    box = mailbox.mbox(tmp_path / "old.mbox")
    for n in range(3):
        box.add(make_mail(subject=f"Kasa {n} nie działa", message_id=f"<mbox{n}@bursztyn.pl>"))
    box.flush()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(make_mail(subject="Terminal płatniczy", message_id="<md@kaszub.com.pl>",
                          sender="kierownik@kaszub.com.pl"))
    code, out, _ = run(capsys, "--config", str(config), "ingest", str(tmp_path / "old.mbox"),
                       str(tmp_path / "Maildir"), "--json")
    assert code == 0
    assert json.loads(out) == {"files": {"saved": 4}, "processed": {"processed": 4}}
    listed = tickets(capsys, config)
    assert sorted(t["subject"] for t in listed) == ["Kasa 0 nie działa", "Kasa 1 nie działa",
                                                    "Kasa 2 nie działa", "Terminal płatniczy"]
    assert {t["client"] for t in listed} == {"Sieć Bursztyn", "Market Kaszub"}
    code, out, _ = run(capsys, "--config", str(config), "ingest", str(tmp_path / "old.mbox"), "--json")
    assert json.loads(out)["files"] == {"already stored": 3}
    assert len(tickets(capsys, config)) == 4


def test_ticket_json_has_the_documented_fields(tmp_path, config_file, capsys):
    config = config_file()
    eml = tmp_path / "a.eml"
    eml.write_bytes(make_mail(cc="kierownik@bursztyn.pl",
                              attachments=[("paragon.pdf", "application/pdf", b"%PDF-1.4 test")]))
    run(capsys, "--config", str(config), "ingest", str(eml))
    [summary] = tickets(capsys, config)
    for key in ("number", "subject", "status", "tier", "priority", "client", "requester", "channel",
                "mailbox", "created_at", "held", "message_count"):
        assert key in summary
    code, out, _ = run(capsys, "--config", str(config), "ticket", summary["number"], "--json")
    detail = json.loads(out)
    message, *ours = detail["messages"]
    assert [m["kind"] for m in ours] == ["system", "system"]  # acknowledgement, coordinator notice
    assert message["direction"] == "in" and message["kind"] == "customer"
    assert message["from"] == "jan.nowak@bursztyn.pl" and message["cc"] == ["kierownik@bursztyn.pl"]
    assert message["attachments"] == [{"filename": "paragon.pdf", "content_type": "application/pdf",
                                       "size": 13, "stored": True, "sha256": message["attachments"][0]["sha256"]}]
    assert "drukarka" in message["text"].lower()
    assert detail["events"][0]["action"] == "created"


def test_unknown_ticket_is_a_clear_error(config_file, capsys):
    config = config_file()
    run(capsys, "--config", str(config), "migrate")
    code, _, err = run(capsys, "--config", str(config), "ticket", "JAN-404")
    assert code == 1 and "no ticket JAN-404" in err


def test_now_sets_the_present(tmp_path, config_file, capsys):
    config = config_file()
    eml = tmp_path / "a.eml"
    eml.write_bytes(make_mail())
    run(capsys, "--config", str(config), "--now", "2026-03-29T01:30:00+01:00", "ingest", str(eml))
    [ticket] = tickets(capsys, config)
    assert ticket["created_at"].startswith("2026-03-29T01:30:00")


def test_a_naive_now_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--now", "2026-03-29T01:30:00", "tickets"])
    assert "no UTC offset" in capsys.readouterr().err


def test_quarantined_after_a_bug_and_retried_after_the_fix(tmp_path, config_file, capsys, monkeypatch):
    config = config_file()
    eml = tmp_path / "a.eml"
    eml.write_bytes(make_mail(subject="Zgłoszenie, które trafi na błąd"))
    garbage = tmp_path / "garbage.eml"
    garbage.write_bytes(b"\x00\x01 this is not mail at all")

    def broken_route(intake):
        raise RuntimeError("routing table is broken")

    steps = tuple(broken_route if s is pipeline_module.route else s for s in pipeline_module.STEPS)
    monkeypatch.setattr(pipeline_module.Pipeline.__init__, "__defaults__", (steps,))
    run(capsys, "--config", str(config), "ingest", str(eml), str(garbage))
    code, out, _ = run(capsys, "--config", str(config), "quarantine", "--json")
    records = {r["origin"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    assert records["a.eml"]["reason"].startswith("RuntimeError: routing table is broken")
    assert records["garbage.eml"]["reason"].startswith("unparseable:")
    assert tickets(capsys, config) == []  # the failed transaction left no half-made ticket

    monkeypatch.undo()  # the fix is deployed
    code, out, _ = run(capsys, "--config", str(config), "quarantine", "retry", str(records["a.eml"]["id"]))
    assert code == 0 and "processed" in out
    assert [t["subject"] for t in tickets(capsys, config)] == ["Zgłoszenie, które trafi na błąd"]
    code, out, _ = run(capsys, "--config", str(config), "quarantine", "retry", str(records["garbage.eml"]["id"]))
    assert code == 1 and "quarantined" in out
