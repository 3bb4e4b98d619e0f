"""parse_mail: raw bytes in every charset a Polish mailbox sees become a clean ParsedMail."""
from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta, timezone
from email import quoprimime
from email.message import EmailMessage

import pytest

from daemon.parse import MAX_MIME_DEPTH, UnparseableMail, parse_mail

POLISH = "Zażółć gęślą jaźń"


@pytest.fixture(autouse=True)
def every_mail_also_read_spliced(monkeypatch):
    """Every mail of this file is read three ways: plain, at the production threshold, and
    with each line of base64 letters cut out before parsing (see test_parse_spliced.py).
    All three must agree."""
    from tests.test_parse_spliced import NEVER, PRODUCTION_MIN_RUN, outcome

    def parse_three_ways(raw, **kwargs):
        result = outcome(raw, 1, **kwargs)
        assert result == outcome(raw, NEVER, **kwargs) == outcome(raw, PRODUCTION_MIN_RUN, **kwargs)
        if isinstance(result, tuple):
            raise UnparseableMail(result[1])
        return result

    monkeypatch.setitem(globals(), "parse_mail", parse_three_ways)


def mail(headers: str, body: bytes = b"", *, extra: bytes = b"") -> bytes:
    """A raw mail: ASCII headers (plus raw `extra` header bytes), blank line, body bytes."""
    return headers.strip("\n").encode("ascii") + b"\n" + extra + b"\n" + body


def multipart(*parts: bytes, subtype: str = "mixed", headers: str = "") -> bytes:
    """A multipart mail whose parts are raw bytes (headers, blank line, body)."""
    body = b"".join(b"--XYZ\n" + part + b"\n" for part in parts) + b"--XYZ--\n"
    return mail(f"From: a@example.com\n{headers}"
                f"Content-Type: multipart/{subtype}; boundary=XYZ\n", body)


# --- bodies in each charset ------------------------------------------------------------


@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-2", "windows-1250"])
def test_8bit_body_is_decoded_with_its_declared_charset(charset):
    raw = mail(f"From: a@example.com\nContent-Type: text/plain; charset={charset}\n"
               "Content-Transfer-Encoding: 8bit", POLISH.encode(charset) + b"\n")
    assert parse_mail(raw).text == POLISH


@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-2", "windows-1250"])
def test_quoted_printable_and_base64_bodies_are_decoded(charset):
    message = EmailMessage()
    message["From"] = "a@example.com"
    message.set_content(POLISH + "\n", charset=charset, cte="quoted-printable")
    assert parse_mail(message.as_bytes()).text == POLISH
    message.set_content(POLISH + "\n", charset=charset, cte="base64")
    assert parse_mail(message.as_bytes()).text == POLISH


def test_iso_8859_2_label_on_windows_1250_bytes_is_read_as_windows_1250():
    # ś (0x9c) and ź (0x9f) exist only in windows-1250; iso-8859-2 has C1 controls there.
    raw = mail("From: a@example.com\nContent-Type: text/plain; charset=iso-8859-2",
               "gęślą jaźń".encode("windows-1250"))
    assert parse_mail(raw).text == "gęślą jaźń"


def test_utf8_label_on_windows_1250_bytes_falls_back_to_windows_1250():
    raw = mail("From: a@example.com\nContent-Type: text/plain; charset=utf-8",
               "Zgłoszenie awarii kasy, proszę o kontakt".encode("windows-1250"))
    assert parse_mail(raw).text == "Zgłoszenie awarii kasy, proszę o kontakt"


def test_unknown_charset_does_not_crash_and_is_guessed():
    raw = mail("From: a@example.com\nContent-Type: text/plain; charset=x-no-such-charset",
               POLISH.encode("utf-8"))
    parsed = parse_mail(raw)
    assert parsed.text == POLISH
    assert any("x-no-such-charset" in defect for defect in parsed.defects)


@pytest.mark.parametrize("charset", ["unicode_escape", "base64", "undefined", "idna"])
def test_python_codecs_that_are_not_charsets_are_not_applied(charset):
    raw = mail(f"From: a@example.com\nContent-Type: text/plain; charset={charset}",
               b"caf\\u00e9 \xc5\x82")
    assert parse_mail(raw).text == "caf\\u00e9 ł"


