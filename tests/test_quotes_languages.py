"""Replies written in real mail clients, in five languages, lose their quote (and the
technician's own signature) on the way through the helpdesk.

A technician answers a notice from Gmail, Outlook (today's and the classic one), Apple Mail
or Thunderbird, set to Polish, English, German, French or Spanish: the customer receives,
through the SMTP sink, exactly what the technician wrote above the quote, once signed (ours).
A customer answers the relay the same way: the technician receives exactly the customer's
new text. Each client writes its quote header as it does in that language (dates, no-break
spaces, Gmail's wrapping of a long attribution inside the address).
"""
from __future__ import annotations

import re

import pytest

from daemon.rules.quotes import REPLY_ABOVE, strip_quoted, strip_signature
from tests.mailfactory import make_mail
from tests.test_conversation import (ANNA, CUSTOMER, assigned_ticket,  # noqa: F401 (fixtures)
                                     helpdesk, helpdesk_factory, one_to, text_of)

LANGUAGES = ("pl", "en", "de", "fr", "es")
CLIENTS = ("gmail", "outlook", "outlook-classic", "apple", "thunderbird")

GMAIL = {
    "pl": "śr., 25 lis 2026 o 11:00 {name} <{address}> napisał(a):",
    "en": "On Wed, Nov 25, 2026 at 11:00\u202fAM {name} <{address}> wrote:",
    "de": "Am Mi., 25. Nov. 2026 um 11:00 Uhr schrieb {name} <{address}>:",
    "fr": "Le mer. 25 nov. 2026 à 11:00, {name} <{address}> a écrit :",
    "es": "El mié, 25 nov 2026 a las 11:00, {name} (<{address}>) escribió:",
}
APPLE = {
    "pl": "Wiadomość napisana przez {name} <{address}> w dniu 25.11.2026, o godz. 11:00:",
    "en": "On 25 Nov 2026, at 11:00, {name} <{address}> wrote:",
    "de": "Am 25.11.2026 um 11:00 schrieb {name} <{address}>:",
    "fr": "Le 25 nov. 2026 à 11:00, {name} <{address}> a écrit :",
    "es": "El 25 nov 2026, a las 11:00, {name} <{address}> escribió:",
}
THUNDERBIRD = {
    "pl": "W dniu 25.11.2026 o 11:00, {name} pisze:",
    "en": "On 25/11/2026 11:00, {name} wrote:",
    "de": "Am 25.11.26 um 11:00 schrieb {name}:",
    "fr": "Le 25/11/2026 à 11:00, {name} a écrit :",
    "es": "El 25/11/26 a las 11:00, {name} escribió:",
}
# (From, Sent, To, Subject, the date), as Outlook labels its header block; French Outlook
# puts a no-break space before each colon.
OUTLOOK = {
    "pl": ("Od", "Wysłano", "Do", "Temat", "środa, 25 listopada 2026 11:00"),
    "en": ("From", "Sent", "To", "Subject", "Wednesday, November 25, 2026 11:00 AM"),
    "de": ("Von", "Gesendet", "An", "Betreff", "Mittwoch, 25. November 2026 11:00"),
    "fr": ("De\xa0", "Envoyé\xa0", "À\xa0", "Objet\xa0", "mercredi 25 novembre 2026 11:00"),
    "es": ("De", "Enviado", "Para", "Asunto", "miércoles, 25 de noviembre de 2026 11:00"),
}
CLASSIC_SEPARATOR = {
    "pl": "-----Oryginalna wiadomość-----", "en": "-----Original Message-----",
    "de": "-----Ursprüngliche Nachricht-----", "fr": "-----Message d'origine-----",
    "es": "-----Mensaje original-----",
}


def gmail_wrapped(line: str) -> str:
    """Gmail breaks an attribution longer than 78 characters inside the address."""
    if len(line) <= 78:
        return line
    at = line.index("<") + 1
    return line[:at] + "\n" + line[at:]


