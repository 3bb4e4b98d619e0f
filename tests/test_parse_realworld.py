"""Real-world broken mail loses nothing: every case is a mail in tests/mails/realworld/,
written byte for byte as the broken sender writes it (see the README there).

Each mail is read three ways, as in test_parse.py (plain, and with base64 runs spliced
at two thresholds), and the three must agree; then the same mails go through the real
pipeline on SQLite and PostgreSQL, and through the real SMTP receiver.
"""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from daemon.clock import Clock
from daemon.parse import UnparseableMail
from daemon.pipeline import Pipeline
from tests.conftest import NOW
from tests.fixtures_smtp import send_verbatim
from tests.test_parse_spliced import NEVER, PRODUCTION_MIN_RUN, outcome
from tests.test_smtp_receiver import receiver  # noqa: F401  (the fixture)

MAILS = Path(__file__).parent / "mails" / "realworld"


def mail_file(name: str) -> bytes:
    return (MAILS / name).read_bytes()


def parse_mail(raw: bytes, **kwargs):
    """parse_mail, checked to read the same with and without base64 splicing."""
    result = outcome(raw, NEVER, **kwargs)
    assert outcome(raw, PRODUCTION_MIN_RUN, **kwargs) == result == outcome(raw, 1, **kwargs)
    if isinstance(result, tuple):
        raise UnparseableMail(result[1])
    return result


def names(parsed) -> list[str]:
    return [attachment.filename for attachment in parsed.attachments]


# --- 1. a header continued on an unindented line ----------------------------------------


def test_a_header_continued_on_an_unindented_line_stays_in_its_header():
    parsed = parse_mail(mail_file("exchange-unindented-continuation.eml"))
    assert parsed.subject == ("Awaria drukarki fiskalnej w sklepie nr 12 (kasa 3) - prosimy "
                              "o pilny kontakt telefoniczny")
    assert (parsed.from_email, parsed.from_name) == ("sklep12@bursztyn.pl", "Kierownik sklepu nr 12")
    assert parsed.to == ["sklep@jantar.pl", "serwis@jantar.pl"]
    assert parsed.message_id == "5f1e2d3c4b5a4f6e8d7c@EXCH-MBX02.bursztyn.local"
    assert parsed.headers["received"].endswith("Tue, 24 Nov 2026 09:12:44 +0100")
    assert parsed.received_date is not None
    assert parsed.text.startswith("Dzień dobry,\n\ndrukarka fiskalna przy kasie 3")
    assert any("unindented" in defect for defect in parsed.defects)


def test_a_body_without_a_separator_is_not_taken_for_a_continuation():
    parsed = parse_mail(b"From: a@example.com\nSubject: Kasa 3\nDzien dobry,\nkasa nie dziala.\n")
    assert (parsed.subject, parsed.text) == ("Kasa 3", "Dzien dobry,\nkasa nie dziala.")
    # An unknown "name:" line after it may be body text as much as a header: left alone.
    parsed = parse_mail(b"Subject: temat\nTo nie jest naglowek\nUwaga: albo jest?\n\nTresc\n")
    assert parsed.subject == "temat" and parsed.text.startswith("To nie jest naglowek\n")


def test_a_boundary_right_after_the_headers_starts_the_body():
    raw = (b"From: a@example.com\nSubject: brak pustej linii\n"
           b"Content-Type: multipart/mixed; boundary=\"b1\"\n"
           b"--b1\nContent-Type: text/plain\n\npierwsza\n"
           b"--b1\nContent-Type: text/plain\n\ndruga\n--b1--\n")
    parsed = parse_mail(raw)
    assert (parsed.subject, parsed.text) == ("brak pustej linii", "pierwsza\ndruga")


def test_a_quoted_header_block_in_a_body_without_separator_stays_body():
    raw = (b"From: a@example.com\nSubject: Fwd: kasa\nPrzesylam ponizej.\n"
           b"-----Original Message-----\nFrom: b@example.com\nSubject: kasa\n\nstara tresc\n")
    parsed = parse_mail(raw)
    assert (parsed.from_email, parsed.subject) == ("a@example.com", "Fwd: kasa")
    assert parsed.text.startswith("Przesylam ponizej.\n-----Original Message-----\nFrom: b@")