# --- headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-2", "windows-1250"])
@pytest.mark.parametrize("encoding", ["B", "Q"])
def test_encoded_word_subject_and_name_are_decoded(charset, encoding):
    data = POLISH.encode(charset)
    word = (f"=?{charset}?B?{base64.b64encode(data).decode()}?=" if encoding == "B"
            else quoprimime.header_encode(data, charset))
    assert f"?{encoding}?" in word.upper()
    raw = mail(f"From: {word} <JAN@Example.COM>\nSubject: Re: {word}\n", b"x")
    parsed = parse_mail(raw)
    assert parsed.subject == f"Re: {POLISH}"
    assert parsed.from_name == POLISH
    assert parsed.from_email == "jan@example.com"


def test_adjacent_encoded_words_join_even_when_a_character_is_split_between_them():
    # "ł" is C5 82 in utf-8: split over two words, and folded onto a new line.
    raw = mail("From: a@example.com\nSubject: =?utf-8?q?Zg=C5?=\n =?utf-8?q?=82oszenie?= nr\n"
               " =?UTF-8?B?NDI=?=\n", b"x")
    assert parse_mail(raw).subject == "Zgłoszenie nr 42"


def test_broken_encoded_words_are_read_best_effort():
    raw = mail("From: a@example.com\n"
               "Subject: Re:=?utf-8?q?Zg=C5=82oszenie?=!  =?utf-8?B?YXdhcmlp?= "
               "=?iso-8859-2?q?kasy unclosed\n", b"x")
    assert parse_mail(raw).subject == "Re:Zgłoszenie! awarii =?iso-8859-2?q?kasy unclosed"


def test_encoded_word_in_unknown_charset_falls_back_without_crashing():
    # The second word claims utf-8 but carries a windows-1250 byte: the label lied.
    raw = mail("From: a@example.com\nSubject: =?x-unknown?q?Zg=B3oszenie?= nr "
               "=?utf-8?q?Zg=B3oszenie?=\n", b"x")
    assert parse_mail(raw).subject == "Zgłoszenie nr Zgłoszenie"


def test_raw_8bit_windows_1250_subject_and_from_name_are_decoded():
    # b"Zg\xb3oszenie" is how a windows-1250 "Zgłoszenie" looks when nobody declares it.
    raw = mail("To: serwis@jantar.pl", b"x",
               extra=b"From: Jan Ko\xb3odziej <jan@sklep.pl>\n"
                     b"Subject: Zg\xb3oszenie: kasa nie \x9cci\xb9ga paragon\xf3w\n")
    parsed = parse_mail(raw)
    assert parsed.subject == "Zgłoszenie: kasa nie ściąga paragonów"
    assert parsed.from_name == "Jan Kołodziej"
    assert parsed.from_email == "jan@sklep.pl"


def test_raw_8bit_iso_8859_2_subject_is_told_apart_from_windows_1250():
    raw = mail("From: a@example.com", b"x", extra="Subject: Ściąga źle\n".encode("iso-8859-2"))
    assert parse_mail(raw).subject == "Ściąga źle"


def test_raw_8bit_subject_uses_the_charset_the_body_declares():
    raw = mail("From: a@example.com\nContent-Type: text/plain; charset=koi8-r",
               "Привет".encode("koi8-r"), extra="Subject: Привет\n".encode("koi8-r"))
    parsed = parse_mail(raw)
    assert parsed.subject == "Привет"
    assert parsed.text == "Привет"


def test_raw_utf8_headers_are_kept():
    raw = mail("To: x@example.com", b"x",
               extra="Subject: Zgłoszenie\nFrom: Łukasz <łukasz@przykład.pl>\n".encode())
    parsed = parse_mail(raw)
    assert (parsed.subject, parsed.from_name, parsed.from_email) == \
        ("Zgłoszenie", "Łukasz", "łukasz@przykład.pl")


def test_subject_is_unfolded_and_collapsed_and_never_none():
    raw = mail("From: a@example.com\nSubject:  Awaria\r\n\tdrukarki   fiskalnej\r\n  nr 7 \n",
               b"x")
    assert parse_mail(raw).subject == "Awaria drukarki fiskalnej nr 7"
    assert parse_mail(mail("From: a@example.com", b"x")).subject == ""


