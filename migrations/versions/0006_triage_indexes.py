"""triage list at scale: partial indexes on active tickets (SLA order, counts), held, client+status,
trigram search of message text on PostgreSQL

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 16:25:00

Written by hand: autogenerate does not render indexes on expressions. The expression is
webform.queries.sla_due_expression() exactly as the queries render it (statuses written
into the SQL), so both backends use these indexes for the list's order and its counts.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

ACTIVE = "status IN ('new', 'open', 'waiting')"
SLA_DUE = ("CASE WHEN (status IN ('resolved', 'closed')) THEN NULL "
           "WHEN (sla_paused_at IS NOT NULL) THEN NULL "
           "WHEN (first_responded_at IS NULL AND first_response_due IS NOT NULL) "
           "THEN first_response_due ELSE resolution_due END")


def upgrade() -> None:
    held = "held IS 1" if op.get_bind().dialect.name == "sqlite" else "held IS true"
    # Plain CREATE/DROP INDEX: SQLite has both, and no table needs copying for them.
    op.drop_index('ix_tickets_client_id', table_name='tickets')
    op.create_index('ix_tickets_client_id_status', 'tickets', ['client_id', 'status'])
    op.execute(f"CREATE INDEX ix_tickets_triage_due ON tickets "
               f"((({SLA_DUE}) IS NULL), ({SLA_DUE}), id) WHERE {ACTIVE}")
    op.execute(f"CREATE INDEX ix_tickets_active_counts ON tickets (status, tier, assignee_id, "
               f"sla_paused_at, first_responded_at, first_response_due, resolution_due) "
               f"WHERE {ACTIVE}")
    op.execute(f"CREATE INDEX ix_tickets_held ON tickets (id) WHERE {held}")
    if op.get_bind().dialect.name == "postgresql":
        _text_search_index()
    # Statistics for the new indexes: without them SQLite's planner may sort all active
    # tickets rather than walk ix_tickets_triage_due (about a second per million rows).
    op.execute("ANALYZE tickets")


def _text_search_index() -> None:
    """A trigram index for the list's search (`q`: ILIKE '%…%' on every message's text).

    pg_trgm goes into the `public` schema, which schema-private stores share, so dropping
    one such schema never takes the extension from another. Where it cannot be installed
    (no privilege, no contrib package) the search still works, by a scan.
    """
    bind = op.get_bind()
    savepoint = bind.begin_nested()
    try:
        bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    except Exception:
        savepoint.rollback()
        return
    savepoint.commit()
    schema = bind.exec_driver_sql(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
    ).scalar()
    op.execute(f'CREATE INDEX ix_messages_text_trgm ON messages USING gin (text "{schema}".gin_trgm_ops)')


def downgrade() -> None:
    raise NotImplementedError("downgrade is not supported: restore a backup")
