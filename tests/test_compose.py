"""The hand-written MIME of daemon.outbound.compose, read back by two real parsers.

Every mail is parsed with the standard library (policy.default, the reader most mail
software in Python uses) and with our own daemon.parse (what reads a customer's reply
quoting us), and each header, text, file name and byte must come back as given, with
no defect reported and no line longer than the RFC allows.
"""
from __future__ import annotations

import random
from email import message_from_bytes, message_from_string, policy

import pytest

from daemon.outbound.compose import compose, folded_list, header_value, mailbox
from daemon.parse import parse_mail

POLISH = "zażółć gęślą jaźń ZAŻÓŁĆ GĘŚLĄ JAŹŃ"
TRICKY_TEXT = [
    "",
    "\n",
    "Dzień dobry,\nzgłoszenie przyjęte.\n",
    "a" * 300 + "\n",                                     # one long line, no space
    ("słowo " * 80) + "\n",                               # one long line of words
    "trailing spaces   \ntrailing tab\t\n",
    ".\n..\n. leading dot\nFrom the shop\n>From\n",
    "=?utf-8?b?ZmFrZQ==?= and = signs ==3D\n",
    "emoji 🙂 and 4-byte 𝄞 characters\n",
    "no final newline",
    "\n\n\nblank lines\n\n",
    "x=\n=\n=20\n",
]
SUBJECTS = [
    "Awaria drukarki",
    "[#JAN-12] Zgłoszenie przyjęte: żółta kartka",
    "Re: " + POLISH * 6,
    "literal =?utf-8?q?word?= next to Łódź",
    "=?utf-8?b?ZmFrZQ==?=",
    "🙂" * 40,
    "a" * 200,
    "",
]
NAMES = ["", "Serwis Jantar", "Jan K. Nowak", 'Ewa "Szefowa" Nowak', "back\\slash",
         "Serwis Jantar — Łódź", POLISH * 3, "=?x?= lookalike", "Nowak, Jan"]
FILENAMES = ["paragon.pdf", "zdjęcie ekranu.png", 'say "cheese".jpg', "back\\slash.txt",
             "ą" * 150 + ".txt", "a" * 120 + ".bin", "semi;colon=eq.txt", "🙂.gif"]


def headers_for(subject: str, name: str, to: list[str]) -> list[str]:
    return [f"From: {mailbox('serwis@jantar.pl', name, len('From: '))}",
            folded_list("To", to),
            f"Subject: {header_value(subject, len('Subject: '))}",
            "Message-ID: <abc@jantar.pl>",
            folded_list("References", [f"<ref{n}.{'x' * 30}@jantar.pl>" for n in range(20)],
                        separator="")]


def read_back(raw: bytes):
    mail = message_from_bytes(raw, policy=policy.default)
    defects = [(part.get_content_type(), part.defects) for part in mail.walk() if part.defects]
    assert not defects
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998
    assert b"\n" not in raw.replace(b"\r\n", b"")      # CRLF only
    return mail


def assert_sender_name(raw: bytes, mail, name: str) -> None:
    [sender] = mail["From"].addresses
    assert sender.addr_spec == "serwis@jantar.pl"
    # daemon.parse must read the name exactly. The standard library's address parser
    # collapses runs of spaces in a name and, against RFC 2047 6.2, keeps the white space
    # between two encoded words of a long name: it is compared without spaces.
    assert sender.display_name.replace(" ", "") == name.replace(" ", "")
    assert parse_mail(raw).from_name == name


def expected_text(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_text_comes_back_exactly_and_7bit(text):
    text = expected_text(text)
    raw = compose(headers_for("Awaria", "", ["anna@bursztyn.pl"]), text, None, [])

    mail = read_back(raw)
    assert raw.isascii()
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content().replace("\r\n", "\n") == text
    assert parse_mail(raw).text.replace("\r\n", "\n").rstrip("\n") == text.rstrip("\n")
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))   # RFC 2045 6.7 (5)


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("name", NAMES)
def test_subject_and_sender_name_come_back_exactly(subject, name):
    raw = compose(headers_for(subject, name, ["anna@bursztyn.pl"]), "x\n", None, [])

    mail = read_back(raw)
    assert raw.isascii()
    assert str(mail["Subject"]) == subject
    assert_sender_name(raw, mail, name)
    ours = parse_mail(raw)
    assert (ours.subject, ours.from_email, ours.from_name) == (subject, "serwis@jantar.pl", name)
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    for line in header_block.split(b"\r\n"):
        if b"=?utf-8?b?" in line:
            assert len(line) <= 76          # RFC 2047 2
        elif b" " in line.strip():
            assert len(line) <= 78 or not b"=?" in line