def test_headers_are_lower_cased_decoded_first_values():
    raw = mail("From: a@example.com\nAuto-Submitted: auto-replied\nPrecedence: bulk\n"
               "X-Note: =?utf-8?q?pierwsza_uwaga?=\nX-Note: second\nList-Id: <kasy.jantar.pl>",
               b"x")
    headers = parse_mail(raw).headers
    assert headers["auto-submitted"] == "auto-replied"
    assert headers["precedence"] == "bulk"
    assert headers["x-note"] == "pierwsza uwaga"
    assert headers["list-id"] == "<kasy.jantar.pl>"


# --- addresses, identifiers, date -------------------------------------------------------


def test_addresses_are_lower_cased_and_garbage_is_skipped():
    raw = mail('From: "Kowalski, Jan" <Jan.Kowalski@Sklep.PL>\n'
               "To: Serwis <SERWIS@jantar.pl>, garbage <<>> @@, ;;, b@Example.com\n"
               "Cc: undisclosed-recipients:;\nCc: Ola <ola@example.com>\n"
               "Reply-To: zgloszenia@sklep.pl\n", b"x")
    parsed = parse_mail(raw)
    assert (parsed.from_name, parsed.from_email) == ("Kowalski, Jan", "jan.kowalski@sklep.pl")
    assert parsed.to == ["serwis@jantar.pl", "b@example.com"]
    assert parsed.cc == ["ola@example.com"]
    assert parsed.reply_to == ["zgloszenia@sklep.pl"]


def test_a_from_header_without_any_address_gives_empty_strings():
    parsed = parse_mail(mail("From: Just A Name\nSubject: x", b"x"))
    assert (parsed.from_email, parsed.from_name) == ("", "")
    parsed = parse_mail(mail("Subject: no sender", b"x"))
    assert (parsed.from_email, parsed.from_name) == ("", "")


def test_a_sloppy_but_readable_from_is_recovered():
    parsed = parse_mail(mail("From: Jan Nowak <jan@sklep.pl\nSubject: x", b"x"))
    assert parsed.from_email == "jan@sklep.pl"


def test_message_ids_lose_their_brackets_and_tolerate_junk():
    raw = mail("From: a@example.com\nMessage-ID: <abc@Host.example>\n"
               'In-Reply-To: "Your message of Mon" <p1@x> (comment)\n'
               "References: <root@x>\n <p0@x> <p1@x>\n\t<root@x>\n", b"x")
    parsed = parse_mail(raw)
    assert parsed.message_id == "abc@Host.example"
    assert parsed.in_reply_to == ["p1@x"]
    assert parsed.references == ["root@x", "p0@x", "p1@x"]


def test_message_ids_without_brackets_are_accepted():
    raw = mail("From: a@example.com\nMessage-ID: abc@host\nIn-Reply-To: p1@x, p2@x\n"
               "References: junk without ids\n", b"x")
    parsed = parse_mail(raw)
    assert parsed.message_id == "abc@host"
    assert parsed.in_reply_to == ["p1@x", "p2@x"]
    assert parsed.references == []
    assert parse_mail(mail("From: a@example.com", b"x")).message_id is None


def test_date_is_aware_or_none():
    parsed = parse_mail(mail("From: a@example.com\nDate: Wed, 25 Nov 2026 11:00:00 +0100", b"x"))
    assert parsed.date == datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    assert parsed.date.utcoffset() is not None
    no_zone = parse_mail(mail("From: a@example.com\nDate: Wed, 25 Nov 2026 11:00:00", b"x"))
    assert no_zone.date is not None and no_zone.date.utcoffset() == timedelta(0)
    assert parse_mail(mail("From: a@example.com\nDate: yesterday-ish", b"x")).date is None
    assert parse_mail(mail("From: a@example.com", b"x")).date is None


# --- body assembly -----------------------------------------------------------------------


def test_html_only_mail_gets_text_derived_from_the_html():
    html = ("<html><head><title>T</title><style>p {color: red}</style></head><body>"
            "<p>Dzień dobry,</p><p>kasa nr&nbsp;3 &amp; drukarka<br>nie działają:</p>"
            "<ul><li>paragon</li><li>faktura</li></ul><div>Pozdrawiam</div>"
            "<script>alert('x')</script></body></html>")
    raw = mail("From: a@example.com\nContent-Type: text/html; charset=utf-8", html.encode())
    parsed = parse_mail(raw)
    assert parsed.text == ("Dzień dobry,\n\nkasa nr 3 & drukarka\nnie działają:\n\n"
                           "- paragon\n- faktura\n\nPozdrawiam")
    assert "Dzień dobry," in parsed.html


