"""Retention and erasure: indexes to find blobs' rows and old rows without a scan; reports (case_terms)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BACKFILL_BATCH = 1000


def upgrade() -> None:
    op.create_table(
        "case_terms",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("term", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_terms_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("case_id", "term", name=op.f("pk_case_terms")),
    )
    op.create_index(
        "ix_case_terms_created_at_term", "case_terms", ["created_at", "term"], unique=False
    )
    _backfill_terms()
    # "Does any row still use this blob?" before a blob is deleted.
    op.create_index("ix_messages_raw_sha256", "messages", ["raw_sha256"], unique=False)
    op.create_index("ix_quarantine_raw_sha256", "quarantine", ["raw_sha256"], unique=False)
    # The daily purge's "closed more than N days ago" and "older than M days".
    op.create_index("ix_cases_closed_at", "cases", ["closed_at"], unique=False)
    op.create_index("ix_quarantine_created_at", "quarantine", ["created_at"], unique=False)
    # Reports: cases opened in a period.
    op.create_index("ix_cases_created_at", "cases", ["created_at"], unique=False)
    op.create_index("ix_case_events_at", "case_events", ["at"], unique=False)


def _backfill_terms() -> None:
    """The terms of the cases made before this revision, in batches."""
    from emaild.reports.topics import term_rows

    conn = op.get_bind()
    cases = sa.table(
        "cases",
        sa.column("id", sa.Integer()),
        sa.column("subject", sa.Text()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    terms = sa.table(
        "case_terms",
        sa.column("case_id", sa.Integer()),
        sa.column("term", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    after = 0
    while True:
        batch = conn.execute(
            sa.select(cases.c.id, cases.c.subject, cases.c.created_at)
            .where(cases.c.id > after)
            .order_by(cases.c.id)
            .limit(BACKFILL_BATCH)
        ).all()
        if not batch:
            return
        rows = [r for case in batch for r in term_rows(case[0], case[1] or "", case[2])]
        if rows:
            conn.execute(terms.insert(), rows)
        after = batch[-1][0]


def downgrade() -> None:
    op.drop_index("ix_case_terms_created_at_term", table_name="case_terms")
    op.drop_table("case_terms")
    op.drop_index("ix_case_events_at", table_name="case_events")
    op.drop_index("ix_cases_created_at", table_name="cases")
    op.drop_index("ix_quarantine_created_at", table_name="quarantine")
    op.drop_index("ix_cases_closed_at", table_name="cases")
    op.drop_index("ix_quarantine_raw_sha256", table_name="quarantine")
    op.drop_index("ix_messages_raw_sha256", table_name="messages")