def test_long_recipient_lists_and_references_fold_and_come_back():
    to = [f"osoba{n}.{'k' * (n % 7)}@sklep{n}.bursztyn.pl" for n in range(40)]
    raw = compose(headers_for("Awaria", "", to), "x\n", None, [])

    mail = read_back(raw)
    assert [a.addr_spec for a in mail["To"].addresses] == to
    assert str(mail["References"]).split() == [f"<ref{n}.{'x' * 30}@jantar.pl>"
                                                for n in range(20)]
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in header_block.split(b"\r\n")) <= 78
    assert parse_mail(raw).to == to


def test_a_non_ascii_address_is_written_as_utf8_header():
    raw = compose(headers_for("Awaria", "Łukasz", ["łukasz@bursztyn.pl", "anna@bursztyn.pl"]),
                  "x\n", None, [])

    assert "To: łukasz@bursztyn.pl, anna@bursztyn.pl\r\n".encode() in raw
    mail = message_from_string(raw.decode("utf-8"), policy=policy.SMTPUTF8)
    assert [a.addr_spec for a in mail["To"].addresses] == ["łukasz@bursztyn.pl",
                                                          "anna@bursztyn.pl"]
    assert parse_mail(raw).to == ["łukasz@bursztyn.pl", "anna@bursztyn.pl"]


def test_html_alternative_and_files_come_back_byte_for_byte():
    rng = random.Random(5)
    files = [(name, "application", "octet-stream", rng.randbytes(rng.choice([0, 1, 57, 58, 5000])))
             for name in FILENAMES]
    files.append(("notatka.txt", "text", "plain", "zażółć\n".encode("utf-8")))
    html = "<p>Dzień dobry, <b>przyjęte</b></p>\n" + "<i>długa</i> " * 100 + "\n"
    raw = compose(headers_for("Pliki", "", ["anna@bursztyn.pl"]), "Tekst ąę\n", html, files)

    mail = read_back(raw)
    assert raw.isascii()
    assert mail.get_content_type() == "multipart/mixed"
    assert mail.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Tekst ąę\n"
    assert mail.get_body(("html",)).get_content().replace("\r\n", "\n") == html
    [alternative, *attachments] = mail.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert [(a.get_filename(), a.get_content_type(), a.get_payload(decode=True))
            for a in attachments] == [(n, f"{m}/{s}", d) for n, m, s, d in files]
    # daemon.parse makes file names safe to store ("say _cheese_.jpg"); the bytes are exact.
    assert [a.data for a in parse_mail(raw).attachments] == [d for _, _, _, d in files]


def test_text_with_files_but_no_html_is_mixed_around_the_text():
    raw = compose(headers_for("Plik", "", ["anna@bursztyn.pl"]), "Tekst\n", None,
                  [("a.pdf", "application", "pdf", b"%PDF-1.4")])

    mail = read_back(raw)
    assert [p.get_content_type() for p in mail.walk()] == ["multipart/mixed", "text/plain",
                                                           "application/pdf"]
    assert mail.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Tekst\n"


def test_random_mails_come_back_exactly():
    rng = random.Random(2026)
    alphabet = "abcdefghijklmnop ąćęłńóśźżĄĆĘŁŃÓŚŹŻ.,;:!?=-_\"'\\()<>@\t🙂"
    for _ in range(300):
        def words(low, high):
            return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))
        subject = words(0, 200).replace("\t", " ").strip()
        name = words(0, 60).replace("\t", " ").strip()
        text = "\n".join(words(0, 150) for _ in range(rng.randint(0, 8))) + "\n"
        html = None if rng.random() < 0.5 else f"<p>{words(0, 300)}</p>\n"
        files = [(words(1, 40).replace("\t", " ").strip() or "plik", "application",
                  "octet-stream", rng.randbytes(rng.randint(0, 3000)))
                 for _ in range(rng.randint(0, 2))]
        raw = compose(headers_for(subject, name, ["anna@bursztyn.pl"]), text, html, files)

        mail = read_back(raw)
        assert raw.isascii()
        assert str(mail["Subject"]) == subject
        assert_sender_name(raw, mail, name)
        assert mail.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
        if html:
            assert mail.get_body(("html",)).get_content().replace("\r\n", "\n") == html
        assert [(a.get_filename(), a.get_payload(decode=True))
                for a in mail.iter_attachments()] == [(n, d) for n, _, _, d in files]