def test_html_is_sanitised():
    html = ('<p onclick="steal()">Hi <b>there</b></p><script>alert(1)</script>'
            '<img src="x.png" onerror="alert(2)"><img src="cid:logo@x">'
            '<img src="data:image/png;base64,AAAA"><a href="javascript:alert(3)">bad</a>'
            '<a href="https://jantar.pl/t/1">ok</a><div style="background:url(x)">s</div>'
            '<style>body{}</style><iframe src="https://evil"></iframe>'
            '<table><tr><td>cell</td></tr></table>')
    raw = mail("From: a@example.com\nContent-Type: text/html", html.encode())
    safe = parse_mail(raw).html
    lowered = safe.lower()
    for forbidden in ("<script", "alert", "onerror", "onclick", "javascript:", "data:",
                      "style", "<iframe"):
        assert forbidden not in lowered, forbidden
    assert "<b>there</b>" in safe
    assert '<img src="x.png">' in safe and '<img src="cid:logo@x">' in safe
    assert 'href="https://jantar.pl/t/1"' in safe and 'rel="noopener noreferrer nofollow"' in safe
    assert "<td>cell</td>" in safe


def test_html_is_none_without_an_html_part_and_plain_text_wins_over_html():
    assert parse_mail(mail("From: a@example.com", b"plain")).html is None
    raw = multipart(b"Content-Type: text/plain; charset=utf-8\n\nplain version",
                    b"Content-Type: text/html; charset=utf-8\n\n<p>html version</p>",
                    subtype="alternative")
    parsed = parse_mail(raw)
    assert parsed.text == "plain version"
    assert parsed.html == "<p>html version</p>"


def test_several_text_parts_are_joined_and_text_attachments_stay_attachments():
    raw = multipart(b"Content-Type: text/plain\n\nfirst part\n",
                    b"Content-Type: image/png\nContent-Transfer-Encoding: base64\n\n"
                    + base64.b64encode(b"\x89PNG"),
                    b"Content-Type: text/plain\n\nsecond part\n",
                    b"Content-Type: text/plain; name=log.txt\n"
                    b"Content-Disposition: attachment; filename=log.txt\n\nERROR 42\n",
                    b"Content-Type: text/plain\nContent-Disposition: inline; filename=x.txt"
                    b"\n\nApple Mail attaches text files inline\n")
    parsed = parse_mail(raw)
    assert parsed.text == "first part\nsecond part"
    assert [(a.filename, a.content_type) for a in parsed.attachments] == \
        [("attachment-1.png", "image/png"), ("log.txt", "text/plain"), ("x.txt", "text/plain")]
    assert parsed.attachments[0].data == b"\x89PNG"
    assert parsed.attachments[1].data == b"ERROR 42\n"


def test_inline_image_keeps_its_content_id():
    raw = multipart(b"Content-Type: text/html\n\n<img src=\"cid:logo@jantar\">",
                    b"Content-Type: image/gif\nContent-ID: <logo@jantar>\n"
                    b"Content-Transfer-Encoding: base64\n\nR0lGODlh",
                    subtype="related")
    attachment = parse_mail(raw).attachments[0]
    assert (attachment.content_id, attachment.inline) == ("logo@jantar", True)
    assert attachment.data == b"GIF89a"


def test_forwarded_mail_and_tnef_are_kept_as_files():
    raw = multipart(b"Content-Type: text/plain\n\nsee below",
                    b"Content-Type: message/rfc822\n\nFrom: b@example.com\n"
                    b"Subject: Oryginal\n\ninner body\n",
                    b"Content-Type: application/ms-tnef\nContent-Transfer-Encoding: base64"
                    b"\n\neJ8+IgAA")
    parsed = parse_mail(raw)
    assert parsed.text == "see below"
    forwarded, tnef = parsed.attachments
    assert (forwarded.filename, forwarded.content_type) == ("Oryginal.eml", "message/rfc822")
    assert b"Subject: Oryginal" in forwarded.data and b"inner body" in forwarded.data
    assert (tnef.filename, tnef.data) == ("winmail.dat", b"x\x9f>\"\x00\x00")


