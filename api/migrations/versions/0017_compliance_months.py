"""compliance_months: compliance_days summed per pair and UTC month, for the reports

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

FILL = """
INSERT INTO compliance_months (site_id, asset_id, standard_id, month,
                               ok, violating, no_data, inactive)
SELECT site_id, asset_id, standard_id, substr(day, 1, 7),
       sum(ok), sum(violating), sum(no_data), sum(inactive)
FROM compliance_days GROUP BY site_id, asset_id, standard_id, substr(day, 1, 7)
"""
"""The months of the days recorded before this migration (api.ingest.add_seconds keeps
them from then on)."""


def upgrade() -> None:
    op.create_table('compliance_months',
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('asset_id', sa.String(length=128), nullable=False),
    sa.Column('standard_id', sa.String(length=128), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('ok', sa.Double(), nullable=False),
    sa.Column('violating', sa.Double(), nullable=False),
    sa.Column('no_data', sa.Double(), nullable=False),
    sa.Column('inactive', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'asset_id', 'standard_id', 'month')
    )
    op.execute(FILL)


def downgrade() -> None:
    op.drop_table('compliance_months')
