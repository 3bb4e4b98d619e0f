"""The public form: prefill, validation next to each field, CSRF, honeypot, rate limit,
attachments, and a report filed through the mail intake with its number shown."""
from __future__ import annotations

import io
import re
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from daemon.parse import parse_mail
from daemon.pipeline import Pipeline
from daemon.store.models import Attachment, Blob, Message, OutboxMail, RawMessage, Ticket
from tests.conftest import NOW
from tests.fixtures_web import csrf_token
from webform.config import FormConfig
from webform.public import Report, build_mail, clean_value, safe_filename

REPORTER = "jan.kowalski@gmail.com"
INPUT_NAMES = ("name", "email", "phone", "client", "location", "category", "subject",
               "description", "attachments")


def report(**overrides) -> dict:
    values = {"name": "Jan Kowalski", "email": REPORTER, "phone": "+48 600 100 200",
              "client": "Sieć Bursztyn", "location": "Sklep 12, Gdańsk, ul. Długa 5",
              "category": "fiscal_printer", "subject": "Drukarka fiskalna nie drukuje paragonów",
              "description": "Od rana drukarka pokazuje błąd E07 i nie drukuje.\nRestart nie pomógł."}
    values.update(overrides)
    return values


def submit(visitor, *, files=(), headers=None, environ=None, **overrides):
    """POST the form as a browser would, with the visit's CSRF token (VISITOR: a test client)."""
    data = {"csrf_token": csrf_token(visitor), **report(**overrides)}
    if files:
        data["attachments"] = [(io.BytesIO(content), name) for name, content in files]
    return visitor.post("/", data=data, content_type="multipart/form-data", headers=headers,
                       environ_base=environ or {})


def field_html(page: str, name: str) -> str:
    """The markup of one field's block: its label, input and error message."""
    match = re.search(rf'<div class="field[^"]*" id="field-{name}">(.*?)</div>', page, re.S)
    assert match, f"no field block for {name}"
    return match.group(1)


def rows(store, model, *criteria):
    with store.transaction() as session:
        return list(session.scalars(select(model).where(*criteria).order_by(model.id)).unique())


def confirmation(client, response) -> str:
    """The confirmation page's text, tags removed, as a person reads it."""
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


# -- the page ---------------------------------------------------------------------------------------
def test_form_has_every_input_name_and_a_csrf_token(client):
    page = client.get("/").get_data(as_text=True)
    for name in INPUT_NAMES:
        assert f'name="{name}"' in page, name
    assert 'name="csrf_token"' in page and 'enctype="multipart/form-data"' in page
    assert 'type="file" id="attachments" name="attachments" multiple' in page


def test_form_is_polish_first_and_lists_networks_and_categories(client):
    page = client.get("/").get_data(as_text=True)
    assert "Zgłoś problem" in page and 'name="viewport"' in page
    for option in ('<option value="Sieć Bursztyn"', '<option value="Market Kaszub"',
                   '<option value="other"', ">Drukarka fiskalna<", ">Kasa<", ">Inne<"):
        assert option in page, option


def test_query_parameters_prefill_the_form(client):
    page = client.get("/?name=Jan%20Nowak&email=jan%40bursztyn.pl&phone=600100200"
                      "&client=sie%C4%87%20bursztyn&location=Sklep%207&category=Drukarka%20fiskalna"
                      "&subject=Kasa%20nie%20dzia%C5%82a&description=Opis%0Alinia%202").get_data(as_text=True)
    assert 'value="Jan Nowak"' in field_html(page, "name")
    assert 'value="jan@bursztyn.pl"' in field_html(page, "email")
    assert 'value="600100200"' in field_html(page, "phone")
    assert '<option value="Sieć Bursztyn" selected>' in field_html(page, "client")
    assert 'value="Sklep 7"' in field_html(page, "location")
    assert '<option value="fiscal_printer" selected>' in field_html(page, "category")
    assert 'value="Kasa nie działa"' in field_html(page, "subject")
    assert ">Opis\nlinia 2</textarea>" in field_html(page, "description")


