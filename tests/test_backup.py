"""`helpdesk backup` while mail keeps arriving, and `helpdesk restore` onto a fresh machine."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from daemon.cli import main
from daemon.clock import Clock
from daemon.ingest.intake import content_key, save_raw
from daemon.pipeline import Pipeline
from daemon.store import Store
from tests.conftest import BASE_CONFIG, NOW, merge
from tests.mailfactory import make_mail
from tests.tomlwrite import write_config

PHOTO = bytes(range(256)) * 40  # an attachment whose bytes must come back exactly


def receipt(n: int) -> bytes:
    """The attachment of the writer's mail N: its own bytes, so its own blob."""
    return PHOTO + n.to_bytes(4, "big")


def setup_site(folder: Path) -> Path:
    """A configuration whose SQLite store and data folder live in FOLDER/data."""
    data = folder / "data"
    doc = merge(BASE_CONFIG, {"smtp_server": {"enabled": False}, "web": {"enabled": False}})
    doc["helpdesk"] = {**doc["helpdesk"], "data_dir": str(data),
                       "database_url": f"sqlite:///{data / 'helpdesk.db'}"}
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder / "helpdesk.toml", doc)


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def ingest(tmp_path: Path, config: Path, capsys, count: int) -> None:
    for n in range(count):
        eml = tmp_path / f"in{n}.eml"
        eml.write_bytes(make_mail(subject=f"Kasa {n} nie działa", message_id=f"<kasa{n}@bursztyn.pl>",
                                  attachments=[(f"zdjecie{n}.png", "image/png", PHOTO)]))
        assert run(capsys, "--config", str(config), "ingest", str(eml))[0] == 0


class Writer(threading.Thread):
    """Keeps mail arriving (saved and filed, each with its own attachment) until stopped:
    the backup runs under load. Mail N is <liveN@kaszub.com.pl>, filed in order."""

    def __init__(self, config: Path):
        super().__init__(daemon=True)
        from daemon import config as config_module
        self.config = config_module.load(config)
        self.store = Store(self.config.database_url)
        self.stop, self.filed, self.error = threading.Event(), 0, None
        self.at_least = 0

    def finish(self, more: int) -> None:
        """Stop once MORE mails beyond those filed now are filed: the source moves on."""
        self.at_least = self.filed + more
        self.stop.set()
        self.join(timeout=60)

    def run(self) -> None:
        try:
            pipeline = Pipeline(self.config, self.store, Clock(start=NOW))
            while not (self.stop.is_set() and self.filed >= self.at_least):
                n = self.filed
                raw = make_mail(subject=f"Terminal {n}", sender="kierownik@kaszub.com.pl",
                                message_id=f"<live{n}@kaszub.com.pl>",
                                attachments=[(f"paragon{n}.pdf", "application/pdf", receipt(n))])
                save_raw(self.store, channel="smtp", key=f"smtp:{content_key(raw)}", raw=raw,
                         now=NOW, mailbox="sklep@jantar.pl")
                pipeline.process_pending()
                self.filed += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.store.dispose()


