"""Every query matching runs is an index lookup, never a table scan (both backends).

The queries are captured while ``correlate`` walks all five steps to the end
(every lookup misses) and while it follows a reply to a closed case; each is
then explained. On PostgreSQL sequential scans are switched off for the
explain, so a plan still showing one means no index can serve the query.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from threading_mail import close_case, ingest, mail, signer, thread_index

from emaild.app import App
from emaild.classify import classify
from emaild.config import RoutingAddress
from emaild.correlation.match import correlate
from emaild.mime.parse import parse_message

MISS_EVERYTHING = (
    "From: MAILER-DAEMON@mx.else.test\r\n"
    "To: support@example.com\r\n"
    "Subject: Undelivered Mail: Re: [Case #00000001] printer\r\n"
    "Message-ID: <plan-1@mx.else.test>\r\n"
    "In-Reply-To: <unknown-1@else.test>\r\n"
    "References: <unknown-0@else.test> <unknown-1@else.test>\r\n"
    f"Thread-Index: {thread_index(b'x' * 22)}\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    "--B\r\nContent-Type: text/plain\r\n\r\nref:1.thread.00000000000000000000:ref\r\n"
    "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
    "Final-Recipient: rfc822; a@else.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    "--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <unknown-2@else.test>\r\n"
    "\r\n--B--\r\n"
).encode()


def explain(app: App, statement: str, parameters: Any) -> str:
    with app.db.engine.connect() as conn:
        if app.db.is_sqlite:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(str(row[-1]) for row in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        return "\n".join(str(row[0]) for row in rows)


def test_matching_uses_indexes_only(app: App) -> None:
    case = ingest(app, mail(mid="<m1@customer.test>", cc=["bob@customer.test"])).case_number
    assert case == 1
    close_case(app, case)
    policy = RoutingAddress(address="support@example.com", closed_case="new_linked")
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    event.listen(app.db.engine, "before_cursor_execute", capture)
    try:
        with app.db.session() as session:
            for raw in (MISS_EVERYTHING, mail(mid="<r@x.test>", in_reply_to="<m1@customer.test>")):
                parsed = parse_message(raw, spool_threshold=1 << 20)
                result = correlate(
                    session,
                    signer(app),
                    parsed,
                    raw=raw,
                    classification=classify(parsed, None),
                    now=datetime.now(UTC),
                    policy_for=lambda _case: policy,
                )
                assert [d for d, _ in result.trace][-1] in ("new case", "new linked case")
    finally:
        event.remove(app.db.engine, "before_cursor_execute", capture)

    tables = " ".join(s for s, _ in captured)
    for table in ("messages", "outbox", "case_participants", "cases"):
        assert f"FROM {table}" in tables, f"no query on {table}: steps were skipped"
    for statement, parameters in captured:
        plan = explain(app, statement, parameters)
        assert is_index_lookup(plan, sqlite=app.db.is_sqlite), (statement, plan)


def is_index_lookup(plan: str, *, sqlite: bool) -> bool:
    """Whether every table access in ``plan`` is a lookup by index key."""
    if sqlite:
        # "SCAN t" (even "SCAN t USING INDEX") reads a whole table or index;
        # "SEARCH t USING [COVERING] INDEX ... (col=?)" is a lookup.
        return not any(line.strip().startswith("SCAN") for line in plan.splitlines())
    # A full walk of some index with a Filter would dodge "Seq Scan": each scan
    # node must be an index access and the plan must search by an index condition.
    nodes = [line for line in plan.splitlines() if " Scan" in line]
    # (A Bitmap Heap Scan fetches the rows a Bitmap Index Scan found.)
    accesses = ("Index Scan", "Index Only Scan", "Bitmap Index Scan", "Bitmap Heap Scan")
    # Every index condition must pin a key ("x = ..."), not just "x IS NOT NULL".
    conds = [line for line in plan.splitlines() if "Index Cond:" in line]
    return (
        bool(nodes)
        and all(any(a in n for a in accesses) for n in nodes)
        and bool(conds)
        and all(" = " in c for c in conds)
    )
