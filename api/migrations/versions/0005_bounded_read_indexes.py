"""bounded read indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:00:00

A covering index on compliance_days, so summing a page of pairs over a window reads each
pair's days from one index range, not from table rows scattered day by day; and the
deliveries of a webhook by id, the order the admin list pages in.
"""

from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('compliance_days', schema=None) as batch_op:
        batch_op.create_index('ix_compliance_days_sums', [
            'site_id', 'asset_id', 'standard_id', 'day', 'ok', 'violating', 'no_data',
            'inactive'], unique=False)
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_list', ['webhook_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_list')
    with op.batch_alter_table('compliance_days', schema=None) as batch_op:
        batch_op.drop_index('ix_compliance_days_sums')