def mail_and_files(database: Path) -> dict[str, list[tuple[str, str]]]:
    """Message-ID -> [(file name, SHA-256 of the bytes stored for it)] of every incoming
    message; a file whose bytes are missing reads as "missing"."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT m.message_id, a.filename, b.data FROM messages m "
            "LEFT JOIN attachments a ON a.message_id = m.id "
            "LEFT JOIN blobs b ON b.sha256 = a.blob_sha256 WHERE m.direction = 'in' "
            "ORDER BY m.id, a.id").fetchall()
    finally:
        connection.close()
    found: dict[str, list[tuple[str, str]]] = {}
    for message_id, filename, data in rows:
        files = found.setdefault(message_id, [])
        if filename is not None:
            files.append((filename, hashlib.sha256(data).hexdigest() if data else "missing"))
    return found


def sent_mail(live: int) -> dict[str, list[tuple[str, str]]]:
    """What the test sent: the three ingested mails and the writer's first LIVE, with the
    SHA-256 of each attachment as it was sent."""
    photo = hashlib.sha256(PHOTO).hexdigest()
    sent = {f"kasa{n}@bursztyn.pl": [(f"zdjecie{n}.png", photo)] for n in range(3)}
    sent.update({f"live{n}@kaszub.com.pl": [(f"paragon{n}.pdf",
                                             hashlib.sha256(receipt(n)).hexdigest())]
                 for n in range(live)})
    return sent


def assert_consistent(database: Path) -> dict[str, int]:
    """Integrity, and every reference inside the copy resolves: one snapshot, not a mix."""
    connection = sqlite3.connect(database)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        assert connection.execute(
            "SELECT count(*) FROM tickets t WHERE message_count != "
            "(SELECT count(*) FROM messages m WHERE m.ticket_id = t.id)"
        ).fetchone()[0] == 0
        assert connection.execute("SELECT count(*) FROM raw_messages WHERE status = 'pending' "
                                  "AND ticket_id IS NOT NULL").fetchone()[0] == 0
        return {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("tickets", "messages", "attachments", "blobs")}
    finally:
        connection.close()


def test_backup_under_load_then_restore_on_a_fresh_machine(tmp_path, capsys):
    old = setup_site(tmp_path / "old")
    ingest(tmp_path, old, capsys, 3)
    secret = tmp_path / "old" / "data" / "secret_key"
    secret.write_text("s" * 48 + "\n")
    writer = Writer(old)
    writer.start()
    while writer.filed < 3 and writer.is_alive():
        threading.Event().wait(0.05)
    filed_before = writer.filed   # in the store before the copy began: it must be in the copy
    code, out, err = run(capsys, "--config", str(old), "backup", str(tmp_path / "kopia"))
    writer.finish(more=2)         # and mail goes on arriving after it
    assert writer.error is None and not writer.is_alive() and code == 0, (writer.error, err)
    assert "backup written to" in out

    folder = tmp_path / "kopia"
    assert sorted(p.name for p in folder.iterdir()) == ["helpdesk.db", "manifest.json", "secret_key"]
    manifest = json.loads((folder / "manifest.json").read_text())
    counts = assert_consistent(folder / "helpdesk.db")
    assert counts == {table: manifest["counts"][table] for table in counts}
    # One snapshot: the writer's mail in the copy is its first `live`, no gap, no later
    # one without an earlier, at least all that was filed before the copy began.
    copied = mail_and_files(folder / "helpdesk.db")
    live = sum(message_id.startswith("live") for message_id in copied)
    assert live >= filed_before >= 3
    # The source at the copy's moment is what the test sent up to then: every message,
    # each attachment's bytes by SHA-256 (no file missing, none altered).
    assert copied == sent_mail(live)
    assert counts["tickets"] == 3 + live and counts["blobs"] == 1 + live  # one photo, once
    source = mail_and_files(tmp_path / "old" / "data" / "helpdesk.db")
    assert source == sent_mail(writer.filed) and writer.filed >= live + 2  # it moved on
    assert_consistent(tmp_path / "old" / "data" / "helpdesk.db")

    new = setup_site(tmp_path / "new")
    code, out, err = run(capsys, "--config", str(new), "restore", str(folder))
    assert code == 0, err
    assert f"{counts['tickets']} tickets" in out and "secret key: restored" in out
    assert (tmp_path / "new" / "data" / "secret_key").read_text() == secret.read_text()
    restored_db = tmp_path / "new" / "data" / "helpdesk.db"
    assert assert_consistent(restored_db) == counts
    assert mail_and_files(restored_db) == sent_mail(live)
    code, out, _ = run(capsys, "--config", str(new), "tickets", "--json")
    tickets = json.loads(out)
    assert len(tickets) == counts["tickets"]
    assert {"Kasa 0 nie działa", "Kasa 1 nie działa", "Kasa 2 nie działa"} <= {t["subject"] for t in tickets}
    number = next(t["number"] for t in tickets if t["subject"] == "Kasa 2 nie działa")
    code, out, _ = run(capsys, "--config", str(new), "ticket", number, "--json")
    [attachment] = json.loads(out)["messages"][0]["attachments"]
    assert attachment["filename"] == "zdjecie2.png" and attachment["stored"] is True
    code, out, err = run(capsys, "--config", str(new), "run", "--once")  # the daemon starts on it
    assert code == 0, err
    assert "process" in json.loads(out)


def test_backup_refuses_to_overwrite_without_force(tmp_path, capsys):
    config = setup_site(tmp_path / "site")
    ingest(tmp_path, config, capsys, 1)
    target = tmp_path / "kopia"
    target.mkdir()
    (target / "earlier.txt").write_text("keep me")
    code, _, err = run(capsys, "--config", str(config), "backup", str(target))
    assert code == 1 and "exists: choose a new path, or --force" in err
    assert (target / "earlier.txt").read_text() == "keep me"
    code, _, err = run(capsys, "--config", str(config), "backup", str(target), "--force")
    assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == ["helpdesk.db", "manifest.json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".kopia")] == []


def test_restore_refuses_a_store_with_data_and_a_damaged_backup(tmp_path, capsys):
    config = setup_site(tmp_path / "site")
    ingest(tmp_path, config, capsys, 1)
    assert run(capsys, "--config", str(config), "backup", str(tmp_path / "kopia"))[0] == 0
    code, _, err = run(capsys, "--config", str(config), "restore", str(tmp_path / "kopia"))
    assert code == 1 and "already holds tickets or mail" in err
    with open(tmp_path / "kopia" / "helpdesk.db", "r+b") as file:
        file.seek(5000)
        file.write(b"garbage")
    code, _, err = run(capsys, "--config", str(config), "restore", str(tmp_path / "kopia"), "--force")
    assert code == 1 and "damaged" in err
    code, _, err = run(capsys, "--config", str(config), "restore", str(tmp_path / "nothing"))
    assert code == 1 and "not a helpdesk backup" in err


def test_postgresql_backup_explains_pg_dump(tmp_path, capsys):
    doc = merge(BASE_CONFIG, {})
    doc["helpdesk"] = {**doc["helpdesk"], "data_dir": str(tmp_path / "data"),
                       "database_url": "postgresql://helpdesk@127.0.0.1:1/helpdesk"}
    config = write_config(tmp_path / "helpdesk.toml", doc)
    code, _, err = run(capsys, "--config", str(config), "backup", str(tmp_path / "kopia"))
    assert code == 1 and "pg_dump --format=custom" in err and "pg_restore" in err
    assert not (tmp_path / "kopia").exists()
    code, _, err = run(capsys, "--config", str(config), "restore", str(tmp_path / "kopia"))
    assert code == 1 and "pg_dump" in err