# --- attachments ---------------------------------------------------------------------------


def test_rfc2231_polish_filename_with_continuations_and_language():
    raw = multipart(b"Content-Type: text/plain\n\nfaktura w zalaczniku",
                    b"Content-Type: application/pdf\n"
                    b"Content-Disposition: attachment;\n"
                    b" filename*0*=utf-8'pl'faktura_za%C5%BC%C3%B3;\n"
                    b" filename*1*=%C5%82%C4%87.pdf\n"
                    b"Content-Transfer-Encoding: base64\n\nJVBERi0x",
                    b"Content-Type: application/pdf;\n"
                    b" name*=iso-8859-2''faktura_za%BF%F3%B3%E6.pdf\n\n%PDF")
    first, second = parse_mail(raw).attachments
    assert first.filename == second.filename == "faktura_zażółć.pdf"
    assert first.data == b"%PDF-1"


def test_encoded_word_and_raw_8bit_filenames_are_decoded():
    raw = multipart(b'Content-Type: application/pdf; name="=?utf-8?B?'
                    + base64.b64encode("faktura_zażółć.pdf".encode()) + b'?="\n\nx',
                    b'Content-Type: application/pdf; name="faktura_za\xbf\xf3\xb3\xe6.pdf"\n\nx')
    assert [a.filename for a in parse_mail(raw).attachments] == ["faktura_zażółć.pdf"] * 2


@pytest.mark.parametrize("hostile, safe", [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\Windows\\system32\\evil.exe", "evil.exe"),
    ("C:\\Users\\jan\\raport.xlsx", "raport.xlsx"),
    ("..", "attachment-1.pdf"),
    ("", "attachment-1.pdf"),
    ("/", "attachment-1.pdf"),
    ("pay\x00load\x07.pdf", "payload.pdf"),
    ("invoice\u202efdp.exe", "invoicefdp.exe"),  # a right-to-left override hides ".exe"
    ("a<b>c:d|e?.pdf", "a_b_c_d_e_.pdf"),
    (".hidden", "hidden"),
])
def test_attachment_filenames_are_made_safe(hostile, safe):
    message = EmailMessage()
    message["From"] = "a@example.com"
    message.set_content("body")
    message.add_attachment(b"%PDF", maintype="application", subtype="pdf")
    raw = message.as_bytes().replace(b"Content-Disposition: attachment",
                                     b'Content-Disposition: attachment; filename="'
                                     + hostile.encode("utf-8") + b'"')
    assert parse_mail(raw).attachments[0].filename == safe


def test_long_filename_is_capped_keeping_its_extension():
    long_name = "raport_" + "bardzo_dlugi_" * 40 + ".pdf"
    raw = multipart(f'Content-Type: application/pdf; name="{long_name}"\n\nx'.encode())
    filename = parse_mail(raw).attachments[0].filename
    assert len(filename) <= 200 and filename.startswith("raport_") and filename.endswith(".pdf")


def test_attachment_over_the_cap_is_listed_without_data():
    payload = os.urandom(5000)
    raw = multipart(b"Content-Type: text/plain\n\nsee attachments",
                    b"Content-Type: application/zip; name=big.zip\n"
                    b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(payload),
                    b"Content-Type: application/pdf; name=small.pdf\n\n%PDF")
    big, small = parse_mail(raw, attachment_max_bytes=1000).attachments
    assert (big.filename, big.data, big.size, big.truncated) == ("big.zip", b"", 5000, True)
    assert (small.data, small.size, small.truncated) == (b"%PDF", 4, False)
    uncapped = parse_mail(raw).attachments[0]
    assert (uncapped.data, uncapped.size, uncapped.truncated) == (payload, 5000, False)


def test_sloppy_transfer_encoding_label_is_still_decoded():
    raw = multipart(b"Content-Type: application/pdf; name=a.pdf\n"
                    b"Content-Transfer-Encoding: Base64; \n\nJVBERi0x\nJVBE")
    assert parse_mail(raw).attachments[0].data == b"%PDF-1%PD"


# --- hostile and broken input ----------------------------------------------------------------


