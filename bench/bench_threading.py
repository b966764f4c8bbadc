"""Threading cost per message as the database grows: 1,000 -> 100,000 -> 1,000,000 messages.

Usage: .venv/bin/python bench/bench_threading.py [--sizes 1000,100000,1000000]
           [--replies N] [--passes P] [--dir DIR]

One SQLite database (the default backend) is filled by direct bulk SQL (one
case per five messages, two participants per case, an outbox row with a
signed Message-ID for every second case, an Outlook conversation root on every
third case) and grown in place to each size. At each size a fresh batch of
replies is matched with ``emaild.correlation.match.correlate``, the function
``CorrelateStage`` calls, in one of nine kinds: In-Reply-To naming a stored
message; a signed emaild Message-ID; a body token; a case number from a
participant; a case number from a stranger (every step runs, all miss);
Thread-Index; a bounce carrying a stored original; References to unknown
messages; and nothing at all. Targets are drawn at random over the whole
database, so lookups touch cold parts of the indexes. Parsing is done up
front (it does not depend on the database). Reported: mean and p95 time per
matched message (median of the timed passes), and the ratio to the smallest
size; the target is at most 1.5x at 1,000,000. Then the query plan of every
statement matching ran at the largest size, and, for scale, whole-pipeline
``ingest`` time per reply (parse, every stage, a durable commit).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import JSON, Boolean, Integer, LargeBinary, Table, event  # noqa: E402
from sqlalchemy.types import BigInteger, TypeDecorator  # noqa: E402

from emaild.app import App  # noqa: E402
from emaild.classify import Classification, classify  # noqa: E402
from emaild.config import load_config  # noqa: E402
from emaild.correlation.match import correlate  # noqa: E402
from emaild.correlation.tokens import CaseSigner  # noqa: E402
from emaild.logs import configure as configure_logging  # noqa: E402
from emaild.mime.parse import ParsedMessage, parse_message  # noqa: E402
from emaild.pipeline import Envelope  # noqa: E402
from emaild.store.models import Case, CaseParticipant, Message, OutboxItem  # noqa: E402

PER_CASE = 5
NOW = "2024-06-03 10:00:00.000000"
KINDS = (
    "stored message-id",
    "signed message-id",
    "body token",
    "participant case number",
    "stranger case number",
    "thread-index",
    "bounce original",
    "unknown references",
    "no evidence",
)


# --- bulk load ---------------------------------------------------------------
def column_defaults(table: Table) -> dict[str, Any]:
    """A value for every NOT NULL column, so the loader survives schema additions."""
    out: dict[str, Any] = {}
    for col in table.columns:
        if col.nullable or col.primary_key:
            continue
        kind = col.type
        if isinstance(kind, JSON):
            out[col.name] = "[]"
        elif isinstance(kind, Boolean | Integer | BigInteger):
            out[col.name] = 0
        elif isinstance(kind, LargeBinary):
            out[col.name] = b""
        elif isinstance(kind, TypeDecorator):  # UTCDateTime
            out[col.name] = NOW
        else:
            out[col.name] = ""
    return out


def message_mid(i: int) -> str:
    return f"<{i}.{hashlib.md5(str(i).encode()).hexdigest()[:12]}@customer{i % 97}.test>"


def customer(case: int) -> str:
    return f"c{case}@customer{case % 97}.test"


def root(case: int) -> bytes:
    """The Outlook conversation root of ``case`` (every third case has one)."""
    return hashlib.sha256(f"conversation {case}".encode()).digest()[:22]


def insert(conn: sqlite3.Connection, table: Table, rows: Iterator[dict[str, Any]]) -> None:
    base = column_defaults(table)
    cols: list[str] | None = None
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        full = {**base, **row}
        if cols is None:
            cols = list(full)
        batch.append(tuple(full[c] for c in cols))
        if len(batch) >= 20000:
            _flush(conn, table, cols, batch)
    if cols is not None and batch:
        _flush(conn, table, cols, batch)


def _flush(conn: sqlite3.Connection, table: Table, cols: list[str], batch: list[Any]) -> None:
    names = ", ".join(f'"{c}"' for c in cols)
    marks = ", ".join("?" for _ in cols)
    conn.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", batch)
    batch.clear()


def grow(db: Path, start: int, stop: int, signer: CaseSigner) -> None:
    """Add messages ``start..stop-1`` (and their cases, participants, outbox rows)."""
    first_case, last_case = start // PER_CASE + 1, (stop - 1) // PER_CASE + 1
    if start % PER_CASE:
        first_case += 1  # that case exists already
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-200000")
    cases = range(first_case, last_case + 1)
    insert(
        conn,
        Case.__table__,  # type: ignore[arg-type]
        (
            {
                "id": c,
                "subject": f"Case {c}",
                "status": "new",
                "routing_address": "support@example.com",
                "customer": customer(c),
            }
            for c in cases
        ),
    )
    insert(
        conn,
        CaseParticipant.__table__,  # type: ignore[arg-type]
        (
            {"case_id": c, "address": addr, "role": role}
            for c in cases
            for addr, role in ((customer(c), "customer"), (f"cc{c}@partner.test", "cc"))
        ),
    )
    insert(
        conn,
        Message.__table__,  # type: ignore[arg-type]
        (
            {
                "id": i + 1,
                "case_id": i // PER_CASE + 1,
                "dedup_key": f"mid:{message_mid(i)}",
                "message_id": message_mid(i),
                "thread_index": root(i // PER_CASE + 1).hex()
                if (i // PER_CASE + 1) % 3 == 0
                else "",
                "from_addr": customer(i // PER_CASE + 1),
                "subject": "Printer on fire",
                "text": "It is on fire.",
                "raw_sha256": "0" * 64,
                "raw_size": 100,
                "direction": "in",
                "state": "stored",
                "received_at": NOW,
            }
            for i in range(start, stop)
        ),
    )
    insert(
        conn,
        OutboxItem.__table__,  # type: ignore[arg-type]
        (
            {
                "id": c // 2,
                "case_id": c,
                "rcpt_to": customer(c),
                "message_id": signer.message_id(c),
                "status": "sent",
                "kind": "autoresponse",
            }
            for c in cases
            if c % 2 == 0
        ),
    )
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()


# --- replies -----------------------------------------------------------------
@dataclass
class Reply:
    kind: str
    raw: bytes
    parsed: ParsedMessage
    classification: Classification


def reply_raw(kind: str, rng: random.Random, n: int, signer: CaseSigner, serial: int) -> bytes:
    """One reply of ``kind`` aimed at a random case or message among ``n`` messages."""
    i = rng.randrange(n)
    case = i // PER_CASE + 1
    frm, subject, body, extra = "someone@else.test", "Question", "Hello.", ""
    if kind == "stored message-id":
        extra = f"In-Reply-To: {message_mid(i)}\r\n"
    elif kind == "signed message-id":
        extra = f"In-Reply-To: {signer.message_id(case)}\r\n"
    elif kind == "body token":
        body = f"Hello.\r\n\r\n> ref:{signer.token(case)}:ref"
    elif kind == "participant case number":
        frm, subject = customer(case), f"Re: [Case #{case:08d}] Printer"
    elif kind == "stranger case number":
        subject = f"Re: [Case #{case:08d}] Printer"
    elif kind == "thread-index":
        case = max(3, case - case % 3)
        extra = f"Thread-Index: {base64.b64encode(root(case) + bytes(5)).decode()}\r\n"
    elif kind == "unknown references":
        refs = " ".join(f"<unknown-{serial}-{k}@else.test>" for k in range(5))
        extra = f"In-Reply-To: <unknown-{serial}@else.test>\r\nReferences: {refs}\r\n"
    elif kind == "bounce original":
        return (
            "From: MAILER-DAEMON@mx.else.test\r\nTo: support@example.com\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <b{serial}@mx>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;"
            ' boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n'
            "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
            "Final-Recipient: rfc822; x@else.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
            "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: support@example.com\r\nMessage-ID: {message_mid(i)}\r\n\r\n--B--\r\n"
        ).encode()
    return (
        f"From: {frm}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <reply-{serial}@bench.test>\r\n{extra}"
        f"Content-Type: text/plain\r\n\r\n{body}\r\n"
    ).encode()


def make_replies(count: int, n: int, signer: CaseSigner, rng: random.Random) -> list[Reply]:
    out = []
    for k in range(count):
        for kind in KINDS:
            raw = reply_raw(kind, rng, n, signer, rng.randrange(10**12) + k)
            parsed = parse_message(raw, spool_threshold=1 << 20)
            out.append(Reply(kind, raw, parsed, classify(parsed, None)))
    rng.shuffle(out)
    return out


def match_pass(app: App, replies: list[Reply]) -> tuple[list[float], dict[str, int]]:
    """Match every reply once; per-message seconds and how many found a case."""
    signer = app.pipeline.services.signer
    routing = app.config.default_address
    times, hits = [], dict.fromkeys(KINDS, 0)
    with app.db.sessions() as session:
        for r in replies:
            t0 = time.perf_counter()
            result = correlate(
                session,
                signer,
                r.parsed,
                raw=r.raw,
                classification=r.classification,
                now=app.pipeline.clock(),
                policy_for=lambda _case: routing,
            )
            times.append(time.perf_counter() - t0)
            hits[r.kind] += result.case is not None
        session.rollback()
    return times, hits


def ingest_time(app: App, n: int, count: int, rng: random.Random) -> float:
    signer = app.pipeline.services.signer
    total = 0.0
    for k in range(count):
        kind = KINDS[k % len(KINDS)]
        raw = reply_raw(kind, rng, n, signer, 10**13 + rng.randrange(10**12))
        t0 = time.perf_counter()
        app.pipeline.ingest(raw, Envelope(channel="bench"))
        total += time.perf_counter() - t0
    return total / count


def query_plans(app: App, replies: list[Reply]) -> list[tuple[str, str]]:
    captured: dict[str, Any] = {}

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.setdefault(" ".join(statement.split()), parameters)

    event.listen(app.db.engine, "before_cursor_execute", capture)
    try:
        match_pass(app, replies)
    finally:
        event.remove(app.db.engine, "before_cursor_execute", capture)
    plans = []
    with app.db.engine.connect() as conn:
        for statement, parameters in captured.items():
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plans.append((statement, "; ".join(str(r[-1]) for r in rows)))
    return plans


def open_sized(base: Path, size: int) -> tuple[App, float]:
    """A database of its own with ``size`` messages, and how long loading took."""
    state = base / f"db-{size}"
    app = App.open(load_config(None, {"EMAILD_STATE_DIR": str(state), "HOME": str(base)}))
    t0 = time.perf_counter()
    grow(state / "emaild.db", 0, size, app.pipeline.services.signer)
    load = time.perf_counter() - t0
    app.db.engine.dispose()  # fresh connections see the new statistics
    return app, load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--replies", type=int, default=40, help="replies of each kind per pass")
    ap.add_argument("--passes", type=int, default=7, help="timed passes per size")
    ap.add_argument("--ingest", type=int, default=45, help="whole-pipeline ingests per size")
    ap.add_argument("--dir", default="", help="keep the databases here (default: a temp dir)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    configure_logging("error")  # the pipeline logs every decision at debug
    with tempfile.TemporaryDirectory(prefix="bench-threading-") as tmp:
        base = Path(args.dir or tmp)
        rng = random.Random(6)
        apps: dict[int, App] = {}
        print(f"SQLite databases under {base}")
        for size in sizes:
            apps[size], load = open_sized(base, size)
            print(f"  {size:>10,} messages loaded in {load:.1f} s")
        # Passes go round-robin over the sizes, so a busy moment on a shared
        # machine lands on all of them alike; the ratio is from one run.
        times: dict[int, list[float]] = {size: [] for size in sizes}
        hits: dict[int, dict[str, int]] = {size: dict.fromkeys(KINDS, 0) for size in sizes}
        for size in sizes:  # warm-up: statement caches, first pages
            signer = apps[size].pipeline.services.signer
            match_pass(apps[size], make_replies(5, size, signer, rng))
        for _ in range(args.passes):
            for size in sizes:
                signer = apps[size].pipeline.services.signer
                got, found = match_pass(apps[size], make_replies(args.replies, size, signer, rng))
                times[size] += got
                for kind, n in found.items():
                    hits[size][kind] += n
        total = args.passes * args.replies
        print(
            f"\nmatching time per message ({total * len(KINDS)} replies per size,"
            f" {len(KINDS)} kinds):"
        )
        print(
            f"{'messages':>12} {'mean us':>8} {'median us':>10} {'p95 us':>8} {'ratio (mean)':>13}"
        )
        first = statistics.fmean(times[sizes[0]])
        for size in sizes:
            t = times[size]
            mean, p95 = statistics.fmean(t), statistics.quantiles(t, n=20)[-1]
            print(
                f"{size:>12,} {mean * 1e6:>8.0f} {statistics.median(t) * 1e6:>10.0f}"
                f" {p95 * 1e6:>8.0f} {mean / first:>13.2f}"
            )
        if len(sizes) > 1:
            ratio = statistics.fmean(times[sizes[-1]]) / first
            verdict = "OK" if ratio <= 1.5 else "OVER TARGET"
            print(f"ratio {sizes[-1]:,} / {sizes[0]:,}: {ratio:.2f}x (target <= 1.5x): {verdict}")
        largest = sizes[-1]
        print(f"\nreplies that found a case, of {total} per kind, at {largest:,} messages:")
        for kind, found in hits[largest].items():
            print(f"  {kind:<24} {found}")
        app = apps[largest]
        signer = app.pipeline.services.signer
        print(f"\nquery plans at {largest:,} messages:")
        for statement, plan in query_plans(app, make_replies(3, largest, signer, rng)):
            print(f"  {statement[:110]}{'...' if len(statement) > 110 else ''}\n    -> {plan}")
        if args.ingest:
            print("\nwhole-pipeline ingest per reply (parse, every stage, fsync'd commit;")
            print("not part of the ratio; includes other stages' queries):")
            for size in sizes:
                per = ingest_time(apps[size], size, args.ingest, rng)
                print(f"  {size:>10,} messages: {per * 1e3:.1f} ms")
        for each in apps.values():
            each.close()


if __name__ == "__main__":
    main()
