"""Fill a store with a big helpdesk: ~300 clients, 1,000,000 tickets over three years, their messages.

Bulk inserts below the ORM (the driver's executemany on SQLite, COPY on PostgreSQL), on
a store migrated by Alembic, so the schema and indexes are exactly the product's.
Deterministic for a given seed.

    python -m benchmarks.seed [--tickets N] [--sqlite PATH]     # SQLite file (default)
    python -m benchmarks.seed --postgresql URL                  # an existing, migrated store
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from benchmarks.scale_common import NOW, ROOT, sqlite_store
from daemon.store import Store

CHUNK = 20_000
SUBJECTS = 5_000      # distinct subjects drawn from
BODIES = 20_000       # distinct message texts drawn from
YEARS = 3
COORDINATOR = "koordynator@jantar.pl"

NETWORK_KINDS = ["Sieć", "Market", "Delikatesy", "Drogeria", "Apteka", "Piekarnia", "Sklepy",
                 "Supermarket", "Hurtownia", "Stacja"]
NETWORK_NAMES = ["Bursztyn", "Kaszub", "Jantar", "Mazur", "Żuraw", "Wisła", "Odra", "Warta",
                 "Bałtyk", "Tatry", "Sokół", "Orzeł", "Łabędź", "Dąb", "Jodła", "Świerk",
                 "Kłos", "Zorza", "Słońce", "Groszek", "Koral", "Perła", "Źródło", "Lech",
                 "Polana", "Mewa", "Sosna", "Brzoza", "Czapla", "Rybitwa"]
FIRST = ["Jan", "Anna", "Piotr", "Katarzyna", "Tomasz", "Agnieszka", "Paweł", "Małgorzata",
         "Krzysztof", "Ewa", "Łukasz", "Magdalena", "Michał", "Joanna", "Marcin", "Zofia",
         "Grzegorz", "Barbara", "Andrzej", "Dorota"]
LAST = ["Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski",
        "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski", "Mazur",
        "Kwiatkowski", "Krawczyk", "Piotrowski", "Grabowski", "Nowakowski", "Pawłowski"]
DEVICES = ["Drukarka fiskalna", "Kasa nr {n}", "Terminal płatniczy", "Skaner kodów",
           "Waga sklepowa", "Serwer sklepu", "Router w sklepie", "Monitor klienta",
           "Szuflada kasowa", "Czytnik kart", "Komputer zaplecza", "Program magazynowy"]
PROBLEMS = ["nie drukuje paragonów", "nie włącza się", "zawiesza się co kilka minut",
            "pokazuje błąd E{code}", "nie łączy się z serwerem", "nie czyta kodów",
            "drukuje puste paragony", "restartuje się sam", "nie przyjmuje płatności kartą",
            "wolno działa od rana", "zgubił konfigurację", "nie wysyła raportu dobowego"]
PLACES = ["w sklepie nr {n}", "na stanowisku {n}", "w oddziale {city}", "przy wejściu",
          "na zapleczu", "w sklepie przy ul. {street}"]
CITIES = ["Gdańsk", "Gdynia", "Sopot", "Poznań", "Wrocław", "Kraków", "Łódź", "Szczecin",
          "Bydgoszcz", "Toruń", "Olsztyn", "Elbląg", "Słupsk", "Kołobrzeg", "Częstochowa"]
STREETS = ["Długiej", "Piwnej", "Mariackiej", "Grunwaldzkiej", "Słowackiego", "Mickiewicza",
           "Żeromskiego", "Kościuszki", "Świętojańskiej", "Ogarnej"]
SENTENCES = [
    "Dzień dobry, od dzisiaj rano {device} {problem}.",
    "Sprawdziliśmy kable i zasilanie, restart nic nie zmienił.",
    "Klienci czekają w kolejce, prosimy o pilny kontakt.",
    "Na wyświetlaczu pojawia się komunikat o błędzie {code}.",
    "Problem występuje tylko przy płatnościach zbliżeniowych.",
    "Numer seryjny urządzenia: {serial}.",
    "Kierownik zmiany jest dostępny pod telefonem do godziny 16:00.",
    "Wczoraj po aktualizacji oprogramowania wszystko działało poprawnie.",
    "Załączam zdjęcie ekranu z komunikatem.",
    "Czy technik może przyjechać jutro przed otwarciem sklepu?",
    "Paragony drukują się blado, wymieniliśmy już rolkę papieru.",
    "Zgłaszamy to po raz drugi w tym tygodniu.",
]
REPLIES = [
    "Dziękujemy za zgłoszenie, technik skontaktuje się telefonicznie.",
    "Proszę o wyłączenie urządzenia na 30 sekund i ponowne włączenie.",
    "Zdalnie zaktualizowaliśmy sterownik, proszę sprawdzić teraz.",
    "Technik będzie na miejscu jutro między 8:00 a 10:00.",
    "Problem rozwiązany: wymieniono zasilacz drukarki.",
]
STATUS_RECENT = [("new", 15), ("open", 35), ("waiting", 10), ("resolved", 30), ("closed", 10)]
STATUS_OLD = [("open", 6), ("waiting", 2), ("resolved", 150), ("closed", 842)]
TIERS = [("L1", 70), ("L2", 22), ("L3", 8)]
PRIORITIES = [("low", 15), ("normal", 60), ("high", 20), ("urgent", 5)]
CHANNELS = [("email", 80), ("web", 15), ("phone", 5)]
CATEGORIES = ["printer", "cash_register", "network", "software", "other"]
FIRST_RESPONSE = {"low": 8, "normal": 4, "high": 1, "urgent": 0.5}   # hours, for the due times
RESOLUTION = {"low": 40, "normal": 16, "high": 8, "urgent": 4}


def ascii_slug(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name.replace("ł", "l").replace("Ł", "L"))
    return "".join(c for c in plain.lower() if c.isalnum())


@dataclass
class Directory:
    clients: list[dict]
    technicians: list[dict]
    requesters: list[list[tuple[str, str]]]   # per client: (email, name)

    def config_sections(self, database_url: str, data_dir: str) -> dict:
        """A configuration naming the same clients and technicians (as the daemon mirrors)."""
        return {
            "helpdesk": {"database_url": database_url, "data_dir": data_dir,
                         "ticket_prefix": "JAN", "timezone": "Europe/Warsaw"},
            "mailboxes": [{"address": "sklep@jantar.pl"}, {"address": "serwis@jantar.pl"}],
            "clients": [{"name": c["name"], "domains": c["domains"], "contract": c["contract"]}
                        for c in self.clients],
            "technicians": [{"name": t["name"], "email": t["email"], "tier": t["tier"],
                             "role": t["role"]} for t in self.technicians],
        }


def make_directory(rng: random.Random, clients: int = 300) -> Directory:
    names = [f"{kind} {name}" for name in NETWORK_NAMES for kind in NETWORK_KINDS]
    rng.shuffle(names)
    rows, requesters = [], []
    for i, name in enumerate(names[:clients], 1):
        domain = f"{ascii_slug(name)}.pl"
        rows.append({"id": i, "name": name, "domains": [domain],
                     "contract": "extended" if i % 4 == 0 else "standard"})
        people = []
        for _ in range(rng.randint(3, 15)):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            people.append((f"{ascii_slug(first)}.{ascii_slug(last)}@{domain}", f"{first} {last}"))
        requesters.append(people)
    technicians = [{"id": 1, "email": COORDINATOR, "name": "Ewa Zielińska", "tier": "L2",
                    "role": "coordinator"}]
    for i, tier in enumerate(["L1"] * 12 + ["L2"] * 8 + ["L3"] * 4, 2):
        first, last = FIRST[i % len(FIRST)], LAST[(i * 7) % len(LAST)]
        technicians.append({"id": i, "email": f"{ascii_slug(first)}.{ascii_slug(last)}{i}@jantar.pl",
                            "name": f"{first} {last}", "tier": tier, "role": "technician"})
    return Directory(rows, technicians, requesters)


class TicketMaker:
    """Tickets and messages as column tuples, created uniformly over the three years before NOW."""

    TICKET_COLUMNS = (
        "id", "number", "subject", "status", "tier", "priority", "category", "client_id",
        "assignee_id", "requester_email", "requester_name", "channel", "mailbox", "language",
        "held", "message_count", "created_at", "updated_at", "first_responded_at", "resolved_at",
        "resolved_tier", "contract", "sla_calendar", "first_response_due",
        "first_response_warn_at", "first_response_warning_sent_at",
        "first_response_breach_sent_at", "resolution_due", "resolution_warn_at",
        "resolution_warning_sent_at", "resolution_breach_sent_at", "sla_paused_at",
        "sla_paused_seconds", "sla_alarm_at")
    MESSAGE_COLUMNS = ("id", "ticket_id", "direction", "kind", "from_email", "from_name", "to",
                       "cc", "subject", "message_id", "references", "text", "held", "sent_at",
                       "created_at")

    def __init__(self, rng: random.Random, directory: Directory, total: int, now: datetime):
        self.rng, self.directory, self.total, self.now = rng, directory, total, now
        self.start = now - timedelta(days=365 * YEARS)
        self.span = (now - self.start).total_seconds()
        self.by_tier = {tier: [t for t in directory.technicians if t["tier"] == tier]
                        for tier in ("L1", "L2", "L3")}
        self.message_id = 0

    def subject(self) -> str:
        rng = self.rng
        device = rng.choice(DEVICES).format(n=rng.randint(1, 9))
        problem = rng.choice(PROBLEMS).format(code=rng.randint(100, 999))
        place = rng.choice(PLACES).format(n=rng.randint(1, 250), city=rng.choice(CITIES),
                                          street=rng.choice(STREETS))
        return f"{device} {place} {problem}"

    def body(self, subject: str) -> str:
        rng = self.rng
        parts = [rng.choice(SENTENCES).format(device="urządzenie", problem="sprawia kłopot",
                                              code=f"E-{rng.randint(1000, 9999)}",
                                              serial=f"PL{rng.randint(10**7, 10**8 - 1)}")
                 for _ in range(rng.randint(2, 5))]
        return f"{subject}.\n\n" + " ".join(parts) + "\n\nPozdrawiam\n"

    def client_table(self) -> list[int]:
        """Client indexes by a Zipf-like weight (1/rank^0.8): the biggest network has a few %."""
        if not hasattr(self, "_clients"):
            weights = [1 / (rank ** 0.8) for rank in range(1, len(self.directory.clients) + 1)]
            total = sum(weights)
            self._clients = [i for i, w in enumerate(weights) for _ in range(max(1, round(w / total * 20_000)))]
        return self._clients

    def pools(self):
        """Distinct subjects and bodies to draw from (generating a million of each is slow)."""
        if not hasattr(self, "_pools"):
            subjects = [self.subject() for _ in range(SUBJECTS)]
            bodies = [self.body(subjects[i % SUBJECTS]) for i in range(BODIES)]
            self._pools = subjects, bodies
        return self._pools

    def chunk(self, first: int, count: int):
        """Ticket and message tuples for ticket ids FIRST..FIRST+COUNT-1 (ids in time order).

        Instants are naive UTC (as the store keeps them)."""
        rng, now = self.rng, self.now.astimezone(timezone.utc).replace(tzinfo=None)
        rand = rng.random
        subjects, bodies = self.pools()
        recent_since = now - timedelta(days=30)
        start = self.start.astimezone(timezone.utc).replace(tzinfo=None)
        status_recent, status_old = _table(STATUS_RECENT), _table(STATUS_OLD)
        tiers, priorities, channels = _table(TIERS), _table(PRIORITIES), _table(CHANNELS)
        clients, requesters = self.directory.clients, self.directory.requesters
        technicians = self.directory.technicians
        client_table = self.client_table()
        tickets, messages = [], []
        hour = timedelta(hours=1)
        for ticket_id in range(first, first + count):
            created = start + timedelta(seconds=self.span * (ticket_id - 0.5) / self.total)
            status = (status_recent if created > recent_since else status_old)[int(rand() * 1000)]
            tier = tiers[int(rand() * 1000)]
            priority = priorities[int(rand() * 1000)]
            client_index = client_table[int(rand() * len(client_table))]
            client = clients[client_index]
            people = requesters[client_index]
            email, name = people[int(rand() * len(people))]
            by_tier = self.by_tier[tier]
            assignee = (by_tier[int(rand() * len(by_tier))]["id"]
                        if status != "new" or rand() < 0.3 else None)
            first_hours, resolution_hours = FIRST_RESPONSE[priority], RESOLUTION[priority]
            first_due = created + first_hours * hour
            resolution_due = created + resolution_hours * (1 + 2 * rand()) * hour
            closed = status in ("resolved", "closed")
            responded = None if status == "new" else created + (
                0.2 + rand() * first_hours * 1.1) * hour
            resolved = created + (1 + rand() * resolution_hours * 3) * hour if closed else None
            paused = created + (1 + rand() * 19) * hour if status == "waiting" else None
            first_warn = created + first_hours * 0.75 * hour
            resolution_warn = created + (resolution_due - created) * 0.75
            open_ = not closed
            fw = first_warn if open_ and responded is None and first_warn <= now else None
            fb = first_due if open_ and responded is None and first_due <= now else None
            rw = resolution_warn if open_ and resolution_warn <= now else None
            rb = resolution_due if open_ and resolution_due <= now else None
            alarm = None
            if status in ("new", "open"):
                pending = [t for t in (first_warn, first_due) if responded is None and t > now]
                pending += [t for t in (resolution_warn, resolution_due) if t > now]
                alarm = min(pending, default=None)
            subject_index = int(rand() * SUBJECTS)
            subject = subjects[subject_index]
            replies = 1 if status != "new" and rand() < 0.25 else 0
            held = status in ("new", "open") and rand() < 0.002
            updated = resolved or responded or created
            tickets.append((
                ticket_id, f"JAN-{ticket_id}", subject, status, tier, priority,
                CATEGORIES[ticket_id % 5] if rand() < 0.2 else None, client["id"], assignee,
                email, name, channels[int(rand() * 1000)], "sklep@jantar.pl", "pl", held,
                1 + replies, created, updated, responded, resolved,
                tier if resolved else None, client["contract"], "l1", first_due, first_warn,
                fw, fb, resolution_due if paused is None else None,
                resolution_warn if paused is None else None, rw, rb, paused, 0, alarm))
            self.message_id += 1
            messages.append((
                self.message_id, ticket_id, "in", "customer", email, name, '["sklep@jantar.pl"]',
                "[]", subject, f"<t{ticket_id}.{self.message_id}@{client['domains'][0]}>", "[]",
                bodies[subject_index + SUBJECTS * int(rand() * (BODIES // SUBJECTS))], held, created, created))
            if replies:
                self.message_id += 1
                technician = technicians[(assignee or 2) - 1]
                messages.append((
                    self.message_id, ticket_id, "out", "technician", technician["email"],
                    technician["name"], f'["{email}"]', "[]",
                    f"Re: [#JAN-{ticket_id}] {subject}", f"<r{self.message_id}@jantar.pl>", "[]",
                    REPLIES[self.message_id % len(REPLIES)], False, responded, responded))
        return tickets, messages


def _table(pairs) -> list:
    """A 1,000-entry lookup table: table[int(random() * 1000)] draws by the weights."""
    total = sum(w for _, w in pairs)
    table = []
    for value, weight in pairs:
        table += [value] * round(weight * 1000 / total)
    return (table + [pairs[-1][0]] * 1000)[:1000]


# -- writing -------------------------------------------------------------------------------------
def _sqlite_row(row) -> list:
    """Instants in SQLAlchemy's SQLite DateTime format; JSON values come as text already."""
    return [v.isoformat(" ", "microseconds") if v.__class__ is datetime else v for v in row]