def test_corpus_mail_with_unindented_received_lines_keeps_its_sender(corpus_dir):
    parsed = parse_mail((corpus_dir / "replies-threading" / "phpmmp__issue84.eml").read_bytes())
    assert (parsed.from_email, parsed.from_name) == ("tyra3l@gmail.com", "Ferenc Kovacs")
    assert parsed.subject == "Re: [PHP-DEV] [RFC] Remove PHP 4 Constructors"
    assert parsed.in_reply_to and parsed.text


# --- 2. junk before the first header ----------------------------------------------------


@pytest.mark.parametrize("name, subject, sender, text", [
    ("junk-escaped-from-line.eml", "Terminal platniczy w sklepie nr 7 nie laczy sie z bankiem",
     "sklep7@bursztyn.pl", "Terminal pokazuje błąd połączenia z bankiem od rana."),
    ("junk-outlook-header-banner.eml", "Wymiana czytnika kodow w markecie w Kartuzach",
     "biuro@kaszub.com.pl", "Prosimy o wymianę czytnika przy kasie 2, skaner nie odczytuje kodów."),
    ("junk-received-without-colon.eml", "Kasa 5: brak polaczenia z serwerem cen",
     "kasa5@bursztyn.pl", "Automatyczny raport kasy 5: brak polaczenia z serwerem cen od 12:10."),
])
def test_junk_lines_before_the_first_header_are_skipped(name, subject, sender, text):
    parsed = parse_mail(mail_file(name))
    assert (parsed.subject, parsed.from_email, parsed.text) == (subject, sender, text)
    assert parsed.to == ["sklep@jantar.pl"] and parsed.message_id
    assert any("before the first header" in defect for defect in parsed.defects)


def test_an_indented_first_header_is_read():
    parsed = parse_mail(b" From: Jan <jan@bursztyn.pl>\nSubject: kasa\n\ntresc\n")
    assert (parsed.from_email, parsed.subject, parsed.text) == ("jan@bursztyn.pl", "kasa", "tresc")


@pytest.mark.parametrize("raw", [
    b"To jest zwykly tekst.\nBez zadnych naglowkow.\n",
    b"Notatka ze spotkania\nUwaga: to nie jest naglowek\n\nreszta\n",
    b"linia 1\nlinia 2\nlinia 3\nlinia 4\nlinia 5\nlinia 6\nSubject: za daleko\n\ntresc\n",
    b"HELO mx.bursztyn.pl\nMAIL FROM:<a@bursztyn.pl>\nRCPT TO:<sklep@jantar.pl>\nDATA\n",
])
def test_text_that_is_not_a_mail_is_still_refused(raw):
    with pytest.raises(UnparseableMail, match="no header lines"):
        parse_mail(raw)


# --- 3. no part vanishes ----------------------------------------------------------------


def test_unnamed_html_parts_beside_a_plain_part_reach_the_text():
    parsed = parse_mail(mail_file("related-two-html-parts.eml"))
    assert parsed.text == ("Raport kasy 3: błąd drukarki E-17.\n"
                           "Raport kasy 4: kończy się papier w drukarce.\n"
                           "--\nWiadomosc sprawdzona przez system antywirusowy Bursztyn.")
    assert "E-17" in parsed.html and "papier" in parsed.html
    [image] = parsed.attachments
    assert (image.content_type, image.inline, image.data[:4]) == ("image/png", True, b"\x89PNG")


def test_html_with_a_plain_alternative_stays_out_of_the_text():
    raw = (b"From: a@example.com\nContent-Type: multipart/alternative; boundary=A\n\n"
           b"--A\nContent-Type: text/plain\n\ncala tresc\n"
           b"--A\nContent-Type: multipart/related; boundary=R\n\n"
           b"--R\nContent-Type: text/html\n\n<p>cala</p>\n"
           b"--R\nContent-Type: text/html\n\n<p>tresc</p>\n--R--\n--A--\n")
    parsed = parse_mail(raw)
    assert parsed.text == "cala tresc"
    assert parsed.html == "<p>cala</p>\n<p>tresc</p>"


