"""Operations: when a channel started failing, alert state per channel, ops events

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channel_status", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "channel_alerts",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_channel_alerts")),
    )
    op.create_table(
        "ops_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_events")),
    )
    op.create_index(op.f("ix_ops_events_kind"), "ops_events", ["kind"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_ops_events_kind"), table_name="ops_events")
    op.drop_table("ops_events")
    op.drop_table("channel_alerts")
    with op.batch_alter_table("channel_status", schema=None) as batch_op:
        batch_op.drop_column("failing_since")
