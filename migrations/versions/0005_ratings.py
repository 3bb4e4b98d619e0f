"""customer ratings on tickets: rating, rating_comment, rated_at

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 14:05:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rating', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('rating_comment', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('rated_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("downgrade is not supported: restore a backup")