def test_an_html_disclaimer_outside_the_alternative_reaches_the_text():
    raw = (b"From: a@example.com\nContent-Type: multipart/mixed; boundary=M\n\n"
           b"--M\nContent-Type: multipart/alternative; boundary=A\n\n"
           b"--A\nContent-Type: text/plain\n\ntresc\n"
           b"--A\nContent-Type: text/html\n\n<p>tresc</p>\n--A--\n"
           b"--M\nContent-Type: text/html\n\n<p>Stopka firmowa</p>\n--M--\n")
    assert parse_mail(raw).text == "tresc\nStopka firmowa"


# --- 4. declared charsets are evidence for undeclared 8-bit bytes ------------------------


@pytest.mark.parametrize("name", ["gb2312-filename-declared-in-subject.eml",
                                  "gb2312-filename-western-text-first.eml"])
def test_undeclared_gb2312_file_name_is_read_with_the_charset_the_mail_declares(name):
    parsed = parse_mail(mail_file(name))
    assert names(parsed) == ["报价单2026.xls"]
    assert parsed.from_name == "李四"


def test_a_polish_raw_file_name_still_reads_as_polish_beside_a_western_label():
    raw = (b"From: a@example.com\nContent-Type: multipart/mixed; boundary=M\n\n"
           b"--M\nContent-Type: text/plain; charset=iso-8859-1\n\nfaktura\n"
           b"--M\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\""
           + "Faktura_zażółć.pdf".encode("windows-1250") + b"\"\n\n%PDF\n--M--\n")
    assert names(parse_mail(raw)) == ["Faktura_zażółć.pdf"]


# --- 5. mislabelled charsets --------------------------------------------------------------


def test_shift_jis_bytes_labelled_iso_2022_jp_are_read_as_shift_jis():
    parsed = parse_mail(mail_file("iso-2022-jp-label-on-shift-jis.eml"))
    assert parsed.subject == "レシートプリンタの修理依頼"
    assert parsed.text == "レシートプリンタが印刷しません。確認をお願いします。"
    assert parsed.from_name == "田中"
    assert any("iso-2022-jp" in defect.lower() and "cp932" in defect for defect in parsed.defects)


@pytest.mark.parametrize("label, text, written_in", [
    ("iso-2022-jp", "領収書を再発行してください", "euc_jp"),
    ("euc-jp", "①領収書", "cp932"),
    ("windows-1252", "Źródło zasilania kasy", "cp1250"),
    ("big5", "收據啱嘅", "big5hkscs"),
    ("iso-8859-8", "קופה שָׁלוֹם", "cp1255"),
])
def test_a_mislabelled_body_is_read_with_a_relative_of_its_label(label, text, written_in):
    data = text.encode(written_in)
    with pytest.raises(UnicodeDecodeError):
        data.decode(label)  # the label really lies
    raw = (f"From: a@example.com\nContent-Type: text/plain; charset={label}\n"
           f"Content-Transfer-Encoding: 8bit\n\n").encode() + data
    parsed = parse_mail(raw)
    assert parsed.text == text
    assert any(written_in in defect for defect in parsed.defects)


def test_bytes_no_relative_reads_are_replaced_visibly_with_a_defect_never_dropped():
    # 0x81 then a space: no Japanese charset reads it, utf-8 neither.
    raw = (b"From: a@example.com\nSubject: =?iso-2022-jp?b?" + base64.b64encode(b"kasa \x81 3")
           + b"?=\nContent-Type: text/plain; charset=iso-2022-jp\n\nkasa \x81 3\n")
    parsed = parse_mail(raw)
    assert parsed.text == "kasa \ufffd 3" and parsed.subject == "kasa \ufffd 3"
    assert any("U+FFFD" in defect for defect in parsed.defects)