def test_prefill_is_escaped_and_kept_to_one_line(client):
    page = client.get('/?name=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E'
                      '&subject=A%0D%0ABcc%3A%20x%40evil.example').get_data(as_text=True)
    assert "<script>alert(1)" not in page
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in field_html(page, "name")
    assert 'value="A Bcc: x@evil.example"' in field_html(page, "subject")


def test_form_in_english(client):
    page = client.get("/?lang=en").get_data(as_text=True)
    assert "Report a problem" in page and ">Fiscal printer<" in page and "Send report" in page


# -- validation -----------------------------------------------------------------------------------------
def test_missing_fields_are_named_next_to_each_field_and_values_kept(client, store):
    response = submit(client, name="", email="", client="", location="", category="", subject="",
                      description="", phone="")
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and "Popraw zaznaczone pola." in page
    for name in ("name", "email", "client", "location", "category", "subject", "description"):
        block = field_html(page, name)
        assert "To pole jest wymagane." in block and 'aria-invalid="true"' in block, name
    assert "To pole jest wymagane." not in field_html(page, "phone")  # optional
    assert rows(store, RawMessage) == []


def test_invalid_values_are_explained_at_their_field(client, store):
    response = submit(client, email="jan at example", phone="call me maybe", client="Nieznana",
                      category="coffee machine", subject="x" * 201)
    page = response.get_data(as_text=True)
    assert "Podaj poprawny adres e-mail" in field_html(page, "email")
    assert "Podaj numer telefonu" in field_html(page, "phone")
    assert "Wybierz sieć z listy." in field_html(page, "client")
    assert "Wybierz kategorię z listy." in field_html(page, "category")
    assert "Najwyżej 200 znaków." in field_html(page, "subject")
    assert 'value="Jan Kowalski"' in field_html(page, "name")  # the good values stay
    assert "Od rana drukarka" in field_html(page, "description")
    assert rows(store, RawMessage) == []


def test_validation_messages_in_english(client):
    client.get("/?lang=en")
    page = submit(client, email="").get_data(as_text=True)
    assert "This field is required." in field_html(page, "email")


def test_an_address_with_a_line_break_is_refused(client, store):
    page = submit(client, email="jan@example.com\r\nBcc: x@evil.example").get_data(as_text=True)
    assert "Podaj poprawny adres e-mail" in field_html(page, "email")
    assert rows(store, RawMessage) == []


def test_missing_csrf_token_is_refused_and_nothing_saved(client, store):
    response = client.post("/", data=report())
    assert response.status_code == 400 and "Formularz wygasł" in response.get_data(as_text=True)
    forged = client.post("/", data={**report(), "csrf_token": "forged"})
    assert forged.status_code == 400
    assert rows(store, RawMessage) == []


# -- bots ----------------------------------------------------------------------------------------------
def test_honeypot_pretends_success_and_stores_nothing(client, store, caplog):
    response = submit(client, website="http://spam.example")
    page = confirmation(client, response)
    assert "Zgłoszenie przyjęte" in page and "JAN-" not in page
    assert rows(store, RawMessage) == [] and rows(store, Ticket) == []
    assert "honeypot" in caplog.text


def test_rate_limit_per_client_address_and_per_email(web_app, store):
    app = web_app(form={"rate_limit": 2, "rate_window": "10m"})
    client = app.test_client()
    for n in range(2):
        assert submit(client, subject=f"Problem {n}").status_code == 303
    refused = submit(client, subject="Problem 3")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Spróbuj ponownie za" in refused.get_data(as_text=True)
    # The same address from another machine waits too; another person there does not.
    elsewhere = {"REMOTE_ADDR": "10.9.8.7"}
    assert submit(client, subject="Problem 4", environ=elsewhere).status_code == 429
    assert submit(client, subject="Problem 5", email="ktos@inny.pl",
                  environ=elsewhere).status_code == 303
    assert len(rows(store, Ticket)) == 3