def client_reply(client: str, language: str, new_text: str, answered, signature: str = "") -> str:
    """NEW_TEXT above the quote of ANSWERED (a delivered mail) as CLIENT in LANGUAGE writes it."""
    name, address = _sender(answered)
    original = text_of(answered).replace("\r\n", "\n").rstrip("\n").split("\n")
    quoted = "\n".join(f"> {line}" if line else ">" for line in original)
    top = new_text + (f"\n\n{signature}" if signature else "")
    if client == "gmail":
        header = gmail_wrapped(GMAIL[language].format(name=name, address=address))
        return f"{top}\n\n{header}\n\n{quoted}\n"
    if client == "apple":
        return f"{top}\n\n{APPLE[language].format(name=name, address=address)}\n\n{quoted}\n"
    if client == "thunderbird":
        return f"{top}\n\n{THUNDERBIRD[language].format(name=name)}\n{quoted}\n"
    sender, sent, to, subject, date = OUTLOOK[language]
    plain = "\n".join(original)
    if client == "outlook":
        block = (f"________________________________\n{sender}: {name} <{address}>\n"
                 f"{sent}: {date}\n{to}: {answered['To']}\n{subject}: {answered['Subject']}")
    else:  # classic Outlook (2010-2016): a dashed separator, "[mailto:…]", no rule
        block = (f"{CLASSIC_SEPARATOR[language]}\n{sender}: {name} [mailto:{address}]\n"
                 f"{sent}: {date}\n{to}: {answered['To']}\n{subject}: {answered['Subject']}")
    return f"{top}\n\n{block}\n\n{plain}\n"


def _sender(mail) -> tuple[str, str]:
    header = mail["From"]
    return header.addresses[0].display_name, header.addresses[0].addr_spec


# What a technician writes above the quote, with the signature each client adds.
TECHNICIAN_TEXT = ("Dzień dobry,\nproszę wyłączyć drukarkę na 30 sekund i włączyć ją ponownie.\n"
                   "Jeśli to nie pomoże, przyjadę jutro o 9:00.")
PHONE = "tel. +48 58 123 45 67"
SIGNATURES = {   # client: (the signature, the sign-off that stays in the relay)
    "gmail": (f"-- \nAnna Kowalska\nJantar sp. z o.o. — wsparcie L1\n{PHONE}", ""),
    "outlook": (f"Pozdrawiam\nAnna Kowalska\nSpecjalista wsparcia L1 | Jantar sp. z o.o.\n"
                f"{PHONE} | {ANNA}", "Pozdrawiam"),
    "outlook-classic": (f"Z poważaniem\nAnna Kowalska\nJantar sp. z o.o.\n{PHONE}",
                        "Z poważaniem"),
    "apple": (f"Pozdrawiam,\nAnna Kowalska\n{PHONE}\n\nSent from my iPhone", "Pozdrawiam,"),
    "thunderbird": (f"-- \nAnna Kowalska\nJantar sp. z o.o.\n{PHONE}", ""),
}
CUSTOMER_TEXT = {
    "pl": "Dziękuję, drukarka znowu drukuje.\nTylko kasa nr 3 jeszcze piszczy.",
    "en": "Thank you, the printer works again.\nOnly till 3 still beeps.",
    "de": "Danke, der Drucker druckt wieder.\nNur Kasse 3 piept noch.",
    "fr": "Merci, l'imprimante fonctionne de nouveau.\nSeule la caisse 3 bipe encore.",
    "es": "Gracias, la impresora vuelve a funcionar.\nSolo la caja 3 sigue pitando.",
}
CUSTOMER_SIGNATURE = "Jan Nowak\nkierownik sklepu nr 12, Sieć Bursztyn\ntel. 600 100 200"


def relayed_body(relay) -> str:
    """What the customer reads above our signature ("-- " and the technician's name)."""
    return text_of(relay).replace("\r\n", "\n").split("\n-- \n")[0].rstrip()


