"""the facts the reports read kept on the NC (api/nc_facts.py), filled from the history

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 08:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import api.store
from api.nc_facts import ACKNOWLEDGING, SENSOR_ROLES, VERIFYING

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def _among(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)  # constants of api.nc_facts


FILL = f"""
UPDATE nonconformances SET
  acknowledged_at = (SELECT min(h.at) FROM nc_history h
                     WHERE h.nc_pk = nonconformances.pk
                       AND h.action IN ({_among(ACKNOWLEDGING)})),
  first_verification = (SELECT CASE WHEN h.to_state = 'closed' THEN 'pass' ELSE 'fail' END
                        FROM nc_history h
                        WHERE h.nc_pk = nonconformances.pk
                          AND h.action IN ({_among(VERIFYING)})
                        ORDER BY h.id LIMIT 1),
  closed_by_sensor = COALESCE((SELECT h.role IN ({_among(SENSOR_ROLES)}) FROM nc_history h
                               WHERE h.nc_pk = nonconformances.pk
                                 AND h.to_state = 'closed' AND h.from_state <> 'closed'
                               ORDER BY h.id DESC LIMIT 1), false),
  chattered = (condition = 'chattering' OR EXISTS (
                 SELECT 1 FROM nc_history h
                 WHERE h.nc_pk = nonconformances.pk
                   AND h.action IN ('occurrence', 'cleared')
                   AND CAST(h.changes AS TEXT) LIKE '%"chattering"%'))
"""


def upgrade() -> None:
    # plain ALTER TABLE ADD COLUMN, which SQLite has: a batch would copy the table and drop
    # the old one, which the history's foreign key forbids
    op.add_column('nonconformances', sa.Column(
        'acknowledged_at', api.store.UTCDateTime(timezone=True), nullable=True))
    op.add_column('nonconformances', sa.Column(
        'first_verification', sa.String(length=4), nullable=True))
    op.add_column('nonconformances', sa.Column(
        'closed_by_sensor', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('nonconformances', sa.Column(
        'chattered', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index('ix_nc_updated', 'nonconformances', ['updated_at'], unique=False)
    op.execute(FILL)


def downgrade() -> None:
    with op.batch_alter_table('nonconformances', schema=None) as batch_op:
        batch_op.drop_index('ix_nc_updated')
        batch_op.drop_column('chattered')
        batch_op.drop_column('closed_by_sensor')
        batch_op.drop_column('first_verification')
        batch_op.drop_column('acknowledged_at')
