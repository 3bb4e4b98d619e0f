"""The store: attachments stored once per content and capped; numbers unique under concurrency."""
from __future__ import annotations

import dataclasses
import threading

import pytest
from sqlalchemy import func, select, text

from daemon.clock import Clock
from daemon.ingest.intake import content_key, save_raw
from daemon.pipeline import Pipeline
from daemon.store import Store
from daemon.store.models import Attachment, Blob, Message, Ticket
from daemon.tickets import next_number
from tests.mailfactory import make_mail

PHOTO = ("zdjecie.jpg", "image/jpeg", b"\xff\xd8" + b"jpeg" * 1000)


def test_the_same_attachment_is_stored_once(desk):
    for n in range(3):
        desk.deliver(make_mail(subject=f"Zdjęcie {n}", attachments=[PHOTO]))
    with desk.store.transaction() as session:
        inbound = select(func.count(Attachment.id)).join(Message).where(Message.direction == "in")
        assert session.scalar(inbound) == 3
        # The coordinator's notices carry the photo too: still one stored copy.
        assert session.scalar(select(func.count(Attachment.id))) == 6
        assert session.scalar(select(func.count(Blob.sha256))) == 1


def test_attachments_over_the_cap_are_listed_but_not_stored(desk):
    config = dataclasses.replace(desk.config, limits=dataclasses.replace(
        desk.config.limits, attachment_max_bytes=1000))
    desk.config = config
    desk.deliver(make_mail(attachments=[PHOTO, ("mala.txt", "text/plain", b"ok")]))
    [ticket] = desk.tickets()
    files = {a["filename"]: a for a in ticket["messages"][0]["attachments"]}
    assert files["zdjecie.jpg"]["stored"] is False and files["zdjecie.jpg"]["size"] == 4002
    assert files["mala.txt"]["stored"] is True


def test_ticket_numbers_stay_unique_with_concurrent_writers(desk, db_url):
    """Four workers, each with its own connection pool, file 40 new tickets at once (from
    40 shops: one sender's 40 would be a flood, daemon.rules.flood)."""
    raws = [make_mail(sender=f"sklep{n}@bursztyn.pl", subject=f"Równolegle {n}",
                      message_id=f"<par{n}@bursztyn.pl>") for n in range(40)]
    for raw in raws:
        save_raw(desk.store, channel="file", key=content_key(raw), raw=raw, now=Clock().now(),
                 mailbox="sklep@jantar.pl")
    errors: list[BaseException] = []

    def work():
        store = Store(db_url)
        try:
            Pipeline(desk.config, store, Clock()).process_pending()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.dispose()

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    with desk.store.transaction() as session:
        numbers = list(session.scalars(select(Ticket.number)))
    assert len(numbers) == 40 and len(set(numbers)) == 40
    assert sorted(int(n.split("-")[1]) for n in numbers) == list(range(1, 41))


def test_a_new_ticket_does_not_hold_the_counter_until_it_commits(desk, db_url):
    """While one transaction that took a number is still open (its acknowledgement
    rendering, say), another process takes the next number at once. On SQLite writers
    take turns anyway; the number stays in the creating transaction there."""
    if desk.store.backend != "postgresql":
        pytest.skip("SQLite serialises writers with its write lock")
    other = Store(db_url)
    try:
        with desk.store.transaction() as first:
            assert next_number(first, "JAN") == "JAN-1"
            with other.transaction() as second:
                second.execute(text("SET LOCAL lock_timeout = '2s'"))
                assert next_number(second, "JAN") == "JAN-2"
            first.rollback()   # the first ticket is never made: its number is skipped
        with other.transaction() as third:
            assert next_number(third, "JAN") == "JAN-3"
    finally:
        other.dispose()
