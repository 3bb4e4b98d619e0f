"""existing mail: what a mailbox's first connection found there, and content keys for
history without a Message-ID

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 22:00:00

mailbox_cursors.existing_through is the highest UID in the folder when the helpdesk
first connected to it (or found its UIDVALIDITY changed), and existing_mail the rule
that mail then fell under ("archive", "process", "skip"): a puller killed halfway
through a large INBOX goes on with the same rule, and mail that was skipped is never
marked done later. The partial index finds raw records without a Message-ID by their
content, so history read again (a recreated folder) is recognised.
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('mailbox_cursors', sa.Column('existing_through', sa.BigInteger(),
                                               nullable=True))
    op.add_column('mailbox_cursors', sa.Column('existing_mail', sa.String(length=16),
                                               nullable=True))
    op.create_index('ix_raw_messages_sha256', 'raw_messages', ['sha256'],
                    sqlite_where=sa.text('message_id IS NULL'),
                    postgresql_where=sa.text('message_id IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_raw_messages_sha256', table_name='raw_messages')
    with op.batch_alter_table('mailbox_cursors') as batch:
        batch.drop_column('existing_mail')
        batch.drop_column('existing_through')