def test_mime_tree_nested_deeper_than_the_limit_is_cut_with_a_defect():
    levels = 120
    body = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i)
                    for i in range(levels))
    raw = (b"From: a@example.com\nSubject: deep\n" + body
           + b"Content-Type: text/plain\n\ntoo deep to read\n"
           + b"".join(b"--b%d--\n" % i for i in reversed(range(levels))))
    parsed = parse_mail(raw)
    assert parsed.subject == "deep"
    assert "too deep to read" not in parsed.text
    assert any(str(MAX_MIME_DEPTH) in defect and "nesting" in defect for defect in parsed.defects)


def test_a_text_part_beside_a_too_deep_tree_is_still_read():
    deep = b"".join(b"Content-Type: multipart/mixed; boundary=d%d\n\n--d%d\n" % (i, i)
                    for i in range(80)) + b"Content-Type: text/plain\n\nhidden\n"
    raw = multipart(b"Content-Type: text/plain\n\nvisible", deep)
    assert parse_mail(raw).text == "visible"


def test_deeply_nested_forwarded_messages_do_not_recurse_forever():
    raw = b"From: a@example.com\nContent-Type: message/rfc822\n\n" * 500 + b"From: x@y.z\n\nin"
    parsed = parse_mail(raw)
    assert parsed.from_email == "a@example.com"
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]


def test_thousands_of_parts_and_huge_headers_parse():
    parts = [b"Content-Type: application/octet-stream; name=f%d.bin\n\nx" % i
             for i in range(3000)]
    parsed = parse_mail(multipart(*parts))
    assert 900 <= len(parsed.attachments) <= 1000
    assert any("MIME parts" in defect for defect in parsed.defects)
    huge = parse_mail(mail("From: a@example.com\nSubject: " + "x" * 1_000_000, b"body"))
    assert huge.text == "body" and huge.subject.startswith("xxx")
    garbage_to = parse_mail(mail("From: a@example.com\nTo: " + "<<@@,,((" * 100_000, b"b"))
    assert garbage_to.to == []


def test_nul_bytes_and_control_characters_do_not_reach_the_result():
    raw = (b"From: Jan\x00 <jan@example.com>\nSubject: awaria\x00 kasy\x07\n"
           b"Content-Type: text/plain\n\nbody\x00 text")
    parsed = parse_mail(raw)
    assert parsed.subject == "awaria kasy"
    assert parsed.text == "body text"
    assert "\x00" not in parsed.from_name


def test_deeply_nested_html_is_cut_instead_of_taking_minutes():
    raw = mail("From: a@example.com\nContent-Type: text/html",
               b"<p>start</p>" + b"<div>" * 100_000 + b"end")
    parsed = parse_mail(raw)
    assert parsed.text == "start"
    assert any("HTML nested deeper" in defect for defect in parsed.defects)


def test_obsolete_header_syntax_bom_and_leading_blank_lines_are_tolerated():
    raw = b"\xef\xbb\xbf\r\nFrom  : Jan <jan@example.com>\r\nSubject : hi\r\n\r\nbody"
    parsed = parse_mail(raw)
    assert (parsed.from_email, parsed.subject, parsed.text) == ("jan@example.com", "hi", "body")


def test_multipart_without_boundary_is_read_as_text():
    raw = mail("From: a@example.com\nContent-Type: multipart/mixed", b"just text\n")
    assert parse_mail(raw).text == "just text"


@pytest.mark.parametrize("garbage", [
    b"",
    b"   \r\n\r\n\t",
    b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
    b"This is a simple message not having headers.\nJust text.\n",
    bytes(range(256)) * 20,
])
def test_bytes_that_are_not_a_mail_raise_unparseable_mail(garbage):
    with pytest.raises(UnparseableMail):
        parse_mail(garbage)


def test_unexpected_errors_become_unparseable_mail_with_a_reason():
    with pytest.raises(UnparseableMail, match="TypeError"):
        parse_mail("From: a@example.com\n\nnot bytes")  # type: ignore[arg-type]


