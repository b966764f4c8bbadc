"""Retention and erasure: indexes to find blobs' rows and old rows without a scan; reports

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "Does any row still use this blob?" before a blob is deleted.
    op.create_index("ix_messages_raw_sha256", "messages", ["raw_sha256"], unique=False)
    op.create_index("ix_quarantine_raw_sha256", "quarantine", ["raw_sha256"], unique=False)
    # The daily purge's "closed more than N days ago" and "older than M days".
    op.create_index("ix_cases_closed_at", "cases", ["closed_at"], unique=False)
    op.create_index("ix_quarantine_created_at", "quarantine", ["created_at"], unique=False)
    # Reports: cases opened in a period.
    op.create_index("ix_cases_created_at", "cases", ["created_at"], unique=False)
    op.create_index("ix_case_events_at", "case_events", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_case_events_at", table_name="case_events")
    op.drop_index("ix_cases_created_at", table_name="cases")
    op.drop_index("ix_quarantine_created_at", table_name="quarantine")
    op.drop_index("ix_cases_closed_at", table_name="cases")
    op.drop_index("ix_quarantine_raw_sha256", table_name="quarantine")
    op.drop_index("ix_messages_raw_sha256", table_name="messages")
