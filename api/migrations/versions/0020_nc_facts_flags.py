"""the NC's state and kept facts as the one integer the reports read (`facts`)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

STATES = ("open", "acknowledged", "rectifying", "pending_verification", "closed", "cancelled")
"""The NC states in their codes' order (api.nc_facts.STATE_CODE as of this migration)."""
BITS = (
    ("closed_by_sensor", 8), ("first_verification = 'pass'", 16),
    ("first_verification = 'fail'", 32), ("chattered OR condition = 'chattering'", 64),
    ("recurring", 128), ("closed_at IS NOT NULL", 256), ("reopen_count > 0", 512),
    ("rectified_at <= due_at", 1024), ("rectified_at IS NOT NULL AND due_at IS NOT NULL", 2048),
    ("rectified_at IS NOT NULL", 4096), ("acknowledged_at IS NOT NULL", 8192))
"""api.nc_facts.fact_flags in SQL, as of this migration (a migration never changes)."""
REPORT = [
    "detected_at", "updated_at", "state", "site_id", "asset_id", "standard_id", "asset_type",
    "category", "department", "root_cause_category", "severity", "condition", "recurring",
    "due_at", "acknowledged_at", "rectified_at", "closed_at", "first_verification",
    "closed_by_sensor", "chattered", "reopen_count", "pk", "detected_us", "acknowledged_us",
    "rectified_us", "closed_us"]
"""ix_nc_report as migration 0019 made it."""


def fill() -> str:
    """The statement that sets every NC's `facts` from its columns (booleans are 0 and 1
    on SQLite, and a CASE takes either as a condition)."""
    state = " ".join(f"WHEN '{name}' THEN {code}" for code, name in enumerate(STATES))
    bits = " + ".join(f"CASE WHEN {condition} THEN {bit} ELSE 0 END"
                      for condition, bit in BITS)
    return f"UPDATE nonconformances SET facts = CASE state {state} ELSE 7 END + {bits}"


def upgrade() -> None:
    op.add_column('nonconformances', sa.Column('facts', sa.Integer(), nullable=True))
    op.execute(fill())
    op.drop_index('ix_nc_report', table_name='nonconformances')
    op.create_index('ix_nc_report', 'nonconformances', [*REPORT, "facts"], unique=False)


def downgrade() -> None:
    op.drop_index('ix_nc_report', table_name='nonconformances')
    op.create_index('ix_nc_report', 'nonconformances', REPORT, unique=False)
    op.drop_column('nonconformances', 'facts')
