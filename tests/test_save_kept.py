"""Saving mail from files in batches (`save_kept`): the same records as one at a time,
a commit per batch, what was read kept when reading fails, and the race with another
process settled record by record (both backends)."""
from __future__ import annotations

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError

from daemon.clock import Clock
from daemon.ingest import intake
from daemon.ingest.files import FileMail
from daemon.ingest.intake import save_kept
from daemon.store.models import RawBody, RawMessage
from tests.mailfactory import make_mail


def kept(count: int, start: int = 0) -> list[FileMail]:
    mails = [make_mail(message_id=f"<k{n}@bursztyn.pl>", body=f"Sklep {n}\n")
             for n in range(start, start + count)]
    return [FileMail(f"old.mbox#{n + 1}", raw) for n, raw in enumerate(mails)]


def stored(store) -> list[tuple]:
    with store.transaction() as session:
        return [(r.id, r.origin, r.message_id, r.status, r.raw) for r in session.scalars(
            select(RawMessage).order_by(RawMessage.id))]


@pytest.fixture
def commits(store) -> list:
    """One entry for each transaction the store commits while the test runs."""
    seen: list = []

    def count(_connection):
        seen.append(1)
    event.listen(store.engine, "commit", count)
    yield seen
    event.remove(store.engine, "commit", count)


def save(store, mails, **options):
    return list(save_kept(store, mails, channel="file", now=Clock().now,
                          mailbox="sklep@jantar.pl", **options))


def test_batches_store_every_mail_in_order_and_commit_once_each(store, commits):
    mails = kept(7)
    results = save(store, mails, rows=3)
    assert len(commits) == 3  # 3 + 3 + 1
    assert [r.created for r in results] == [True] * 7
    rows = stored(store)
    assert [r[0] for r in rows] == [r.raw_id for r in results]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        (m.origin, f"k{n}@bursztyn.pl", "pending", m.raw) for n, m in enumerate(mails)]
    # again, and with a new one among them: only that one is saved, the rest are known
    again = save(store, [*mails[:4], *kept(1, start=7), *mails[4:]], rows=3)
    assert [r.created for r in again] == [False] * 4 + [True] + [False] * 3
    assert [r.raw_id for r in again[:4] + again[5:]] == [r.raw_id for r in results]
    assert len(stored(store)) == 8


def test_a_batch_also_ends_at_its_size(store, commits):
    mails = kept(4)
    save(store, mails, rows=100, size=len(mails[0].raw) * 2 + 1)
    assert len(commits) == 2 and len(stored(store)) == 4


def test_what_was_read_before_a_reading_error_is_saved_then_the_error_goes_on(store):
    def mails():
        yield from kept(5)
        raise ValueError("the file ends in the middle of a message")

    results = []
    with pytest.raises(ValueError, match="middle of a message"):
        for result in save_kept(store, mails(), channel="file", now=Clock().now, rows=3):
            results.append(result)
    assert len(results) == 5 and len(stored(store)) == 5


def test_a_key_saved_meanwhile_by_another_process_is_settled_record_by_record(
        store, monkeypatch):
    """The batch's transaction meets the other process's row: it rolls back, and each
    record is saved on its own, the one saved meanwhile found as already stored. (On
    SQLite no other process can write inside the batch's BEGIN IMMEDIATE; there the
    conflict is only raised, and every record is saved by the fallback.)"""
    mails = kept(3)
    other = mails[1]
    insert_raws = intake._insert_raws
    concurrent = store.backend == "postgresql"
    raced = []

    def racing(connection, rows):
        if any(row["idempotency_key"] == other.key for row in rows) and not raced:
            raced.append(1)
            if concurrent:  # the other process saves it between our check and insert
                with store.transaction() as elsewhere:
                    intake.add_raw(elsewhere, channel="file", key=other.key, raw=other.raw,
                                   now=rows[0]["received_at"], mailbox="sklep@jantar.pl",
                                   origin="elsewhere")
            raise IntegrityError("INSERT INTO raw_messages", {}, Exception("duplicate key"))
        return insert_raws(connection, rows)

    monkeypatch.setattr(intake, "_insert_raws", racing)
    results = save(store, mails)
    rows = stored(store)
    if concurrent:
        assert [r.created for r in results] == [True, False, True]
        assert [r[1] for r in rows] == ["elsewhere", "old.mbox#1", "old.mbox#3"]
    else:
        assert [r.created for r in results] == [True, True, True]
        assert [r[1] for r in rows] == ["old.mbox#1", "old.mbox#2", "old.mbox#3"]
    assert raced and {r.raw_id for r in results} == {r[0] for r in rows}
    with store.transaction() as session:
        assert len(session.scalars(select(RawBody.raw_id)).all()) == 3


def test_the_same_mail_twice_in_one_batch_is_saved_once(store):
    mails = kept(2)
    results = save(store, [mails[0], mails[1], FileMail("old.mbox#3", mails[0].raw)])
    assert [r.created for r in results] == [True, True, False]
    assert results[2].raw_id == results[0].raw_id
    assert len(stored(store)) == 2