# -- filing ----------------------------------------------------------------------------------------------
def test_report_becomes_a_web_ticket_with_category_and_network_and_an_ack(client, store):
    response = submit(client)
    page = confirmation(client, response)
    [ticket] = rows(store, Ticket)
    assert "Zgłoszenie JAN-1 przyjęte" in page and ticket.number == "JAN-1"
    assert (ticket.channel, ticket.category, ticket.client.name, ticket.requester_email,
            ticket.requester_name, ticket.subject) == \
        ("web", "fiscal_printer", "Sieć Bursztyn", REPORTER, "Jan Kowalski",
         "Drukarka fiskalna nie drukuje paragonów")
    [raw] = rows(store, RawMessage)
    assert (raw.channel, raw.status, raw.origin, raw.mailbox) == \
        ("web", "processed", "127.0.0.1", "sklep@jantar.pl")
    assert raw.idempotency_key.startswith("web:") and raw.envelope["form"]["category"] == "fiscal_printer"
    [message] = rows(store, Message, Message.direction == "in")
    assert "Od rana drukarka pokazuje błąd E07" in message.text
    for detail in ("Telefon: +48 600 100 200", "Sieć: Sieć Bursztyn",
                   "Sklep / lokalizacja: Sklep 12, Gdańsk, ul. Długa 5", "Kategoria: Drukarka fiskalna"):
        assert detail in message.text
    [ack] = rows(store, OutboxMail, OutboxMail.kind == "ack")
    mail = BytesParser(policy=policy.default).parsebytes(ack.raw)
    assert ack.recipients == [REPORTER] and "[#JAN-1]" in mail["Subject"]
    assert "JAN-1" in mail.get_body(("plain",)).get_content()
    assert rows(store, OutboxMail, OutboxMail.kind == "coordinator_new")  # the coordinator hears


def test_confirmation_shows_only_the_number_in_its_token(client, store):
    first = submit(client)
    second = submit(client, subject="Inny problem: skaner")
    page = confirmation(client, second)
    assert "JAN-2" in page and "JAN-1" not in page and "Drukarka" not in page
    token = first.headers["Location"].rsplit("/", 1)[1]
    assert client.get(f"/submitted/{token[:-2]}xx").status_code == 404  # tampered


def test_the_network_from_the_address_wins_over_the_choice(client, store):
    submit(client, email="kierownik@kaszub.com.pl", client="Sieć Bursztyn")
    submit(client, email="ktos@example.org", client="other")
    first, second = rows(store, Ticket)
    assert first.client.name == "Market Kaszub" and second.client is None


def test_the_same_report_sent_twice_is_one_ticket(client, store):
    first, second = submit(client), submit(client)
    assert first.headers["Location"] == second.headers["Location"]
    assert len(rows(store, RawMessage)) == 1 and len(rows(store, Ticket)) == 1


def test_a_ticket_tag_in_the_subject_opens_a_new_ticket(client, store):
    submit(client)
    page = confirmation(client, submit(client, subject="[#JAN-1] zupełnie nowy problem"))
    assert "JAN-2" in page
    incoming = rows(store, Message, Message.direction == "in")
    assert sorted(m.ticket_id for m in incoming) == [t.id for t in rows(store, Ticket)]


def test_english_form_gives_an_english_ticket_and_ack(client, store):
    client.get("/?lang=en")
    page = confirmation(client, submit(client))
    assert "Report JAN-1 received" in page
    [ticket] = rows(store, Ticket)
    [ack] = rows(store, OutboxMail, OutboxMail.kind == "ack")
    assert ticket.language == "en"
    body = BytesParser(policy=policy.default).parsebytes(ack.raw).get_body(("plain",)).get_content()
    assert "Dzień dobry" not in body


def test_form_on_a_form_only_mailbox_still_opens_a_ticket(web_app, store):
    app = web_app(mailboxes=[{"address": "sklep@jantar.pl", "new_mail": "form"}])
    client = app.test_client()
    submit(client)
    [ticket] = rows(store, Ticket)
    assert ticket.channel == "web"
    assert rows(store, OutboxMail, OutboxMail.kind == "form_invite") == []


