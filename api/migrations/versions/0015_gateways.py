"""gateways: the last heartbeat of each edge agent (SPEC 7.5)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import api.store

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'gateways',
        sa.Column('site_id', sa.String(length=64), nullable=False),
        sa.Column('gateway_id', sa.String(length=128), nullable=False),
        sa.Column('version', sa.String(length=64), nullable=False),
        sa.Column('sent_at', api.store.UTCDateTime(timezone=True), nullable=False),
        sa.Column('received_at', api.store.UTCDateTime(timezone=True), nullable=False),
        sa.Column('started_at', api.store.UTCDateTime(timezone=True), nullable=True),
        sa.Column('clock_offset', sa.Double(), nullable=True),
        sa.Column('status', sa.JSON(), nullable=False),
        sa.Column('offline_since', api.store.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('site_id', 'gateway_id'))
    op.create_index('ix_gateways_received_at', 'gateways', ['received_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_gateways_received_at', table_name='gateways')
    op.drop_table('gateways')
