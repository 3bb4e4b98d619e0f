"""raw mail bytes in their own table, raw_bodies, written once

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 19:50:00

SQLite rewrites a whole row on every UPDATE: the status changes made while a mail is
processed copied its bytes each time (68 MB at once for a 34 MB mail). The bytes move to
raw_bodies (one row per raw_messages row, never updated). The column is dropped with
ALTER TABLE … DROP COLUMN (SQLite 3.35+, PostgreSQL): a batch copy of raw_messages would
drop the table that messages and raw_bodies point to.
"""
import sqlite3

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old for this store: "
                           "3.35 or newer is needed (ALTER TABLE … DROP COLUMN)")
    op.create_table(
        'raw_bodies',
        sa.Column('raw_id', BIG_ID, nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['raw_id'], ['raw_messages.id'],
                                name=op.f('fk_raw_bodies_raw_id_raw_messages')),
        sa.PrimaryKeyConstraint('raw_id', name=op.f('pk_raw_bodies')),
    )
    op.execute("INSERT INTO raw_bodies (raw_id, data) SELECT id, raw FROM raw_messages")
    op.execute("ALTER TABLE raw_messages DROP COLUMN raw")


def downgrade() -> None:
    op.execute("ALTER TABLE raw_messages ADD COLUMN raw BLOB" if op.get_bind().dialect.name
               == "sqlite" else "ALTER TABLE raw_messages ADD COLUMN raw BYTEA")
    op.execute("UPDATE raw_messages SET raw = (SELECT data FROM raw_bodies "
               "WHERE raw_bodies.raw_id = raw_messages.id)")
    op.drop_table('raw_bodies')