def test_random_bytes_never_raise_anything_else():
    randomness = __import__("random").Random(1234)
    seed = multipart(b"Content-Type: text/plain; charset=iso-8859-2\n\n" + POLISH.encode("utf-8"),
                     b"Content-Type: application/pdf; name*=utf-8''a%C5%82.pdf\n"
                     b"Content-Transfer-Encoding: base64\n\nJVBERi0x",
                     headers="Subject: =?utf-8?q?Zg=C5=82oszenie?=\n")
    for _ in range(300):
        mutated = bytearray(seed)
        for _ in range(randomness.randint(1, 20)):
            mutated[randomness.randrange(len(mutated))] = randomness.randrange(256)
        try:
            parse_mail(bytes(mutated))
        except UnparseableMail:
            pass


# --- the shared corpus -----------------------------------------------------------------------

# Files that are no mail at all: body-only text and fuzzer output without one header line.
NOT_MAIL = {
    "malformed/enmime__mail_erroneous.eml",
    "malformed/mime4j__malformedHeader-noheader.eml",
    "malformed/kmime__clusterfuzz-testcase-minimized-kmime_fuzzer-6349101081100288.eml",
}


def test_every_corpus_file_parses_or_is_refused_as_not_a_mail(corpus_dir):
    refused = {}
    files = sorted(corpus_dir.rglob("*.eml"))
    assert files
    for path in files:
        try:
            parsed = parse_mail(path.read_bytes())
        except UnparseableMail as exc:
            refused[path.relative_to(corpus_dir).as_posix()] = str(exc)
            continue
        assert isinstance(parsed.subject, str) and "\n" not in parsed.subject, path
        assert parsed.date is None or parsed.date.utcoffset() is not None, path
        assert all("/" not in a.filename and "\\" not in a.filename
                   for a in parsed.attachments), path
    assert set(refused) == NOT_MAIL, refused


def read(corpus_dir, name: str):
    return parse_mail((corpus_dir / name).read_bytes())


def test_corpus_windows_1250_encoded_auto_reply_subject(corpus_dir):
    parsed = read(corpus_dir, "charsets/phpmmp__issue212.eml")
    assert parsed.subject == ("Automatyczna odpowiedź: Piotrze, test z 6 miesięcy nauki "
                              "ciągle na Ciebie czeka")
    assert parsed.text == "toto"


def test_corpus_iso_8859_2_encoded_from_name(corpus_dir):
    parsed = read(corpus_dir, "charsets/webklex__issue-511.eml")
    assert parsed.from_name == "COMPANYNAME | usługi"
    assert parsed.from_email == "sender@sender_domain.tld"
    assert parsed.subject == "RE: [EXTERNAL] Re: Lorem Ipsum /40 one"


def test_corpus_iso_8859_2_8bit_body(corpus_dir):
    gwava = "charsets/spamassassin__rules_VBOUNCE_MESSAGE_bug5884_att4343_gwava.eml"
    parsed = read(corpus_dir, gwava)
    assert parsed.subject == "Wiadomosc odrzucona/Blocked Message (RBL block)"
    assert "Wiadomość wysłana przez Ciebie:" in parsed.text
    assert "Nie została dostarczona do odbiorcy. Powód blokady przesyłki:" in parsed.text
    assert "W przypadku wątpliwości i niejasności proszę o kontakt" in parsed.text
    assert parsed.date == datetime(2008, 6, 9, 1, 33, 7, tzinfo=timezone.utc)


def test_corpus_other_central_european_and_western_samples(corpus_dir):
    assert read(corpus_dir, "charsets/djhelpdesk__quoted_printable.eml").subject == "Český test"
    assert read(corpus_dir, "charsets/rt__emails_8859-15-message-series_msg1.eml").subject == \
        "test äöüßÄÖÜß€"
    assert read(corpus_dir, "malformed/flanker__from-encoding.eml").from_name == "Ingo Lütkebohle"
    latin1 = read(corpus_dir, "charsets/mime4j__mimetools_attachment-filename-encoding-Latin1.eml")
    assert [a.filename for a in latin1.attachments] == ["attachment.äöü"]


def test_corpus_path_traversal_attachment_name(corpus_dir):
    parsed = read(corpus_dir, "malformed/phpmmp__m0027.eml")
    assert [a.filename for a in parsed.attachments] == ["1234.txt"]


def test_corpus_deep_nesting_sample(corpus_dir):
    parsed = read(corpus_dir, "wellformed/rs-mailparse__nested.eml")
    assert parsed.subject == "recursion test"
    assert any("nesting deeper" in defect for defect in parsed.defects)
