"""Write a deterministic, realistic mbox of customer mail for the ingest benchmarks.

5,000 mails (by default) from ~300 senders of ~40 client domains; Polish text in
utf-8, iso-8859-2 and windows-1250 (quoted-printable, base64 or 8bit); 70% new
problems, 30% replies tagged with the ticket an earlier mail of the same mbox opens;
10% carry a 100-500 KB attachment.

Ticket numbers are *predicted*, not read back from a store: the helpdesk numbers
tickets `<prefix>-1, -2, …` from one counter, and `helpdesk ingest` processes records
in the order it saved them, so the n-th new problem in the mbox opens `<prefix>-n`
(no new problem is automatic, a duplicate, or from a form-only mailbox). Roundup
numbers issues the same way (`issue1`, `issue2`, …), so `--roundup` writes the same
mails with the tag `[issueN]` instead of `[#<prefix>-N]`. `benchmarks.ingest`
checks the prediction after the run (every reply must land on its predicted ticket).

    python -m benchmarks.generate_mbox OUT.mbox [--count 5000] [--seed 7] [--roundup]
"""
from __future__ import annotations

import argparse
import base64
import bisect
import json
import quopri
import random
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime
from pathlib import Path

PREFIX = "JNT"
MAILBOX = "sklep@jantar.pl"
DOMAIN_WORDS = ["bursztyn", "kaszub", "mazur", "orlik", "sokol", "wisla", "odra", "warta",
                "tatry", "baltyk", "podhale", "kujawy", "slask", "pomorze", "lubusz", "mazowsze",
                "bieszczady", "karkonosze", "notec", "bug", "narew", "san", "pilica", "bzura",
                "drweca", "rega", "parseta", "brda", "wieprz", "raba", "dunajec", "poprad",
                "skawa", "sola", "nysa", "bobr", "kwisa", "prosna", "obra", "ina"]
DOMAIN_KINDS = ["market", "sklepy", "handel", "delikatesy", "siec"]
FIRST = ["Anna", "Piotr", "Katarzyna", "Krzysztof", "Małgorzata", "Tomasz", "Agnieszka",
         "Paweł", "Joanna", "Michał", "Ewa", "Łukasz", "Magdalena", "Grzegorz", "Żaneta",
         "Jędrzej", "Bożena", "Zbigniew", "Urszula", "Wojciech"]
LAST = ["Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski",
        "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski", "Mazur",
        "Kwiatkowski", "Krawczyk", "Piotrowski", "Grabowski", "Nowakowski", "Pawłowski"]
ASCII = str.maketrans("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ", "acelnoszzACELNOSZZ")
PROBLEMS = ["Drukarka fiskalna nie drukuje paragonów", "Kasa nr {n} zawiesza się przy płatności kartą",
            "Terminal płatniczy odrzuca transakcje", "Brak połączenia z serwerem w sklepie {n}",
            "Skaner kodów kreskowych nie działa", "Błąd raportu dobowego na kasie {n}",
            "Wyświetlacz klienta pokazuje krzaki", "Szuflada kasowa się nie otwiera",
            "Ceny na półkach niezgodne z kasą", "Zawieszony program magazynowy",
            "Waga sklepowa źle liczy", "Nie można zamknąć zmiany na kasie {n}"]
SENTENCES = ["Dzień dobry, od rana mamy problem w sklepie przy ulicy Źródlanej {n}.",
             "Kasjerka zgłasza, że urządzenie wyświetla komunikat o błędzie pamięci fiskalnej.",
             "Próbowaliśmy ponownie uruchomić komputer, ale nic to nie zmieniło.",
             "Klienci czekają w długiej kolejce, prosimy o pilną pomoc techniczną.",
             "W załączeniu przesyłam zdjęcie ekranu z komunikatem błędu.",
             "Problem występuje na wszystkich stanowiskach w godzinach szczytu.",
             "Czy możliwa jest wizyta serwisanta jeszcze dziś przed godziną siedemnastą?",
             "Zauważyliśmy też, że drukarka głośno szumi i wciąga papier krzywo.",
             "Numer seryjny urządzenia: ZX-{n}-ŁÓDŹ, gwarancja ważna do końca roku.",
             "Żółta lampka miga, a ekran pokazuje 'błąd 0x{n}'."]