def test_form_goes_to_the_configured_mailbox(web_app, store):
    app = web_app(form={"mailbox": "serwis@jantar.pl"})
    submit(app.test_client())
    [ticket] = rows(store, Ticket)
    [ack] = rows(store, OutboxMail, OutboxMail.kind == "ack")
    assert ticket.mailbox == "serwis@jantar.pl" and ack.mail_from == "serwis@jantar.pl"


def test_when_processing_fails_the_report_is_kept_and_a_reference_shown(client, store, monkeypatch):
    def broken_step(intake):
        raise RuntimeError("a bug in a pipeline step")

    monkeypatch.setattr("webform.public.Pipeline",
                        lambda config, store, clock: Pipeline(config, store, clock,
                                                              steps=(broken_step,)))
    page = confirmation(client, submit(client))
    [raw] = rows(store, RawMessage)
    assert raw.status == "quarantined" and rows(store, Ticket) == []
    assert "Zgłoszenie przyjęte" in page and f"WEB-{raw.id}" in page


def test_when_the_store_goes_away_after_saving_the_report_waits_for_the_daemon(client, store,
                                                                               monkeypatch):
    class StoreGone:
        def __init__(self, *args):
            pass

        def process_one(self, raw_id):
            raise OperationalError("UPDATE raw_messages", {}, Exception("connection lost"))

    monkeypatch.setattr("webform.public.Pipeline", StoreGone)
    page = confirmation(client, submit(client))
    [raw] = rows(store, RawMessage)
    assert raw.status == "pending"  # saved: the daemon's pipeline files it later
    assert f"WEB-{raw.id}" in page


