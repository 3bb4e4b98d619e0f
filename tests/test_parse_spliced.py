"""Long base64 runs are cut out before the stdlib parser sees the mail and decoded from the
raw bytes: every mail must read exactly as the plain parse reads it, broken ones included.

Each mail is parsed three ways: plain (splicing off), with the production threshold, and
with every line of base64 letters spliced (threshold 1), which puts placeholders in
headers' neighbourhoods, preambles, text bodies and attached mails as no real mail would.
"""
from __future__ import annotations

import base64
import os
import random
import tracemalloc
from email.message import EmailMessage
from email.policy import SMTP

import pytest

import daemon.parse as parse_module
from daemon.parse import MAX_MIME_DEPTH, ParsedMail, UnparseableMail, parse_mail
from tests.mailfactory import make_mail
from tests.test_hostile_mail import mutate

PRODUCTION_MIN_RUN = parse_module._SPLICE_MIN_RUN
NEVER = 1 << 62


def outcome(raw: bytes, min_run: int, **kwargs):
    saved = parse_module._SPLICE_MIN_RUN
    parse_module._SPLICE_MIN_RUN = min_run
    try:
        return parse_mail(raw, **kwargs)
    except UnparseableMail as exc:
        return ("unparseable", str(exc))
    finally:
        parse_module._SPLICE_MIN_RUN = saved


def took_spliced_path(raw: bytes, min_run: int) -> bool:
    """Whether the mail was read from a skeleton (not parsed again the plain way)."""
    saved = parse_module._SPLICE_MIN_RUN
    parse_module._SPLICE_MIN_RUN = min_run
    try:
        repaired = parse_module._repaired(raw)
        return bool(repaired) and parse_module._read_spliced(repaired) is not None
    finally:
        parse_module._SPLICE_MIN_RUN = saved


def spliced_bodies(raw: bytes) -> int:
    """Parts whose body was left in the raw bytes, at the production threshold."""
    message, _ = parse_module._read_message(parse_module._repaired(raw))
    return sum(isinstance(part._payload, parse_module._SplicedBody) for part in message.walk())


def assert_same_as_plain(raw: bytes, **kwargs):
    plain = outcome(raw, NEVER, **kwargs)
    for min_run in (PRODUCTION_MIN_RUN, 1):
        assert outcome(raw, min_run, **kwargs) == plain, min_run
    return plain


# --- finding the runs -------------------------------------------------------------------