# --- 6. a requester when From is not usable -----------------------------------------------


@pytest.mark.parametrize("name, email, display, source", [
    ("from-missing-reply-to.eml", "sklep12@bursztyn.pl", "Sklep 12 - kierownik", "reply-to"),
    ("from-undisclosed-sender.eml", "kasa2.sklep7@bursztyn.pl", "Kasa 2 Sklep 7", "sender"),
    ("from-garbage-return-path.eml", "serwer-cen@bursztyn.pl", "", "return-path"),
])
def test_requester_comes_from_reply_to_sender_or_return_path(name, email, display, source):
    parsed = parse_mail(mail_file(name))
    assert (parsed.from_email, parsed.from_name, parsed.sender_source) == (email, display, source)
    assert parsed.from_addresses == []  # From's own addresses only: there are none


@pytest.mark.parametrize("from_header, expected", [
    ("", ("reply@bursztyn.pl", "reply-to")),
    ("From: <>\n", ("reply@bursztyn.pl", "reply-to")),
    ("From: MAILER\n", ("reply@bursztyn.pl", "reply-to")),
    ("From: Jan <jan@bursztyn.pl>\n", ("jan@bursztyn.pl", "from")),
])
def test_reply_to_beats_sender_beats_return_path_and_from_beats_all(from_header, expected):
    raw = (f"{from_header}Return-Path: <bounce@bursztyn.pl>\nSender: sender@bursztyn.pl\n"
           "Reply-To: reply@bursztyn.pl\nSubject: x\n\ntresc\n").encode()
    parsed = parse_mail(raw)
    assert (parsed.from_email, parsed.sender_source) == expected


def test_a_null_return_path_names_nobody():
    parsed = parse_mail(b"Return-Path: <>\nFrom: undisclosed-recipients:;\nSubject: x\n\ntresc\n")
    assert (parsed.from_email, parsed.sender_source, parsed.from_addresses) == ("", "", [])


# --- 7. unnamed parts named as a technician knows them -------------------------------------


def test_an_attached_mail_is_named_after_its_subject():
    parsed = parse_mail(mail_file("forwarded-as-attachment.eml"))
    assert names(parsed) == ["Re_ Faktura 12_2026 – korekta.eml"]
    assert b"Prosimy o korekte faktury 12/2026." in parsed.attachments[0].data


def test_a_delivery_report_and_the_returned_mail_are_named():
    parsed = parse_mail(mail_file("delivery-report.eml"))
    assert names(parsed) == ["delivery-status.txt", "[#JAN-1042] Potwierdzenie zgloszenia.eml"]


def test_an_inline_image_is_named_after_its_content_id():
    parsed = parse_mail(mail_file("related-two-html-parts.eml"))
    assert names(parsed) == ["image001.png"]
    assert parsed.attachments[0].content_id == "image001.png@01DB3E2A.5C6F1B20"


@pytest.mark.parametrize("part, name", [
    (b"Content-Type: image/png\nContent-ID: <part1.06090408.01060107@example.com>\n\nx",
     "attachment-1.png"),
    (b"Content-Type: image/png\nContent-ID: <../../skan.png@example.com>\n\nx", "skan.png"),
    (b"Content-Type: image/png\nContent-ID: <../../etc/passwd@example.com>\n\nx",
     "attachment-1.png"),
    (b"Content-Type: image/png; name=logo.png\nContent-ID: <image001.png@01D>\n\nx", "logo.png"),
    (b"Content-Type: message/rfc822\n\nFrom: a@example.com\n\nbez tematu\n", "attachment-1.eml"),
    (b"Content-Type: message/disposition-notification\n\nFinal-Recipient: rfc822; a@b\n",
     "disposition-notification.txt"),
    (b"Content-Type: text/rfc822-headers\n\nSubject: x\n", "rfc822-headers.txt"),
])
def test_other_unnamed_parts_get_safe_recognisable_names(part, name):
    raw = (b"From: a@example.com\nContent-Type: multipart/mixed; boundary=M\n\n"
           b"--M\nContent-Type: text/plain\n\ntresc\n--M\n" + part + b"\n--M--\n")
    assert names(parse_mail(raw)) == [name]


