"""The migrations build the schema the models describe, and move data when they reshape it."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest
from alembic import command
from sqlalchemy import inspect, select

from daemon.store import Store
from daemon.store.migrate import alembic_config, upgrade
from daemon.store.models import Base, RawBody, RawMessage


def test_migrated_tables_and_columns_are_the_models(store):
    inspector = inspect(store.engine)
    tables = set(inspector.get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)
    for name, table in Base.metadata.tables.items():
        columns = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
        assert columns == {c.name: c.nullable for c in table.columns}, name


def test_raw_bytes_move_to_raw_bodies_and_back(tmp_path):
    path = tmp_path / "helpdesk.db"
    store = Store(f"sqlite:///{path}")
    config = alembic_config(store)
    command.upgrade(config, "0006")
    mail = b"From: anna@bursztyn.pl\r\nSubject: Awaria\r\n\r\n" + bytes(range(256)) * 100
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO raw_messages (id, channel, origin, idempotency_key, sha256, size, raw,"
            " received_at, status, attempts, envelope) VALUES (7, 'smtp', '', 'k', 'x', ?, ?,"
            " '2026-11-25 10:00:00', 'processed', 1, '{}')", (len(mail), mail))

    upgrade(store)

    with store.transaction() as session:
        record = session.get(RawMessage, 7)
        assert record.raw == mail
        assert session.scalar(select(RawBody.data).where(RawBody.raw_id == 7)) == mail
        record.status = "discarded"   # a status change leaves the bytes where they are
    with store.transaction() as session:
        assert session.get(RawMessage, 7).raw == mail
    store.dispose()

    command.downgrade(config, "0006")
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT raw FROM raw_messages WHERE id = 7").fetchone() == (mail,)
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
        assert "raw_bodies" not in tables


def test_a_new_raw_record_writes_its_bytes_once_into_raw_bodies(store):
    now = datetime(2026, 11, 25, 10, tzinfo=timezone.utc)
    with store.transaction() as session:
        session.add(RawMessage(channel="smtp", origin="", idempotency_key="a", sha256="x",
                               size=3, raw=b"abc", received_at=now, status="pending",
                               attempts=0, envelope={}))
    with store.transaction() as session:
        [(raw_id, data)] = session.execute(select(RawBody.raw_id, RawBody.data)).all()
        assert data == b"abc" and session.get(RawMessage, raw_id).raw == b"abc"


def test_the_trigram_index_leaves_out_the_daemons_notices_and_comes_back_whole(store):
    """0008 makes the search index partial (kind <> 'system'); its downgrade restores it."""
    if store.backend != "postgresql":
        pytest.skip("the trigram index is PostgreSQL's")

    def definition() -> str:
        with store.engine.connect() as connection:
            return connection.exec_driver_sql(
                "SELECT pg_get_indexdef(to_regclass('ix_messages_text_trgm'))").scalar()
    assert "WHERE ((kind)::text <> 'system'::text)" in definition()
    config = alembic_config(store)
    try:
        command.downgrade(config, "0007")
        assert "WHERE" not in definition() and "gin_trgm_ops" in definition()
    finally:
        upgrade(store)
    assert "WHERE ((kind)::text <> 'system'::text)" in definition()