def forwarded_text(forward) -> str:
    """The customer's text in a forward: between its first line and the ticket's link."""
    text = text_of(forward).replace("\r\n", "\n")
    return text.split(":\n\n", 1)[1].split("\n\nZgłoszenie: ")[0].rstrip()


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("client", CLIENTS)
def test_technician_reply_reaches_the_customer_without_quote_and_signed_once(
        helpdesk, client, language):
    number, notice = assigned_ticket(helpdesk)
    signature, sign_off = SIGNATURES[client]
    body = client_reply(client, language, TECHNICIAN_TEXT, notice, signature)
    sent = helpdesk.mail(make_mail(sender=f"Anna Kowalska <{ANNA}>",
                                   subject=f"Re: {notice['Subject']}",
                                   in_reply_to=notice["Message-ID"], body=body))
    relay = one_to(sent, CUSTOMER).message
    expected = TECHNICIAN_TEXT + (f"\n\n{sign_off}" if sign_off else "")
    assert relayed_body(relay) == expected
    text = text_of(relay)
    assert text.count("Anna Kowalska") == 1 and PHONE not in text   # our signature alone
    assert REPLY_ABOVE not in text and "Zgłaszający" not in text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("client", CLIENTS)
def test_customer_reply_reaches_the_technician_without_quote(helpdesk, client, language):
    number, notice = assigned_ticket(helpdesk)
    sent = helpdesk.mail(make_mail(sender=f"Anna Kowalska <{ANNA}>",
                                   subject=f"Re: {notice['Subject']}",
                                   in_reply_to=notice["Message-ID"], body=TECHNICIAN_TEXT))
    relay = one_to(sent, CUSTOMER).message
    body = client_reply(client, language, CUSTOMER_TEXT[language], relay, CUSTOMER_SIGNATURE)
    sent = helpdesk.mail(make_mail(sender=f"Jan Nowak <{CUSTOMER}>",
                                   subject=f"Re: {relay['Subject']}",
                                   in_reply_to=relay["Message-ID"], body=body))
    forward = one_to(sent, ANNA).message
    # The customer's own signature stays: the technician may need the shop's number.
    assert forwarded_text(forward) == f"{CUSTOMER_TEXT[language]}\n\n{CUSTOMER_SIGNATURE}"


# -- the cases that worked before the library, and its limits ----------------------------------
@pytest.mark.parametrize("reply", [
    "Proszę o zdjęcie.\n\nW dniu 25.11.2026 o 11:00, Jan Nowak <jan@bursztyn.pl> napisał:\n> stare",
    "Proszę o zdjęcie.\n\nDnia 25.11.2026 Jan Nowak napisał(a):\n> stare",
    "Proszę o zdjęcie.\n\nOd: Jan Nowak <jan@bursztyn.pl>\nWysłano: 25 listopada 2026\n"
    "Do: sklep@jantar.pl\nTemat: kasa\n\nstare",
    "Proszę o zdjęcie.\n\nOd: Jan Nowak\nData: 25.11.2026\nstare",
    "Proszę o zdjęcie.\n-----Oryginalna wiadomość-----\nstare",
    "Proszę o zdjęcie.\n---------- Forwarded message ---------\nFrom: x@y.pl\nstare",
    "Proszę o zdjęcie.\n\n____________________\nstare",
    "Proszę o zdjęcie.\n\nFrom: Jan <jan@bursztyn.pl>\nDate: Wed, 25 Nov 2026\nstare",
    f"Proszę o zdjęcie.\n\n> {REPLY_ABOVE}\n> stare",
    "Proszę o zdjęcie.\n> stare\n>\n> stare",
])
def test_polish_and_outlook_quotes_are_cut_as_before(reply):
    assert strip_quoted(reply) == "Proszę o zdjęcie."