REPLIES = ["Dziękuję za szybką odpowiedź, problem niestety nadal występuje.",
           "Po restarcie działa, ale błąd wrócił po godzinie.",
           "Serwisant był u nas, wszystko działa. Można zamknąć zgłoszenie.",
           "Przesyłam dodatkowe informacje, o które Państwo prosili.",
           "Czy jest już jakaś informacja, kiedy ktoś przyjedzie?"]
CHARSETS = ["utf-8", "iso-8859-2", "windows-1250"]
ENCODINGS = ["quoted-printable", "base64", "8bit"]
ATTACHMENTS = [("zdjecie_ekranu.jpg", "image/jpeg"), ("raport_dobowy.pdf", "application/pdf"),
               ("log_kasy.zip", "application/zip"), ("paragon.png", "image/png")]


def client_domains() -> list[str]:
    return [f"{word.translate(ASCII)}-{DOMAIN_KINDS[i % len(DOMAIN_KINDS)]}.pl"
            for i, word in enumerate(DOMAIN_WORDS)]


def make_senders(rng: random.Random, domains: list[str], count: int = 300) -> list[tuple[str, str]]:
    senders, seen = [], set()
    while len(senders) < count:
        first, last, domain = rng.choice(FIRST), rng.choice(LAST), rng.choice(domains)
        local = f"{first}.{last}".lower().translate(ASCII)
        if (local, domain) in seen:
            local += str(rng.randint(2, 99))
        if (local, domain) in seen:
            continue
        seen.add((local, domain))
        senders.append((f"{first} {last}", f"{local}@{domain}"))
    return senders


def _encoded_body(text: str, charset: str, cte: str) -> bytes:
    data = text.replace("\n", "\r\n").encode(charset)
    if cte == "base64":
        return base64.encodebytes(data).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        return quopri.encodestring(data).replace(b"\r\r\n", b"\r\n")
    return data


def _mbox_safe(body: bytes) -> bytes:
    """mboxrd: a body line starting with 'From ' (or '>From ') gets one more '>'."""
    lines = body.split(b"\n")
    return b"\n".join(b">" + line if line.lstrip(b">").startswith(b"From ") else line
                      for line in lines)


def build_mail(*, sender: tuple[str, str], subject: str, text: str, charset: str, cte: str,
               message_id: str, date: datetime, in_reply_to: str | None,
               attachment: tuple[str, str, bytes] | None) -> bytes:
    name, address = sender
    headers = [
        f"From: {Header(name, charset).encode()} <{address}>",
        f"To: Jantar Serwis <{MAILBOX}>",
        f"Subject: {Header(subject, charset).encode()}",
        f"Date: {format_datetime(date)}",
        f"Message-ID: <{message_id}>",
        "MIME-Version: 1.0",
    ]
    if in_reply_to:
        headers += [f"In-Reply-To: <{in_reply_to}>", f"References: <{in_reply_to}>"]
    text_part = [f"Content-Type: text/plain; charset={charset}",
                 f"Content-Transfer-Encoding: {cte}"]
    body = _encoded_body(text, charset, cte)
    if attachment is None:
        head = "\r\n".join(headers + text_part).encode("ascii")
        return head + b"\r\n\r\n" + body
    boundary = f"=_jantar_{message_id.split('@')[0]}"
    filename, content_type, data = attachment
    head = "\r\n".join(headers + [f'Content-Type: multipart/mixed; boundary="{boundary}"'])
    parts = [head.encode("ascii"), b"", b"This is a multi-part message in MIME format.",
             f"--{boundary}".encode(), "\r\n".join(text_part).encode(), b"", body,
             f"--{boundary}".encode(),
             f'Content-Type: {content_type}; name="{filename}"'.encode(),
             f'Content-Disposition: attachment; filename="{filename}"'.encode(),
             b"Content-Transfer-Encoding: base64", b"",
             base64.encodebytes(data).replace(b"\n", b"\r\n"),
             f"--{boundary}--".encode(), b""]
    return b"\r\n".join(parts)