def test_store_unreachable_when_sending_says_so_and_claims_nothing(client, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError("INSERT INTO raw_messages", {}, Exception("connection refused"))

    monkeypatch.setattr("webform.public.save_raw", unreachable)
    response = submit(client)
    page = response.get_data(as_text=True)
    assert response.status_code == 503 and "Baza danych niedostępna" in page
    assert "przyjęte" not in page


# -- header injection -------------------------------------------------------------------------------------
def test_line_breaks_in_name_and_subject_never_reach_an_outgoing_header(client, store):
    submit(client, name="Jan\r\nBcc: victim@evil.example", subject="Kasa\nBcc: victim@evil.example",
           location="Sklep\r\nX-Injected: 1", phone="600\n100")
    [ticket] = rows(store, Ticket)
    assert ticket.subject == "Kasa Bcc: victim@evil.example" and ticket.requester_name.startswith("Jan")
    outbox = rows(store, OutboxMail)
    assert {m.kind for m in outbox} == {"ack", "coordinator_new"}
    for row in outbox:
        mail = BytesParser(policy=policy.default).parsebytes(row.raw)
        names = {name.lower() for name in mail.keys()}
        assert "bcc" not in names and "x-injected" not in names
        recipients = [a for _, a in getaddresses(mail.get_all("To", []) + mail.get_all("Cc", []))]
        assert "victim@evil.example" not in recipients + row.recipients
        for name, value in mail.items():
            assert "\r" not in str(value) and "\n" not in str(value), name
    with store.transaction() as session:
        [raw] = session.scalars(select(RawMessage))
        incoming = BytesParser(policy=policy.default).parsebytes(raw.raw)
    assert "bcc" not in {name.lower() for name in incoming.keys()}


HEADER_TRAPS = st.sampled_from(["=?utf-8?b?xx?=", "=?us-ascii?q?x?=", "=?", "?=", "ł", "Ż", "日本",
                                 '"', "\\", "<", ">", ",", ";", ":", "@", " ", "\r\n", "\n",
                                 "Bcc: x@evil.example", "a" * 70, "😀"])
ONE_LINE_TEXT = st.lists(st.one_of(HEADER_TRAPS, st.text(max_size=20)), min_size=1, max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(name=ONE_LINE_TEXT, subject=ONE_LINE_TEXT)
def test_any_typed_name_and_subject_make_a_mail_that_reads_back_the_same(name, subject):
    """Whatever is typed: the mail builds (the stdlib's folding fails on some text), its
    headers stay one line each, and the pipeline's parser reads back what was typed."""
    name, subject = clean_value("name", name)[:200], clean_value("subject", subject)[:200]
    values = {**report(name=name, subject=subject), "email": "jan@example.com"}
    raw = build_mail(Report(values), FormConfig(), mailbox="sklep@jantar.pl", now=NOW)
    parsed = parse_mail(raw)
    assert " ".join(parsed.subject.split()) == " ".join(subject.split())
    assert " ".join(parsed.from_name.split()) == " ".join(name.split())
    assert parsed.from_email == "jan@example.com" and "bcc" not in parsed.headers


# -- attachments -----------------------------------------------------------------------------------------
def test_attachments_reach_the_ticket(client, store):
    photo, log = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000, "Błąd E07\n".encode()
    submit(client, files=[("ekran.png", photo), ("log kasy.txt", log)])
    [message] = rows(store, Message, Message.direction == "in")
    with store.transaction() as session:
        files = {(a.filename, a.content_type, a.size, session.get(Blob, a.blob_sha256).data)
                 for a in session.scalars(select(Attachment).where(Attachment.message_id == message.id))}
    assert files == {("ekran.png", "image/png", len(photo), photo),
                     ("log kasy.txt", "text/plain", len(log), log)}


@pytest.mark.parametrize("files, message", [
    ([(f"zdjecie{n}.jpg", b"x") for n in range(3)], "Najwyżej 2 plików."),
    ([("duzy.pdf", b"x" * 2049)], "Plik duzy.pdf jest za duży (najwyżej 0.00195312 MB)."),
    ([("program.exe", b"MZ")], "Plik program.exe: niedozwolony typ."),
])
def test_attachments_over_the_limits_are_refused_at_their_field(web_app, store, files, message):
    app = web_app(form={"max_attachments": 2, "max_attachment_bytes": 2048,
                        "allowed_types": ["jpg", "pdf", "txt"]})
    client = app.test_client()
    response = submit(client, files=files)
    assert response.status_code == 422
    assert message in field_html(response.get_data(as_text=True), "attachments")
    assert rows(store, RawMessage) == []


def test_a_request_larger_than_the_form_allows_gets_the_413_page(web_app, store):
    app = web_app(form={"max_attachments": 1, "max_attachment_bytes": 1024})
    client = app.test_client()
    response = submit(client, files=[("big.pdf", b"x" * (2 * 1024 * 1024))])
    assert response.status_code == 413 and "Za duże pliki" in response.get_data(as_text=True)
    assert rows(store, RawMessage) == []


def test_attachment_names_cannot_carry_paths_or_line_breaks(client, store):
    submit(client, files=[("../../etc/passwd.txt", b"abc"), ("C:\\Users\\jan\\zdjęcie.jpg", b"x")])
    [message] = rows(store, Message, Message.direction == "in")
    names = {a.filename for a in rows(store, Attachment, Attachment.message_id == message.id)}
    assert names == {"passwd.txt", "zdjęcie.jpg"}
    assert safe_filename("raport\r\nBcc: x@evil.example.txt") == "raport Bcc: x@evil.example.txt"
    assert safe_filename("..") == "plik" and len(safe_filename("a" * 500 + ".pdf")) <= 200


# -- configuration ---------------------------------------------------------------------------------------
def test_categories_and_limits_come_from_configuration(web_app):
    app = web_app(form={"categories": ["Terminal płatniczy", {"key": "scale", "pl": "Waga",
                                                              "en": "Scale"}]})
    page = app.test_client().get("/").get_data(as_text=True)
    assert '<option value="Terminal płatniczy"' in page and '<option value="scale"' in page
    assert ">Kasa<" not in page


def test_bad_form_and_web_sections_are_reported_by_key(make_config, store):
    from daemon.config import ConfigError
    with pytest.raises(ConfigError) as caught:
        make_config(store.url, form={"mailbox": "nie@jantar.pl", "categories": [3], "colour": "red"},
                    web={"listen": "nowhere", "login_attempts": 0})
    problems = "\n".join(caught.value.problems)
    for key in ("form.mailbox", "form.categories[0]", "form.colour: unknown key",
                "web.listen: expected HOST:PORT", "web.login_attempts"):
        assert key in problems, key
