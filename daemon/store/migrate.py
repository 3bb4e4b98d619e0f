"""Bring the schema to the newest Alembic revision, one process at a time."""
from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url

import migrations
from daemon.store.db import Store

MIGRATIONS_DIR = Path(migrations.__file__).parent
PG_LOCK_KEY = 0x4A414E544152  # "JANTAR": one advisory lock shared by every process


def alembic_config(store: Store) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = store.engine
    return config


@contextlib.contextmanager
def _migration_lock(store: Store) -> Iterator[None]:
    if store.backend == "postgresql":
        with store.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                connection.commit()
        return
    database = make_url(store.url).database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_revision(store: Store) -> str | None:
    with store.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(store: Store) -> str | None:
    return ScriptDirectory.from_config(alembic_config(store)).get_current_head()


def upgrade(store: Store) -> tuple[str | None, str | None]:
    """Migrate to head under a lock; returns (revision before, revision after)."""
    with _migration_lock(store):
        before = current_revision(store)
        command.upgrade(alembic_config(store), "head")
        return before, current_revision(store)
