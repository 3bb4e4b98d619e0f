"""`helpdesk ingest` reads an mbox by blocks (daemon.ingest.files.mbox_messages); each
message must be exactly what the standard library's `mailbox.mbox` gives, whatever the
file holds and wherever a block ends."""
from __future__ import annotations

import io
import mailbox
import random
from pathlib import Path

import pytest

from daemon.ingest.files import mbox_messages, read_mail

EDGE_CASES = {
    "empty file": b"",
    "only a preamble": b"no From_ line here\n",
    "a preamble, then mail":
        b"preamble\n\nFrom a@b.pl Mon Jan  1 00:00:00 2026\nSubject: x\n\nbody\n",
    "a blank first line": b"\nFrom a@b.pl Mon Jan  1 00:00:00 2026\nSubject: x\n\nbody\n\n",
    "one mail, a blank line at the end": b"From a Mon\nSubject: x\n\nbody\n\n",
    "one mail, no blank line at the end": b"From a Mon\nSubject: x\n\nbody\n",
    "one mail, no newline at the end": b"From a Mon\nSubject: x\n\nbody",
    "two blank lines at the end": b"From a Mon\nSubject: x\n\nbody\n\n\n",
    "a From_ line alone": b"From a Mon\n",
    "a From_ line without newline": b"From a Mon",
    "From_ lines back to back": b"From a\nFrom b\nFrom c\n",
    "an empty message between two": b"From a\nS: 1\n\nFrom b\n\nFrom c\nS: 3\n\n",
    "no blank line before From_": b"From a\nS: 1\n\nbody 1\nFrom b\nS: 2\n\nbody 2\n",
    "quoted and inner From": b"From a\nS: 1\n\n>From here\n From there\nFromage\n\nFrom b\n\nx\n",
    "CRLF lines": b"From a\r\nS: 1\r\n\r\nbody\r\n\r\nFrom b\r\nS: 2\r\n\r\nbody\r\n",
}
BLOCKS = (1, 2, 3, 5, 6, 7, 64, 1 << 20)


def stdlib_messages(tmp_path: Path, data: bytes) -> list[bytes]:
    path = tmp_path / "box.mbox"
    path.write_bytes(data)
    box = mailbox.mbox(str(path), factory=None, create=False)
    try:
        return [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()


def ours(data: bytes, block: int) -> list[bytes]:
    return list(mbox_messages(io.BytesIO(data), block=block))


@pytest.mark.parametrize("case", EDGE_CASES)
@pytest.mark.parametrize("block", BLOCKS)
def test_an_edge_case_reads_as_the_standard_library_reads_it(tmp_path, case, block):
    data = EDGE_CASES[case]
    assert ours(data, block) == stdlib_messages(tmp_path, data)


def test_random_files_read_as_the_standard_library_reads_them(tmp_path):
    """Files made of the lines that matter (From_ lines, blank lines, CR, quoted From),
    read with block sizes that split them everywhere."""
    rng = random.Random(2026)
    pieces = [b"From a Mon\n", b"From \n", b"From b\r\n", b"\n", b"\r\n", b"x\n", b"y",
              b">From c\n", b" From d\n", b"Subject: z\n", b"F", b"rom ", b"\n\n"]
    for _ in range(400):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        expected = stdlib_messages(tmp_path, data)
        for block in (1, 4, 6, rng.randint(1, 40)):
            assert ours(data, block) == expected, (data, block)


def test_a_large_message_across_many_blocks(tmp_path):
    big = b"From a Mon\nSubject: big\n\n" + b"".join(
        b"line %07d of a long attachment\n" % n for n in range(60_000)) + b"\n"
    data = b"From z Mon\nSubject: small\n\nhi\n\n" + big + b"From y Mon\n\nlast\n"
    expected = stdlib_messages(tmp_path, data)
    assert len(expected) == 3 and len(expected[1]) > 1_000_000
    assert ours(data, 4096) == expected
    assert ours(data, 1 << 20) == expected


def test_the_corpus_written_by_the_standard_library_reads_back_the_same(tmp_path, corpus_dir):
    """Every corpus message, added to an mbox by `mailbox.mbox` (which quotes From
    lines), reads back through `helpdesk ingest`'s reader as the standard library reads it."""
    files = sorted(corpus_dir.rglob("*.eml"))
    path = tmp_path / "corpus.mbox"
    box = mailbox.mbox(str(path))
    for file in files:
        box.add(file.read_bytes())
    box.close()
    expected = stdlib_messages(tmp_path, path.read_bytes())
    assert len(expected) == len(files)
    assert [mail.raw for mail in read_mail(path)] == expected
    assert ours(path.read_bytes(), 777) == expected
