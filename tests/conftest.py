"""Shared fixtures: a migrated store on SQLite and on PostgreSQL, configuration, time.

Every test that asks for `store` runs twice, once per backend. PostgreSQL is the one at
127.0.0.1:5432 (database `test`; HELPDESK_TEST_PG names another).

Everything a test needs from the machine (PostgreSQL, the mail corpus, Dovecot, openssl,
Playwright and Chromium, mounts) goes through `require`: missing, the test skips on a
developer's machine and fails under CI=true, so a CI run can never pass with the proofs
unrun. Skips that are part of a test's design (a PostgreSQL-only check on the SQLite run
of a parametrized test) are plain `pytest.skip`, not prerequisites.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from daemon import config as config_module
from daemon.store import Store
from daemon.store.migrate import upgrade
from daemon.store.models import Base

pytest_plugins = ["tests.fixtures_dovecot", "tests.fixtures_smtp", "tests.fixtures_web"]

PG_BASE_URL = os.environ.get("HELPDESK_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# The corpus lives beside the project, never inside it; HELPDESK_TEST_CORPUS names another
# place (or a missing one, to see what CI does without it).
CORPUS = Path(os.environ.get("HELPDESK_TEST_CORPUS")
              or Path(__file__).resolve().parents[1].parent / "shared" / "corpus")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)  # a Wednesday, inside L1 hours


def require(condition: bool, reason: str) -> None:
    """Skip when something the test needs is missing here; fail instead under CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def _pg_reachable() -> bool:
    try:
        engine = create_engine(PG_BASE_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_schema_url():
    """A private schema in the `test` database, migrated once, dropped at the end."""
    require(_pg_reachable(), f"PostgreSQL not reachable at {PG_BASE_URL}")
    schema = f"helpdesk_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_BASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_BASE_URL}?options=-csearch_path%3D{schema}"
    store = Store(url)
    upgrade(store)
    store.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _truncate_all(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A migrated, empty database URL on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'helpdesk.db'}"
        store = Store(url)
        upgrade(store)
        store.dispose()
        return url
    url = request.getfixturevalue("pg_schema_url")
    _truncate_all(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A migrated SQLite database, for tests about something other than the backend."""
    url = f"sqlite:///{tmp_path / 'helpdesk.db'}"
    store = Store(url)
    upgrade(store)
    store.dispose()
    return url


@pytest.fixture
def store(db_url):
    store = Store(db_url)
    yield store
    store.dispose()


BASE_CONFIG = {
    "helpdesk": {"ticket_prefix": "JAN", "timezone": "Europe/Warsaw", "language": "pl",
                 "web_url": "http://helpdesk.test"},
    "mailboxes": [{"address": "sklep@jantar.pl"}, {"address": "serwis@jantar.pl"}],
    "clients": [
        {"name": "Sieć Bursztyn", "domains": ["bursztyn.pl"], "phones": ["+48 61 100 20 30"],
         "contract": "standard"},
        {"name": "Market Kaszub", "domains": ["kaszub.com.pl"], "contract": "extended"},
    ],
    "technicians": [
        {"name": "Anna Kowalska", "email": "anna.kowalska@jantar.pl", "tier": "L1"},
        {"name": "Piotr Nowak", "email": "piotr.nowak@jantar.pl", "tier": "L2"},
        {"name": "Ewa Zielińska", "email": "koordynator@jantar.pl", "tier": "L2",
         "role": "coordinator"},
    ],
}


def merge(base: dict, overrides: dict) -> dict:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def make_config(tmp_path):
    """make_config(db_url, **sections) -> Config built from BASE_CONFIG plus overrides."""

    def build(database_url: str, **sections) -> config_module.Config:
        doc = merge(BASE_CONFIG, sections)
        doc["helpdesk"] = {**doc["helpdesk"], "database_url": database_url,
                           "data_dir": str(tmp_path / "data")}
        return config_module.from_dict(doc, env={})

    return build


@pytest.fixture
def config(make_config, db_url):
    return make_config(db_url)


@pytest.fixture
def corpus_dir() -> Path:
    require(CORPUS.is_dir() and any(CORPUS.rglob("*.eml")), f"mail corpus not found at {CORPUS}")
    return CORPUS


class Desk:
    """A configured, migrated helpdesk store for pipeline-level tests."""

    def __init__(self, config, store):
        self.config, self.store = config, store

    def deliver(self, raw: bytes, **kwargs):
        from tests.mailfactory import deliver
        return deliver(self.store, self.config, raw, **kwargs)

    def tickets(self) -> list[dict]:
        from sqlalchemy import select

        from daemon.store.models import Ticket
        from daemon.views import ticket_detail
        with self.store.transaction() as session:
            return [ticket_detail(t, self.config.tz)
                    for t in session.scalars(select(Ticket).order_by(Ticket.id)).unique()]

    def raw_records(self) -> list:
        from sqlalchemy import select
        from sqlalchemy.orm import selectinload

        from daemon.store.models import RawMessage
        with self.store.transaction() as session:
            return list(session.scalars(select(RawMessage).options(selectinload(RawMessage.body))
                                        .order_by(RawMessage.id)))


@pytest.fixture
def desk(config, store) -> Desk:
    from daemon.directory import sync_directory
    with store.transaction() as session:
        sync_directory(session, config)
    return Desk(config, store)


@pytest.fixture
def config_file(tmp_path, db_url):
    """config_file(**sections) -> path of a TOML file for the `helpdesk` command."""
    from tests.tomlwrite import write_config

    def build(**sections) -> Path:
        doc = merge(BASE_CONFIG, sections)
        doc["helpdesk"] = {**doc["helpdesk"], "database_url": db_url,
                           "data_dir": str(tmp_path / "data")}
        return write_config(tmp_path / "helpdesk.toml", doc)

    return build
