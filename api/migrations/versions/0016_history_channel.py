"""nc_history.channel: where a change was made (api, console, link, system)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nc_history') as batch:
        batch.add_column(sa.Column('channel', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('nc_history') as batch:
        batch.drop_column('channel')
