"""the trigram index covers what people wrote, not the daemon's own notices

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:45:00

The triage search looks for what customers, technicians and internal notes say. The
daemon's own mail (acknowledgements, coordinator notices, SLA warnings, forwards: kind
'system') is template text around words a person wrote elsewhere on the same ticket, and
indexing it was half of PostgreSQL's work per SLA notice and per acknowledged ticket. The
index becomes partial on kind <> 'system'; webform.queries searches with the same
condition on both backends, so SQLite and PostgreSQL find the same tickets.
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

PEOPLE = "kind <> 'system'"


def upgrade() -> None:
    _make_index(f"WHERE {PEOPLE}")


def downgrade() -> None:
    _make_index("")


def _make_index(where: str) -> None:
    """Make the trigram index again with WHERE, on PostgreSQL, where 0006 could make it
    (pg_trgm installed; elsewhere the search scans)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or \
            bind.exec_driver_sql("SELECT to_regclass('ix_messages_text_trgm')").scalar() is None:
        return
    schema = bind.exec_driver_sql(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
    ).scalar()
    op.execute("DROP INDEX ix_messages_text_trgm")
    op.execute(f'CREATE INDEX ix_messages_text_trgm ON messages '
               f'USING gin (text "{schema}".gin_trgm_ops) {where}')
