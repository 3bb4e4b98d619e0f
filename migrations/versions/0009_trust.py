"""trust at the boundary: server-side web sessions, flood bundles, imported history

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 21:00:00

web_sessions: a session cookie names a row here (by the hash of its random token), so
signing out, a new password or a disabled account ends the session on the server.
floods: a sender over the hourly new-ticket limit has the rest of their mail held in
one bundle ticket. tickets.imported marks history filed from an existing mailbox or an
export: nothing was sent for it and no SLA clock ran.
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A plain ADD COLUMN: a batch copy of tickets would drop its expression indexes.
    op.add_column('tickets', sa.Column('imported', sa.Boolean(), nullable=False,
                                       server_default=sa.text('false')))
    op.create_table(
        'floods',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('sender', sa.String(length=330), nullable=False),
        sa.Column('ticket_id', BIG_ID, nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('last_at', sa.DateTime(), nullable=False),
        sa.Column('mails', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'],
                                name=op.f('fk_floods_ticket_id_tickets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_floods')),
    )
    op.create_index('ix_floods_sender_last_at', 'floods', ['sender', 'last_at'])
    op.create_table(
        'web_sessions',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('technician_id', BIG_ID, nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(), nullable=False),
        sa.Column('ended_at', sa.DateTime(), nullable=True),
        sa.Column('ended_reason', sa.String(length=32), nullable=True),
        sa.Column('client_ip', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['technician_id'], ['technicians.id'],
                                name=op.f('fk_web_sessions_technician_id_technicians')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_web_sessions')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_web_sessions_token_hash')),
    )
    op.create_index(op.f('ix_web_sessions_technician_id'), 'web_sessions', ['technician_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_web_sessions_technician_id'), table_name='web_sessions')
    op.drop_table('web_sessions')
    op.drop_index('ix_floods_sender_last_at', table_name='floods')
    op.drop_table('floods')
    op.execute("ALTER TABLE tickets DROP COLUMN imported")