class SqliteWriter:
    def __init__(self, store: Store):
        self.raw = store.engine.raw_connection()
        self.db = self.raw.driver_connection
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("BEGIN")

    def rows(self, table: str, columns, rows) -> None:
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" * len(columns))
        self.db.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                            map(_sqlite_row, rows))

    def checkpoint(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def close(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("ANALYZE")
        self.raw.close()


class PostgresWriter:
    def __init__(self, store: Store):
        self.raw = store.engine.raw_connection()
        self.db = self.raw.driver_connection

    def rows(self, table: str, columns, rows) -> None:
        names = ", ".join(f'"{c}"' for c in columns)
        with self.db.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def checkpoint(self) -> None:
        self.db.commit()

    def close(self) -> None:
        self.db.commit()
        with self.db.cursor() as cursor:
            for table in ("tickets", "messages", "clients", "technicians"):
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT max(id) FROM {table}))")
        self.db.commit()
        self.db.autocommit = True
        with self.db.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        self.db.autocommit = False
        self.raw.close()


def seed(store: Store, tickets: int = 1_000_000, *, now: datetime = NOW, seed_value: int = 7,
         password_hash: str | None = None, progress=None) -> Directory:
    """Fill a migrated, empty STORE; returns the directory (for a matching configuration)."""
    rng = random.Random(seed_value)
    directory = make_directory(rng)
    writer = SqliteWriter(store) if store.backend == "sqlite" else PostgresWriter(store)
    writer.rows("clients", ("id", "name", "domains", "phones", "contract", "active"),
                [(c["id"], c["name"], json.dumps(c["domains"]), "[]", c["contract"], True)
                 for c in directory.clients])
    writer.rows("technicians", ("id", "email", "name", "tier", "role", "active", "password_hash"),
                [(t["id"], t["email"], t["name"], t["tier"], t["role"], True, password_hash)
                 for t in directory.technicians])
    writer.rows("ticket_counters", ("prefix", "value"), [("JAN", tickets)])
    maker = TicketMaker(rng, directory, tickets, now)
    started = time.perf_counter()
    for first in range(1, tickets + 1, CHUNK):
        ticket_rows, message_rows = maker.chunk(first, min(CHUNK, tickets + 1 - first))
        writer.rows("tickets", TicketMaker.TICKET_COLUMNS, ticket_rows)
        writer.rows("messages", TicketMaker.MESSAGE_COLUMNS, message_rows)
        writer.checkpoint()
        if progress:
            progress(first + len(ticket_rows) - 1, time.perf_counter() - started)
    writer.close()
    return directory


def _progress(done: int, seconds: float) -> None:
    print(f"\r{done:>9,} tickets in {seconds:6.1f} s", end="", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--sqlite", default=str(ROOT / "var" / "bench" / "seed.db"))
    parser.add_argument("--postgresql", help="URL of a migrated, empty store")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.postgresql:
        store = Store(args.postgresql)
        seed(store, args.tickets, progress=_progress)
        store.dispose()
    else:
        from pathlib import Path
        with sqlite_store(Path(args.sqlite)) as store:
            seed(store, args.tickets, progress=_progress)
    print(f"\nseeded {args.tickets:,} tickets in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
