"""console users and their sessions (SPEC 7.4)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 13:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import api.store

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('password_hash', sa.String(length=256), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('sites', sa.JSON(), nullable=True),
        sa.Column('language', sa.String(length=8), nullable=False),
        sa.Column('disabled', sa.Boolean(), nullable=False),
        sa.Column('failed_sign_ins', sa.Integer(), nullable=False),
        sa.Column('locked_until', api.store.UTCDateTime(timezone=True), nullable=True),
        sa.Column('created_at', api.store.UTCDateTime(timezone=True), nullable=False),
        sa.Column('password_changed_at', api.store.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'))
    op.create_table(
        'console_sessions',
        sa.Column('id_hash', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('csrf', sa.String(length=64), nullable=False),
        sa.Column('created_at', api.store.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', api.store.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id_hash'))
    op.create_index('ix_console_sessions_user_id', 'console_sessions', ['user_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_console_sessions_user_id', table_name='console_sessions')
    op.drop_table('console_sessions')
    op.drop_table('users')
