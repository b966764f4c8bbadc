"""Web-to-Case: submissions per form and day (the daily cap)

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webform_days",
        sa.Column("form", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("admitted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("form", "day", name=op.f("pk_webform_days")),
    )


def downgrade() -> None:
    op.drop_table("webform_days")
