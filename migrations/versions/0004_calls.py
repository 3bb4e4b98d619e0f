"""call records: calls and PBX source cursors

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 13:35:12.599448
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pbx_source_states',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('cursor', sa.JSON(), nullable=False),
    sa.Column('last_run_at', sa.DateTime(), nullable=True),
    sa.Column('last_success_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_result', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_pbx_source_states'))
    )
    op.create_table('calls',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('call_id', sa.String(length=200), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('caller', sa.String(length=40), nullable=True),
    sa.Column('callee', sa.String(length=40), nullable=True),
    sa.Column('queue', sa.String(length=100), nullable=True),
    sa.Column('extension', sa.String(length=100), nullable=True),
    sa.Column('technician_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('answered_at', sa.DateTime(), nullable=True),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.Column('wait_seconds', sa.Integer(), nullable=True),
    sa.Column('talk_seconds', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('client_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('contact', sa.String(length=320), nullable=True),
    sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('callback', sa.String(length=16), nullable=True),
    sa.Column('callback_due', sa.DateTime(), nullable=True),
    sa.Column('callback_at', sa.DateTime(), nullable=True),
    sa.Column('raw', sa.JSON(), nullable=False),
    sa.Column('source_line', sa.String(length=1000), nullable=False),
    sa.Column('imported_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_calls_client_id_clients')),
    sa.ForeignKeyConstraint(['technician_id'], ['technicians.id'], name=op.f('fk_calls_technician_id_technicians')),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_calls_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calls')),
    sa.UniqueConstraint('source', 'call_id', name=op.f('uq_calls_source_call_id'))
    )
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calls_started_at'), ['started_at'], unique=False)
        # Partial: few calls go out, and most have no client, contact, ticket or callback.
        for columns, where in ((('callee', 'started_at'), "direction = 'out'"),
                               (('client_id', 'started_at'), 'client_id IS NOT NULL'),
                               (('contact', 'started_at'), 'contact IS NOT NULL'),
                               (('ticket_id',), 'ticket_id IS NOT NULL'),
                               (('callback',), 'callback IS NOT NULL')):
            batch_op.create_index('_'.join(('ix_calls', *columns)), list(columns), unique=False,
                                  sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def downgrade() -> None:
    raise NotImplementedError("downgrade is not supported: restore a backup")
