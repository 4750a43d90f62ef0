"""compliance_months by month first, for the reports' divided months

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 21:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_compliance_months_month', 'compliance_months',
                    ['month', 'site_id', 'asset_id', 'standard_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_compliance_months_month', table_name='compliance_months')