def generate(count: int = 5000, seed: int = 7, roundup: bool = False, prefix: str = PREFIX,
             reply_share: float = 0.30, attachment_share: float = 0.10, tags: bool = True,
             reply_gap: int = 0):
    """Yield (mbox-from-line sender, date, raw bytes, facts) for each mail, in order.

    tags=False: replies thread by In-Reply-To/References only (no subject tag), for runs
    where several processes number tickets in an order no generator can predict;
    reply_gap: a reply answers a mail at least this many mails earlier.
    """
    rng = random.Random(seed)
    domains = client_domains()
    senders = make_senders(rng, domains)
    start = datetime(2026, 3, 2, 7, 0, tzinfo=timezone.utc)
    tickets: list[tuple[int, tuple[str, str], str, str]] = []  # number, sender, subject, msgid
    opened_at: list[int] = []  # the index of the mail that opened each ticket
    for index in range(count):
        date = start + timedelta(seconds=37 * index)
        message_id = f"{seed}.{index:06d}.{rng.getrandbits(48):012x}@{senders[0][1].split('@')[1]}"
        charset, cte = rng.choice(CHARSETS), rng.choice(ENCODINGS)
        n = rng.randint(1, 999)
        eligible = bisect.bisect_right(opened_at, index - reply_gap) if reply_gap else len(tickets)
        reply = eligible > 0 and rng.random() < reply_share
        if reply:
            number, sender, subject, parent = tickets[rng.randrange(eligible)] if reply_gap \
                else rng.choice(tickets)
            tag = f"[issue{number}]" if roundup else f"[#{prefix}-{number}]"
            subject = f"Re: {tag} {subject}" if tags else f"Re: {subject}"
            text = rng.choice(REPLIES) + "\n\n" + rng.choice(SENTENCES).format(n=n) + \
                "\n\n--\n" + sender[0] + "\n"
            in_reply_to = parent
        else:
            number = len(tickets) + 1
            sender = rng.choice(senders)
            subject = rng.choice(PROBLEMS).format(n=n)
            text = "\n".join(rng.choice(SENTENCES).format(n=rng.randint(1, 999))
                             for _ in range(rng.randint(3, 9))) + \
                f"\n\nPozdrawiam,\n{sender[0]}\ntel. +48 600 {n:03d} 123\n"
            in_reply_to = None
            tickets.append((number, sender, subject, message_id))
            opened_at.append(index)
        attachment = None
        if rng.random() < attachment_share:
            filename, content_type = rng.choice(ATTACHMENTS)
            attachment = (filename, content_type, rng.randbytes(rng.randint(100_000, 500_000)))
        raw = build_mail(sender=sender, subject=subject, text=text, charset=charset, cte=cte,
                         message_id=message_id, date=date, in_reply_to=in_reply_to,
                         attachment=attachment)
        facts = {"message_id": message_id, "new": not reply, "ticket": number,
                 "parent": in_reply_to,
                 "sender": sender[1], "attachment": attachment is not None}
        yield sender[1], date, raw, facts


def write_mbox(path: Path, **options) -> list[dict]:
    """Write the mbox to PATH; returns the facts of each mail (what the generator predicts)."""
    facts = []
    with open(path, "wb") as out:
        for sender, date, raw, fact in generate(**options):
            out.write(f"From {sender} {date.strftime('%a %b %d %H:%M:%S %Y')}\n".encode())
            out.write(_mbox_safe(raw.replace(b"\r\n", b"\n")))
            out.write(b"\n\n")
            facts.append(fact)
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--roundup", action="store_true", help="tag replies [issueN]")
    parser.add_argument("--facts", type=Path, help="also write the predicted facts as JSON")
    args = parser.parse_args(argv)
    facts = write_mbox(args.out, count=args.count, seed=args.seed, roundup=args.roundup,
                       prefix=args.prefix)
    if args.facts:
        args.facts.write_text(json.dumps(facts))
    new = sum(f["new"] for f in facts)
    print(f"{args.out}: {len(facts)} mails, {new} new problems, {len(facts) - new} replies, "
          f"{sum(f['attachment'] for f in facts)} with an attachment, "
          f"{args.out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