# --- end to end: the pipeline on both backends, and the SMTP receiver -----------------------


TICKETS = {
    "exchange-unindented-continuation.eml": (
        "Awaria drukarki fiskalnej w sklepie nr 12 (kasa 3) - prosimy o pilny kontakt telefoniczny",
        "sklep12@bursztyn.pl", "przy kasie 3 nie drukuje", []),
    "junk-escaped-from-line.eml": (
        "Terminal platniczy w sklepie nr 7 nie laczy sie z bankiem", "sklep7@bursztyn.pl",
        "błąd połączenia", []),
    "junk-outlook-header-banner.eml": (
        "Wymiana czytnika kodow w markecie w Kartuzach", "biuro@kaszub.com.pl",
        "wymianę czytnika", []),
    "junk-received-without-colon.eml": (
        "Kasa 5: brak polaczenia z serwerem cen", "kasa5@bursztyn.pl", "serwerem cen od 12:10", []),
    "related-two-html-parts.eml": (
        "Raport dzienny kas - sklep 12", "raporty@bursztyn.pl", "kończy się papier",
        ["image001.png"]),
    "gb2312-filename-declared-in-subject.eml": (
        "报价单 - POS打印机", "lisi@dongfang-pos.cn", "quotation", ["报价单2026.xls"]),
    "gb2312-filename-western-text-first.eml": (
        "Quotation POS printers", "lisi@dongfang-pos.cn", "quotation attached",
        ["报价单2026.xls"]),
    "iso-2022-jp-label-on-shift-jis.eml": (
        "レシートプリンタの修理依頼", "tanaka@sakura-retail.co.jp", "印刷しません", []),
    "from-missing-reply-to.eml": (
        "Czytnik kart w sklepie 12 odrzuca karty zblizeniowe", "sklep12@bursztyn.pl",
        "kod 65", []),
    "from-undisclosed-sender.eml": (
        "Kasa 2 w sklepie 7 restartuje sie co godzine", "kasa2.sklep7@bursztyn.pl",
        "co godzine", []),
    "from-garbage-return-path.eml": (
        "Serwer cen: synchronizacja nie powiodla sie", "serwer-cen@bursztyn.pl", "timeout", []),
    "forwarded-as-attachment.eml": (
        "Fwd: korekta faktury za serwis", "jan.nowak@bursztyn.pl", "Przesylam dalej",
        ["Re_ Faktura 12_2026 – korekta.eml"]),
}


def assert_ticket(ticket: dict, name: str) -> None:
    subject, requester, words, attachments = TICKETS[name]
    assert (ticket["subject"], ticket["requester"]) == (subject, requester), name
    [message] = [m for m in ticket["messages"] if m["direction"] == "in"]
    assert words in message["text"], (name, message["text"])
    assert [a["filename"] for a in message["attachments"]] == attachments, name
    assert all(a["stored"] for a in message["attachments"])


def test_every_real_world_mail_makes_a_complete_ticket(desk):
    for name in TICKETS:
        assert desk.deliver(mail_file(name), now=NOW) == {"processed": 1}, name
    tickets = desk.tickets()
    assert len(tickets) == len(TICKETS)
    for ticket, name in zip(tickets, TICKETS):
        assert_ticket(ticket, name)
    assert not [record for record in desk.raw_records() if record.status != "processed"]


def test_real_world_mail_through_the_smtp_receiver_makes_a_complete_ticket(
        receiver, store, desk, smtp_client):  # noqa: F811  (the fixture)
    port = receiver().port
    sent = ["exchange-unindented-continuation.eml", "junk-received-without-colon.eml",
            "from-missing-reply-to.eml"]
    for name in sent:
        client = smtp_client(port)
        client.ehlo("mx.bursztyn.pl")
        client.mail("monitor@bursztyn.pl")
        client.rcpt("sklep@jantar.pl")
        assert send_verbatim(client, mail_file(name))[0] == 250, name
    assert Pipeline(desk.config, store, Clock(start=NOW)).process_pending() == {"processed": 3}
    for ticket, name in zip(desk.tickets(), sent):
        assert_ticket(ticket, name)
    assert [record.raw for record in desk.raw_records()] == [mail_file(name) for name in sent]


