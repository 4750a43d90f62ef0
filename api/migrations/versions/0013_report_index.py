"""a covering index for the reports (api.store.REPORT_COLUMNS)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 12:40:00
"""

from __future__ import annotations

from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

COLUMNS = [
    "detected_at", "updated_at", "state", "site_id", "asset_id", "standard_id", "asset_type",
    "category", "department", "root_cause_category", "severity", "condition", "recurring",
    "due_at", "acknowledged_at", "rectified_at", "closed_at", "first_verification",
    "closed_by_sensor", "chattered", "reopen_count", "pk"]
"""api.store.REPORT_COLUMNS when this migration was written (a migration never changes)."""


def upgrade() -> None:
    op.create_index('ix_nc_report', 'nonconformances', COLUMNS, unique=False)


def downgrade() -> None:
    op.drop_index('ix_nc_report', table_name='nonconformances')
