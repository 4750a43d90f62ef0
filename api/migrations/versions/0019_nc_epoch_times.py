"""the NC times the reports read as integers (microseconds since 1970), in ix_nc_report

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

TIMES = ("detected", "acknowledged", "rectified", "closed")
REPORT = [
    "detected_at", "updated_at", "state", "site_id", "asset_id", "standard_id", "asset_type",
    "category", "department", "root_cause_category", "severity", "condition", "recurring",
    "due_at", "acknowledged_at", "rectified_at", "closed_at", "first_verification",
    "closed_by_sensor", "chattered", "reopen_count", "pk"]
"""ix_nc_report as migration 0013 made it (a migration never changes)."""


def micros(dialect: str, column: str) -> str:
    """A stored time as whole microseconds since 1970, exactly: SQLite keeps
    `YYYY-MM-DD HH:MM:SS.ffffff` text (julianday would round it to the millisecond)."""
    if dialect == "postgresql":
        return f"CAST(EXTRACT(EPOCH FROM {column}) * 1000000 AS BIGINT)"
    return (f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
            f" + CAST(substr({column}, 21, 6) AS INTEGER)")  # whole seconds, then the rest:
    # strftime rounds a time to the millisecond first (59.9996 s would be a second more)


def fill(dialect: str) -> str:
    """The statement that sets every NC's times as integers from its times."""
    return "UPDATE nonconformances SET " + ", ".join(
        f"{time}_us = {micros(dialect, f'{time}_at')}" for time in TIMES)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for time in TIMES:
        op.add_column('nonconformances', sa.Column(f'{time}_us', sa.BigInteger(),
                                                   nullable=True))
    op.execute(fill(dialect))
    op.drop_index('ix_nc_report', table_name='nonconformances')
    op.create_index('ix_nc_report', 'nonconformances',
                    [*REPORT, *(f"{time}_us" for time in TIMES)], unique=False)


def downgrade() -> None:
    op.drop_index('ix_nc_report', table_name='nonconformances')
    op.create_index('ix_nc_report', 'nonconformances', REPORT, unique=False)
    for time in TIMES:
        op.drop_column('nonconformances', f'{time}_us')