# --- property: garbled header blocks -------------------------------------------------------


KNOWN_NAMES = ["Received", "X-Mailer", "Thread-Topic", "To", "Cc", "Date", "Message-ID",
               "Subject", "From", "Reply-To", "X-MS-Exchange-Organization-SCL"]
WORDS = st.text(st.sampled_from("abcdefghijklmnoprstuwyzABCDEFGHIJąęłńóśźż0123456789()[]<>@.,;-_"),
                min_size=1, max_size=12)
JUNK_LINES = st.one_of(
    st.just(">From kasa@bursztyn.pl  Tue Nov 24 10:02:11 2026"),
    st.just("Microsoft Mail Internet Headers Version 2.0"),
    st.just("Received from mx.bursztyn.pl by mx.jantar.pl"),
    st.just("+OK 2345 octets"),
    st.lists(WORDS, min_size=1, max_size=5).map(" ".join),
)


@st.composite
def garbled_mails(draw):
    """A multipart mail whose header block an Exchange gateway and a mailbox export broke:
    folds that lost their indentation, junk lines before the first header, a BOM; and
    the parts it must still yield (text markers, attachment bytes)."""
    lines = []
    for name in draw(st.lists(st.sampled_from(KNOWN_NAMES), min_size=1, max_size=8, unique=True)):
        words = draw(st.lists(WORDS, min_size=1, max_size=12))
        folds = sorted(draw(st.sets(st.integers(1, max(len(words) - 1, 1)), max_size=3)))
        pieces = [" ".join(words[a:b]) for a, b in zip([0, *folds], [*folds, len(words)])]
        indent = draw(st.sampled_from(["", " ", "\t"]))  # "": the gateway dropped it
        lines += [f"{name}: {pieces[0]}"] + [indent + piece for piece in pieces[1:] if piece]
    junk = draw(st.lists(JUNK_LINES, max_size=3))
    texts = [f"tekst{n}" for n in range(draw(st.integers(0, 3)))]
    files = [draw(st.binary(min_size=1, max_size=40)) for _ in range(draw(st.integers(0, 3)))]
    htmls = [f"html{n}" for n in range(draw(st.integers(0, 2)))]
    parts = [f"Content-Type: text/plain\n\n{t}\n".encode() for t in texts]
    parts += [f"Content-Type: text/html\n\n<p>{h}</p>\n".encode() for h in htmls]
    parts += [b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
              + base64.encodebytes(data) for data in files]
    order = draw(st.permutations(range(len(parts))))
    head = "\n".join(junk + lines + ["MIME-Version: 1.0",
                                     "Content-Type: multipart/mixed; boundary=GRANICA"])
    body = b"".join(b"--GRANICA\n" + parts[i] + b"\n" for i in order) + b"--GRANICA--\n"
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    raw = (bom + head.encode() + b"\n\n" + body).replace(b"\n", eol)
    return raw, texts + htmls, files


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbled_mails())
def test_a_garbled_header_block_never_loses_a_part(case):
    raw, words, files = case
    parsed = parse_mail(raw)  # never UnparseableMail: there are headers to find
    for word in words:
        assert word in parsed.text
    assert sorted(a.data for a in parsed.attachments) == sorted(files)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(JUNK_LINES, st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
                          st.sampled_from(["Subject: kasa", "From: a@b.pl", " cd.", ":x", "--"])),
                max_size=12),
       st.binary(max_size=200))
def test_any_header_garbage_is_read_or_refused_never_a_crash(lines, body):
    raw = "\n".join(lines).encode("utf-8") + b"\n\n" + body
    try:
        parse_mail(raw)
    except UnparseableMail:
        pass
