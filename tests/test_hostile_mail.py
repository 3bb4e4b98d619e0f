"""Hostile and broken mail through the whole pipeline: never an unhandled exception, every
mail a ticket message or a quarantined record with its reason, safe file names."""
from __future__ import annotations

import random
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from sqlalchemy import delete, func, select

from daemon.clock import Clock
from daemon.ingest.intake import content_key, save_raw
from daemon.parse import UnparseableMail, parse_mail
from daemon.pipeline import Pipeline
from daemon.store.models import Attachment, RawBody, RawMessage
from tests.mailfactory import make_mail

MUTATIONS = 10_000


def mutate(raw: bytes, rng: random.Random) -> bytes:
    """One to four byte-level edits of the kinds real breakage shows."""
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(data) or 1)
        choice = rng.randrange(7)
        if choice == 0:                                   # flip a byte
            data[where:where + 1] = bytes([rng.randrange(256)])
        elif choice == 1:                                 # cut the mail short
            del data[where:]
        elif choice == 2:                                 # NUL, CR or a stray 8-bit byte
            data[where:where] = rng.choice([b"\x00", b"\r", b"\xff", b"\xb3"])
        elif choice == 3:                                 # repeat a chunk (duplicated headers)
            chunk = data[where:where + rng.randint(1, 400)]
            data[where:where] = chunk
        elif choice == 4:                                 # remove a chunk (boundaries, separators)
            del data[where:where + rng.randint(1, 200)]
        elif choice == 5:                                 # break a MIME boundary
            data = data.replace(b"--", b"-", rng.randint(1, 3))
        else:                                             # break an encoded word
            data = data.replace(b"?=", b"?", 1)
        if not data:
            data = bytearray(b"x")
    return bytes(data)


def run_pipeline(store, config, raws: list[bytes]) -> None:
    clock = Clock()
    for raw in raws:
        save_raw(store, channel="file", key=content_key(raw), raw=raw, now=clock.now(),
                 mailbox="sklep@jantar.pl")
    Pipeline(config, store, clock).process_pending()


def assert_every_record_accounted_for(store) -> None:
    with store.transaction() as session:
        statuses = dict(session.execute(select(RawMessage.status, func.count())
                                        .group_by(RawMessage.status)).all())
        reasons = set(session.scalars(select(RawMessage.reason)
                                      .where(RawMessage.status == "quarantined")))
    assert set(statuses) <= {"processed", "duplicate", "quarantined"}, statuses
    assert all(r and r.startswith("unparseable: ") for r in reasons), reasons


@pytest.mark.slow
def test_ten_thousand_mutated_corpus_mails_through_the_pipeline(corpus_dir, make_config, sqlite_url):
    from daemon.directory import sync_directory
    from daemon.store import Store
    seeds = [p.read_bytes() for p in sorted(corpus_dir.rglob("*.eml")) if p.stat().st_size < 200_000]
    rng = random.Random(8)
    config, store = make_config(sqlite_url), Store(sqlite_url)
    with store.transaction() as session:
        sync_directory(session, config)
    mutated = [mutate(rng.choice(seeds), rng) for _ in range(MUTATIONS)]
    run_pipeline(store, config, mutated)
    assert_every_record_accounted_for(store)
    with store.transaction() as session:
        assert session.scalar(select(func.count(RawMessage.id))) == len(set(mutated))
    store.dispose()


def nested(depth: int) -> bytes:
    inner = b"Content-Type: text/plain\r\n\r\nna samym dnie\r\n"
    for level in range(depth):
        boundary = f"b{level}".encode()
        inner = (b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n--" + boundary +
                 b"\r\n" + inner + b"\r\n--" + boundary + b"--\r\n")
    return b"From: a@bursztyn.pl\r\nTo: sklep@jantar.pl\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + inner


def many_attachments(count: int) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@bursztyn.pl", "sklep@jantar.pl", "dużo plików"
    mail.set_content("w załączniku")
    for n in range(count):
        mail.add_attachment(b"x", maintype="application", subtype="octet-stream", filename=f"f{n}.bin")
    return mail.as_bytes(policy=SMTP)


