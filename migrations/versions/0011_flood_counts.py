"""tickets by requester and creation time: the flood limit's count is a short index range

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 10:00:00

Each mail that would open a ticket asks how many tickets its sender opened in the last
hour (daemon.rules.flood). On the index of requester_email alone that read every ticket
the sender ever opened; on (requester_email, created_at) it reads the last hour's, and
stops at the limit. The new index replaces the old one: a lookup by requester alone
(forget, the triage filter) uses its first column the same way.
"""
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tickets_requester_email_created_at', 'tickets',
                    ['requester_email', 'created_at'])
    op.drop_index('ix_tickets_requester_email', table_name='tickets')


def downgrade() -> None:
    op.create_index('ix_tickets_requester_email', 'tickets', ['requester_email'])
    op.drop_index('ix_tickets_requester_email_created_at', table_name='tickets')
