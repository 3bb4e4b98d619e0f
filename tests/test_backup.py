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
    """Keeps mail arriving (saved and filed) until stopped: the backup runs under load."""

    def __init__(self, config: Path):
        super().__init__(daemon=True)
        from daemon import config as config_module
        self.config = config_module.load(config)
        self.store = Store(self.config.database_url)
        self.stop, self.saved, self.error = threading.Event(), 0, None

    def run(self) -> None:
        try:
            pipeline = Pipeline(self.config, self.store, Clock(start=NOW))
            while not self.stop.is_set() or self.saved < 5:
                raw = make_mail(subject=f"Terminal {self.saved}", sender="kierownik@kaszub.com.pl",
                                message_id=f"<live{self.saved}@kaszub.com.pl>")
                save_raw(self.store, channel="smtp", key=f"smtp:{content_key(raw)}", raw=raw,
                         now=NOW, mailbox="sklep@jantar.pl")
                pipeline.process_pending()
                self.saved += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.store.dispose()


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
    while writer.saved < 3 and writer.is_alive():
        threading.Event().wait(0.05)
    code, out, err = run(capsys, "--config", str(old), "backup", str(tmp_path / "kopia"))
    writer.stop.set()
    writer.join(timeout=60)
    assert writer.error is None and code == 0, err
    assert "backup written to" in out

    folder = tmp_path / "kopia"
    assert sorted(p.name for p in folder.iterdir()) == ["helpdesk.db", "manifest.json", "secret_key"]
    manifest = json.loads((folder / "manifest.json").read_text())
    counts = assert_consistent(folder / "helpdesk.db")
    assert counts["tickets"] == manifest["counts"]["tickets"] >= 3 + 3
    assert counts["attachments"] >= 3 and counts["blobs"] == 1  # one photo, stored once
    live = assert_consistent(tmp_path / "old" / "data" / "helpdesk.db")
    assert live["tickets"] > 3  # mail kept arriving while the copy was taken

    new = setup_site(tmp_path / "new")
    code, out, err = run(capsys, "--config", str(new), "restore", str(folder))
    assert code == 0, err
    assert f"{counts['tickets']} tickets" in out and "secret key: restored" in out
    assert (tmp_path / "new" / "data" / "secret_key").read_text() == secret.read_text()
    code, out, _ = run(capsys, "--config", str(new), "tickets", "--json")
    tickets = json.loads(out)
    assert len(tickets) == counts["tickets"]
    assert {"Kasa 0 nie działa", "Kasa 1 nie działa", "Kasa 2 nie działa"} <= {t["subject"] for t in tickets}
    number = next(t["number"] for t in tickets if t["subject"] == "Kasa 2 nie działa")
    code, out, _ = run(capsys, "--config", str(new), "ticket", number, "--json")
    [attachment] = json.loads(out)["messages"][0]["attachments"]
    assert attachment["filename"] == "zdjecie2.png" and attachment["stored"] is True
    restored = sqlite3.connect(tmp_path / "new" / "data" / "helpdesk.db")
    [(data,)] = restored.execute("SELECT data FROM blobs").fetchall()
    restored.close()
    assert hashlib.sha256(data).digest() == hashlib.sha256(PHOTO).digest()
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