@pytest.mark.parametrize("text", [
    "Dzień dobry,\nponiżej dane:\nData: 12.12.2026\nTemat: drukarka\nKasa: 3",   # not a quote
    "On Monday the printer stopped.\nPlease come on Tuesday.",
    "Proszę wykonać:\n> ipconfig /all\ni odesłać wynik.",
    "Dnia nie pamiętam, ale drukarka padła.",
])
def test_a_reply_without_a_quote_is_kept_whole(text):
    assert strip_quoted(text) == text


@pytest.mark.parametrize("text", [
    "On Wed, Nov 25, 2026 at 11:00 AM Jan <jan@bursztyn.pl> wrote:\n> pytanie\nodpowiedź",
    "---------- Forwarded message ---------\nFrom: Jan <jan@bursztyn.pl>\n"
    "Date: Wed, 25 Nov 2026\nSubject: kasa\n\nKasa 3 nie drukuje.",
])
def test_a_mail_that_starts_with_its_quote_is_kept_whole(text):
    """Nothing stands above the header: a forward, or a bottom-posted answer."""
    assert strip_quoted(text) == text


def test_answers_between_the_quoted_lines_are_kept():
    text = ("Dzień dobry,\n\nW dniu 25.11.2026 o 11:00, Jantar Helpdesk pisze:\n"
            "> Czy drukarka jest włączona?\n\nTak, świeci na zielono.\n\n"
            "> Jaki jest numer kasy?\n\nKasa nr 3.\n\n> Pozdrawiamy\n> Jantar")
    assert strip_quoted(text) == text.rsplit("\n\n> Pozdrawiamy", 1)[0]


def test_an_armoured_block_is_no_separator():
    text = "Klucz poniżej.\n-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQENBF\n-----END PGP PUBLIC KEY BLOCK-----"
    assert strip_quoted(text) == text


def test_a_hostile_line_costs_no_more_than_a_short_one():
    """The library's header patterns are quadratic in a line's length: a 300,000 character
    line that starts like "On …" takes the library half an hour, so it reads lines cut
    short (PROBE_WIDTH); without that, this test runs into the suite's time limit."""
    line = "On " + "x y " * 75_000 + "z"
    text = f"Proszę o zdjęcie.\n{line}\n" * 3 + "\nOn Wed, 25 Nov 2026, Jan <jan@b.pl> wrote:\n> x"
    assert strip_quoted(text) == f"Proszę o zdjęcie.\n{line}\n" * 2 + f"Proszę o zdjęcie.\n{line}"


@pytest.mark.parametrize("text, expected", [
    ("Proszę zrestartować.\n\n-- \nAnna Kowalska\nJantar sp. z o.o.", "Proszę zrestartować."),
    ("Proszę zrestartować.\n\nPozdrawiam,\nAnna", "Proszę zrestartować.\n\nPozdrawiam,"),
    ("Please restart.\n\nBest regards,\nAnna Kowalska\nJantar", "Please restart.\n\nBest regards,"),
    ("Please restart.\n\nSent from my iPhone", "Please restart."),
    ("Pozdrawiam\nAnna", "Pozdrawiam\nAnna"),                       # all signature: kept
    ("Proszę:\n- zrestartować\n- sprawdzić kabel", "Proszę:\n- zrestartować\n- sprawdzić kabel"),
    ("Pozdrawiam wszystkich w sklepie.\n" + "\n".join(f"Krok {n}." for n in range(1, 12)),
     "Pozdrawiam wszystkich w sklepie.\n" + "\n".join(f"Krok {n}." for n in range(1, 12))),
])
def test_the_technicians_own_signature_block_goes(text, expected):
    assert strip_signature(text, "pl") == expected


def test_an_inner_dash_line_far_above_the_end_is_no_signature():
    text = "Krok 1.\n--\n" + "\n".join(f"Krok {n}." for n in range(2, 20))
    assert strip_signature(text, "pl") == text
    assert re.search(r"Krok 19\.$", strip_signature(text, "pl"))
