"""On SQLite, the newest-first index carries the searched texts

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 06:00:00

A console or API search for a rare word reads NCs newest first until a page is full, so
every NC: through `ix_nc_detected` each one was a lookup of its whole row. On SQLite
`ix_nc_newest` holds the four searched columns after (detected_at, pk), so the search reads
the index alone and fetches only the rows it keeps. Not on PostgreSQL: its index scans
fetch every row before filtering anyway, and a title longer than a btree entry would be
refused.
"""

from __future__ import annotations

from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index('ix_nc_newest', 'nonconformances',
                    ['detected_at', 'pk', 'title', 'asset_id', 'standard_id', 'assignee'],
                    unique=False)
    op.drop_index('ix_nc_detected', table_name='nonconformances')


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index('ix_nc_detected', 'nonconformances', ['detected_at', 'pk'], unique=False)
    op.drop_index('ix_nc_newest', table_name='nonconformances')