@pytest.mark.parametrize("min_run", [16, 17, PRODUCTION_MIN_RUN])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_a_run_is_found_wherever_it_starts_and_only_when_long_enough(monkeypatch, min_run, eol):
    # Runs are looked for one window of min_run / 2 bytes at a time: try every alignment.
    monkeypatch.setattr(parse_module, "_SPLICE_MIN_RUN", min_run)
    step = min_run // 2
    offsets = range(2 * step + 2) if min_run < 100 else (0, 1, step - 1, step, step + 1)
    for offset in offsets:
        for length in (min_run - 1, min_run, min_run + 1):
            for lines in (b"Q" * length, eol.join([b"QUJD"] * (length // 4 + 1))[:length]):
                if lines.endswith(eol) or lines.endswith(b"\r"):
                    continue  # the run ends at the end of a line's text
                before = b"Subject: " + b"-" * offset + eol
                raw = before + lines + eol + b"-- " + eol
                expected = [(len(before), len(raw) - 3 - 2 * len(eol))] \
                    if len(lines) >= min_run else []
                assert parse_module._base64_runs(raw) == expected, (offset, lines)


def test_a_run_is_made_of_whole_lines(monkeypatch):
    monkeypatch.setattr(parse_module, "_SPLICE_MIN_RUN", 8)
    # Begins mid-line (after "a "), ends mid-line (before "-"): only the whole lines count.
    raw = b"a QUJDQUJD\nQUJDQUJD\r\nQUJDQUJD\nQUJDQUJD-x\n"
    assert parse_module._base64_runs(raw) == [(11, 29)]
    # An empty line ends a run; at the very end of the mail a run needs no line break.
    raw = b"QUJDQUJD\n\nQUJDQUJD\r\r\nQUJDQUJDQU"
    assert parse_module._base64_runs(raw) == [(0, 8), (10, 18), (21, 31)]


# --- mails built byte by byte ----------------------------------------------------------


def b64(data: bytes, *, eol: bytes = b"\n", width: int = 76) -> bytes:
    text = base64.b64encode(data)
    if not width:
        return text
    return eol.join(text[i:i + width] for i in range(0, len(text), width))


def head(extra: str = "", eol: bytes = b"\n") -> bytes:
    lines = ["From: Jan Nowak <jan.nowak@bursztyn.pl>", "To: sklep@jantar.pl",
             "Subject: =?utf-8?q?Zdj=C4=99cia?=", "Message-ID: <spliced@bursztyn.pl>",
             "Date: Wed, 25 Nov 2026 10:00:00 +0100", "MIME-Version: 1.0"]
    lines += [line for line in extra.split("\n") if line]
    return eol.join(line.encode() for line in lines) + eol


def part(headers: str, body: bytes, eol: bytes = b"\n") -> bytes:
    return eol.join(line.encode() for line in headers.split("\n") if line) + eol + eol + body


def multipart(*parts: bytes, boundary: str = "XYZ", subtype: str = "mixed", eol: bytes = b"\n",
              preamble: bytes = b"", epilogue: bytes = b"", close: bool = True) -> bytes:
    delimiter = b"--" + boundary.encode()
    body = preamble + b"".join(delimiter + eol + p + eol for p in parts)
    if close:
        body += delimiter + b"--" + eol + epilogue
    return part(f'Content-Type: multipart/{subtype}; boundary="{boundary}"', body, eol)


def attachment(data: bytes, name: str = "nagranie.mp4", eol: bytes = b"\n", **kwargs) -> bytes:
    return part(f"Content-Type: application/octet-stream; name={name}\n"
                f"Content-Disposition: attachment; filename={name}\n"
                "Content-Transfer-Encoding: base64", b64(data, eol=eol, **kwargs) + eol, eol)


def text_part(text: str = "Dzień dobry,\nw załączniku nagranie.\n", eol: bytes = b"\n") -> bytes:
    return part("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit",
                text.replace("\n", eol.decode()).encode(), eol)


def mixed(*parts: bytes, eol: bytes = b"\n", **kwargs) -> bytes:
    return head(eol=eol) + multipart(*parts, eol=eol, **kwargs)


BIG = os.urandom(300_000)
SMALL = os.urandom(5_000)


def shapes() -> dict[str, bytes]:
    """Mails with long base64 runs, in the shapes real and broken mail takes."""
    shapes = {}
    for name, eol in (("LF", b"\n"), ("CRLF", b"\r\n"), ("CR", b"\r")):
        shapes[f"attachment, {name}"] = mixed(text_part(eol=eol), attachment(BIG, eol=eol), eol=eol)
    run = b64(BIG)
    shapes.update({
        "two attachments": mixed(text_part(), attachment(BIG), attachment(BIG[:100_000], "b.bin")),
        "attachment without line breaks": mixed(text_part(), attachment(BIG, width=0)),
        "lines of 64": mixed(text_part(), attachment(BIG, width=64)),
        "bare base64 body": head("Content-Type: image/png\nContent-Transfer-Encoding: base64")
        + b"\n" + run + b"\n",
        "body ends without a line break": head("Content-Type: application/pdf\n"
                                               "Content-Transfer-Encoding: base64") + b"\n" + run,
        "text/plain in base64": head("Content-Type: text/plain; charset=utf-8\n"
                                     "Content-Transfer-Encoding: base64") + b"\n"
        + b64(("Zażółć gęślą jaźń\n" * 20_000).encode()) + b"\n",
        "html in base64": mixed(part("Content-Type: text/html\nContent-Transfer-Encoding: base64",
                                     b64(b"<p>kasa</p>\n" * 30_000) + b"\n")),
        "base64 with upper case and spaces": mixed(part(
            "Content-Type: application/zip\nContent-Transfer-Encoding:  Base64 ;",
            run + b"\n")),
        "nested alternative and related": mixed(
            multipart(text_part(), multipart(
                part("Content-Type: text/html; charset=utf-8",
                     b"<p>zdj\xc4\x99cie <img src=cid:a></p>"),
                part("Content-Type: image/jpeg\nContent-ID: <a>\nContent-Transfer-Encoding: base64",
                     run), boundary="REL", subtype="related"),
                boundary="ALT", subtype="alternative"),
            attachment(BIG)),
        "attached mail with a big attachment": mixed(
            text_part(), part("Content-Type: message/rfc822",
                              head() + multipart(text_part(), attachment(BIG), boundary="IN"))),
        "delivery status": mixed(part("Content-Type: message/delivery-status",
                                      b"Reporting-MTA: dns; a\n\n" + run + b"\n\nAction: failed\n"),
                                 attachment(BIG), subtype="report"),
        "base64 in the preamble": mixed(attachment(SMALL), preamble=run + b"\n"),
        "base64 in the epilogue": mixed(attachment(SMALL), epilogue=run + b"\n"),
        "no close boundary": mixed(text_part(), attachment(BIG), close=False),
        "no start boundary": head('Content-Type: multipart/mixed; boundary="NOPE"') + b"\n" + run,
        "no boundary parameter": head("Content-Type: multipart/mixed") + b"\n" + run + b"\n",
        "wrong boundary": head('Content-Type: multipart/mixed; boundary="ABC"')
        + multipart(attachment(BIG))[60:],
        "boundary of base64 letters": mixed(attachment(BIG), boundary="QUJD"),
        "part without a blank line after its headers": mixed(
            b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
            + run + b"\n"),
        "part without headers": mixed(b"\n" + run + b"\n"),
        "base64 right after the top headers": head("Content-Transfer-Encoding: base64") + run,
        "quoted-printable part of base64 letters": mixed(part(
            "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable",
            run + b"\n=C5=81\n")),
        "7bit part of base64 letters": mixed(part("Content-Type: application/x-thing", run)),
        "uuencode part of base64 letters": mixed(part(
            "Content-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode",
            b"begin 644 a.bin\n" + run + b"\n`\nend\n")),
        "text around the run": mixed(part(
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64",
            b"-- not base64 --\n" + run + b"\n\xff junk ---\n")),
        "two runs in one part": mixed(part(
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64",
            run + b"\n\n" + b64(BIG[:90_000]) + b"\n")),
        "two runs, one padded in the middle": mixed(part(
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64",
            b64(BIG[:100_001]) + b"\n!\n" + run + b"\n")),
        "padding in the middle of the run": mixed(part(
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64",
            b64(BIG[:100_001]) + b"\n" + run + b"\n")),
        "bad padding": mixed(attachment(BIG[:300_001]).replace(b"==\n", b"\n")),
        "one character too many": mixed(part("Content-Type: application/pdf\n"
                                             "Content-Transfer-Encoding: base64", run + b"Q\n")),
        "stray characters in the run": mixed(part(
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64",
            run[:200_000] + b"\n#!\xb3 -\n" + run[200_000:] + b"\n")),
        "blank line in the run": mixed(part(
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64",
            run[:200_000] + b"\n\n" + run[200_000:] + b"\n")),
        "CR CR LF line breaks": mixed(attachment(BIG, eol=b"\r\r\n")),
        "mixed line breaks": mixed(attachment(BIG)).replace(b"A\n", b"A\r\n")
        .replace(b"B\n", b"B\r"),
        "placeholder text in the mail": mixed(text_part(parse_module._PLACEHOLDER + "0Z\n"),
                                              attachment(BIG)),
        "8-bit headers and body": mixed(text_part(), attachment(BIG)).replace(
            b"Subject: =?utf-8?q?Zdj=C4=99cia?=", "Subject: Zdjęcia".encode("cp1250")),
        "deeper than the nesting limit": head() + _nested(MAX_MIME_DEPTH + 5, attachment(BIG)),
        "inline attachment text file": mixed(part(
            "Content-Type: text/plain; name=log.txt\nContent-Disposition: inline\n"
            "Content-Transfer-Encoding: base64", b64(b"log line\n" * 40_000))),
    })
    for cut in (1000, 200_000, 300_000):
        whole = mixed(text_part(), attachment(BIG))
        shapes[f"cut at {cut}"] = whole[:cut]
        shapes[f"cut at {cut}, mid line"] = whole[:cut + 30]
    return shapes


def _nested(depth: int, leaf: bytes) -> bytes:
    for level in range(depth):
        leaf = multipart(leaf, boundary=f"n{level}")
    return leaf


SHAPES = shapes()


@pytest.mark.parametrize("name", list(SHAPES))
def test_each_shape_reads_as_the_plain_parse_reads_it(name):
    assert isinstance(assert_same_as_plain(SHAPES[name]), ParsedMail)  # not a parser crash


@pytest.mark.parametrize("name", ["attachment, CRLF", "two attachments"])
def test_attachment_over_the_cap_reads_the_same(name):
    parsed = assert_same_as_plain(SHAPES[name], attachment_max_bytes=100_000)
    assert any(attachment.truncated for attachment in parsed.attachments)


def test_the_common_shapes_really_take_the_spliced_path():
    # Without this, a fast path that always gave up would pass every comparison above.
    for name in ("attachment, LF", "attachment, CRLF", "attachment, CR", "lines of 64",
                 "attachment without line breaks", "bare base64 body", "text/plain in base64",
                 "nested alternative and related", "text around the run", "bad padding",
                 "stray characters in the run"):
        assert spliced_bodies(SHAPES[name]) >= 1, name
    assert spliced_bodies(SHAPES["two attachments"]) == 2
    # In an attached mail, a preamble, too deep to be read, or not base64: the run is
    # given back as the text it was.
    for name in ("attached mail with a big attachment", "base64 in the preamble",
                 "base64 in the epilogue", "deeper than the nesting limit",
                 "7bit part of base64 letters", "uuencode part of base64 letters",
                 "quoted-printable part of base64 letters", "delivery status"):
        assert took_spliced_path(SHAPES[name], PRODUCTION_MIN_RUN), name
    assert spliced_bodies(SHAPES["7bit part of base64 letters"]) == 0
    assert spliced_bodies(SHAPES["attached mail with a big attachment"]) == 0
    assert spliced_bodies(SHAPES["delivery status"]) == 1  # the attachment; not the report
    # The placeholder's own text in the mail: read the plain way.
    assert not took_spliced_path(SHAPES["placeholder text in the mail"], PRODUCTION_MIN_RUN)


def test_a_big_attachment_is_decoded_once_from_the_raw_bytes():
    data = os.urandom(4 * 2**20)
    raw = make_mail(attachments=[("nagranie.mp4", "video/mp4", data)])
    tracemalloc.start()
    try:
        parsed = parse_mail(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [a.data for a in parsed.attachments] == [data]
    # The decoded 4 MiB and little else; the stdlib's line by line body alone is 1.7 x the
    # mail, its joined copy and the encoded bytes another 2 x.
    assert peak < len(raw), (peak, len(raw))


# --- many mails: generated, mutated, real ----------------------------------------------


def generated_mails(rng: random.Random, count: int) -> list[bytes]:
    mails = []
    for number in range(count):
        mail = EmailMessage()
        mail["From"] = f"klient{number}@bursztyn.pl"
        mail["To"] = "sklep@jantar.pl"
        mail["Subject"] = "Zdjęcia z kasy"
        mail.set_content("Dzień dobry,\nw załączniku zdjęcia.\n")
        if rng.random() < 0.5:
            mail.add_alternative("<p>Dzień dobry</p>", subtype="html")
        for _ in range(rng.randint(1, 3)):
            size = rng.choice([10, 3_000, 60_000, 120_000])
            mail.add_attachment(rng.randbytes(size), maintype="application",
                                subtype="octet-stream", filename=f"plik{rng.randint(1, 99)}.bin")
        raw = mail.as_bytes(policy=SMTP) if rng.random() < 0.5 else mail.as_bytes()
        mails.append(raw)
    return mails


def test_mutated_mails_with_big_attachments_read_as_the_plain_parse_reads_them():
    rng = random.Random(7)
    seeds = generated_mails(rng, 12) + [SHAPES[name] for name in (
        "attachment, CRLF", "nested alternative and related", "two runs in one part")]
    spliced = parsed = 0
    for _ in range(400):
        raw = mutate(rng.choice(seeds), rng)
        parsed += isinstance(assert_same_as_plain(raw), ParsedMail)
        spliced += took_spliced_path(raw, PRODUCTION_MIN_RUN)
    assert spliced > 200 and parsed > 300  # runs mostly stay whole: the fast path is taken


def test_every_corpus_mail_reads_as_the_plain_parse_reads_it(corpus_dir):
    files = sorted(corpus_dir.rglob("*.eml"))
    assert files
    spliced = parsed = 0
    for path in files:
        raw = path.read_bytes()
        plain = outcome(raw, NEVER)
        assert outcome(raw, 1) == plain, path
        assert outcome(raw, PRODUCTION_MIN_RUN) == plain, path
        spliced += took_spliced_path(raw, 1)
        parsed += isinstance(plain, ParsedMail)
    assert spliced > len(files) / 3 and parsed > len(files) - 10


def test_mutated_corpus_mails_read_as_the_plain_parse_reads_them(corpus_dir):
    seeds = [p.read_bytes() for p in sorted(corpus_dir.rglob("*.eml"))]
    rng = random.Random(11)
    spliced = 0
    for _ in range(600):
        raw = mutate(rng.choice(seeds), rng)
        assert outcome(raw, 1) == outcome(raw, NEVER)
        spliced += took_spliced_path(raw, 1)
    assert spliced > 150