HOSTILE = {
    "mime nested 100 levels": nested(100),
    "5,000 attachments": many_attachments(5000),
    "a header of 1 MB": make_mail(headers={"X-Padding": "a" * 1_000_000}),
    "NUL bytes": make_mail(body="przed\x00po").replace(b"Subject:", b"Subject: \x00null\x00"),
    "path traversal names": make_mail(attachments=[("../../etc/passwd", "text/plain", b"root:x:0:0"),
                                                   ("..\\..\\boot.ini", "text/plain", b"x")]),
    "only garbage": bytes(range(256)) * 100,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_mail_is_filed_or_quarantined_with_a_reason(desk, name):
    run_pipeline(desk.store, desk.config, [HOSTILE[name]])
    assert_every_record_accounted_for(desk.store)


def test_a_record_whose_bytes_are_missing_is_quarantined_not_left_pending(desk):
    # The claim loads the bytes with the record: a record without them must still be
    # claimed (an outer join), and quarantined with its reason like any failure.
    raw = make_mail(message_id="<no-bytes@bursztyn.pl>")
    saved = save_raw(desk.store, channel="file", key=content_key(raw), raw=raw,
                     now=Clock().now(), mailbox="sklep@jantar.pl")
    with desk.store.transaction() as session:
        session.execute(delete(RawBody).where(RawBody.raw_id == saved.raw_id))
    assert Pipeline(desk.config, desk.store, Clock()).process_pending() == {"quarantined": 1}
    with desk.store.transaction() as session:
        record = session.get(RawMessage, saved.raw_id)
        assert record.status == "quarantined"
        assert record.reason == "the record's bytes are missing from the store"


def test_attachment_names_never_carry_paths(desk):
    run_pipeline(desk.store, desk.config, [HOSTILE["path traversal names"]])
    with desk.store.transaction() as session:
        names = set(session.scalars(select(Attachment.filename)))
    assert names and all("/" not in n and "\\" not in n and ".." not in n for n in names), names


def test_deep_nesting_parses_with_a_defect_instead_of_recursing():
    mail = parse_mail(nested(300))
    assert mail.subject == "deep" and any("nest" in d for d in mail.defects)


def test_a_fifty_megabyte_mail_keeps_its_big_attachment_out_of_the_store(desk):
    big = make_mail(attachments=[("obraz.iso", "application/octet-stream", b"\x00" * 50_000_000)])
    run_pipeline(desk.store, desk.config, [big])
    with desk.store.transaction() as session:
        attachment = session.scalars(select(Attachment)).one()
        assert attachment.size == 50_000_000 and attachment.blob_sha256 is None  # over the cap
        assert session.scalars(select(RawMessage)).one().size == len(big)       # raw kept whole


def test_garbage_is_unparseable_not_a_crash():
    with pytest.raises(UnparseableMail):
        parse_mail(b"\x00\x01\x02")


def test_typed_text_that_breaks_stdlib_header_folding_still_gets_its_acknowledgement(desk):
    from email import message_from_bytes
    from email.policy import default

    from daemon.store.models import OutboxMail
    from daemon.outbound.outbox import header_text
    subject = "Ż=?utf-8?b?xx?=() @\\ kasa"
    raw = (f"From: {header_text('ł')} <jan.nowak@bursztyn.pl>\r\nTo: sklep@jantar.pl\r\n"
           f"Subject: {header_text(subject)}\r\nMessage-ID: <fold@bursztyn.pl>\r\n\r\n"
           "Kasa nie działa.\r\n").encode()
    run_pipeline(desk.store, desk.config, [raw])
    assert_every_record_accounted_for(desk.store)
    with desk.store.transaction() as session:
        ack = session.scalars(select(OutboxMail).where(OutboxMail.kind == "ack")).one()
    header = message_from_bytes(ack.raw, policy=default)["Subject"]
    assert str(header).endswith(f": {subject}")  # policy.default decodes the words
