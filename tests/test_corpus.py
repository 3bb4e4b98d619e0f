"""Every message of the shared corpus goes through `helpdesk ingest`: a ticket message or a
quarantined record with its reason, never an exception (both backends)."""
import json

from sqlalchemy import select

from daemon.cli import main
from daemon.ingest.intake import content_key
from daemon.store import Store
from daemon.store.models import Message, RawMessage


def test_whole_corpus_is_ingested_without_an_exception(corpus_dir, config_file, db_url, capsys):
    files = sorted(p for p in corpus_dir.rglob("*.eml"))
    assert len(files) == 396
    folders = sorted(str(p) for p in corpus_dir.iterdir() if p.is_dir())  # not README, SOURCES
    assert main(["--config", str(config_file()), "ingest", *folders, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["files"].values()) == len(files)

    store = Store(db_url)
    with store.transaction() as session:
        records = {r.idempotency_key: r for r in session.scalars(select(RawMessage))}
        filed = set(session.scalars(select(Message.raw_id)))
        for path in files:
            record = records[content_key(path.read_bytes())]
            assert record.status in ("processed", "duplicate", "quarantined"), path
            if record.status == "processed":
                assert record.id in filed, path
            elif record.status == "duplicate":
                assert record.ticket_id is not None, path
            else:
                # Only mail that cannot be read at all may be refused; a crash in a step would
                # show up here with another reason.
                assert record.reason.startswith("unparseable: "), (path, record.reason)
    store.dispose()
    quarantined = [r for r in records.values() if r.status == "quarantined"]
    assert len(quarantined) < 10, [(r.origin, r.reason) for r in quarantined]
