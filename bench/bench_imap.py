"""IMAP catch-up throughput and IDLE delivery latency, against a throwaway Dovecot.

A backlog of 2,000 messages of 4 KiB is APPENDed to one mailbox. Figures:

1. plain fetch: imapclient logs in and fetches ``BODY.PEEK[]`` for every
   message in batches of 100, storing nothing (best of three runs);
2. emaild catch-up: ``MailboxPoller.poll_once`` on the same mailbox into a
   fresh store: every message parsed, stored with its case, the cursor moved
   in the same transaction, ``\\Seen`` set after commit; once downloading one
   batch after the other (as before issue 19) and once prefetching the next
   batch while one is stored, each into its own fresh store;
3. pipeline alone: the same 2,000 messages ingested from memory into another
   fresh store, for the part of (2) that is not IMAP;
4. IDLE delivery: with the poller waiting in IDLE, the time from APPEND to the
   case being committed, for 10 messages.

Storage is SQLite in temp directories; ``--database-url`` points the catch-up
run at another empty database (PostgreSQL, say). Run:

    .venv/bin/python bench/bench_imap.py [--messages 2000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from dovecot import Dovecot, ImapUser  # noqa: E402 (the test fixture's server)
from sqlalchemy import func, select  # noqa: E402

from emaild import logs  # noqa: E402
from emaild.app import App  # noqa: E402
from emaild.channels.imap.poller import MailboxPoller  # noqa: E402
from emaild.channels.imap.runner import MailboxRunner  # noqa: E402
from emaild.config import MailboxConfig, load_config  # noqa: E402
from emaild.pipeline import Envelope  # noqa: E402
from emaild.store.models import Message  # noqa: E402

MESSAGE_BYTES = 4096
BATCH = 100


def message(n: int, tag: str) -> bytes:
    head = (
        f"From: Customer {n} <customer{n}@customer.test>\r\nTo: support@example.com\r\n"
        f"Subject: Order {n} has not arrived\r\nMessage-ID: <bench-{tag}-{n}@customer.test>\r\n"
        f"Date: Mon, 2 Sep 2024 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"Hello, my order has not arrived yet and I would like to know why.\r\n"
    body = (line * (MESSAGE_BYTES // len(line) + 1))[: MESSAGE_BYTES - len(head)]
    return head + body


def open_app(state: Path, database_url: str) -> App:
    env = {"EMAILD_STATE_DIR": str(state), "HOME": str(state)}
    if database_url:
        env["EMAILD_DATABASE_URL"] = database_url
    return App.open(load_config(None, env))


def mailbox(server: Dovecot, user: ImapUser, **settings: object) -> MailboxConfig:
    data: dict[str, object] = {
        "name": "bench",
        "host": server.host,
        "port": server.port,
        "tls": "plain",
        "user": user.name,
        "password": user.password,
        "batch_size": BATCH,
    }
    data.update(settings)
    return MailboxConfig.model_validate(data)


def plain_fetch(server: Dovecot, user: ImapUser) -> tuple[int, float]:
    client = server.client(user)
    started = time.perf_counter()
    client.select_folder("INBOX", readonly=True)
    uids = client.search()
    fetched = 0
    for start in range(0, len(uids), BATCH):
        chunk = uids[start : start + BATCH]
        fetched += len(client.fetch(chunk, ["BODY.PEEK[]"]))
    elapsed = time.perf_counter() - started
    client.logout()
    return fetched, elapsed


def stored(app: App) -> int:
    with app.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Message)) or 0)


def idle_latencies(server: Dovecot, work: Path, rounds: int) -> list[float]:
    user = server.new_user()
    app = open_app(work / "idle-state", "")
    runner = MailboxRunner(app, mailbox(server, user, idle=True, poll_interval_seconds=300.0))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # connected and in IDLE
        out = []
        for n in range(rounds):
            started = time.perf_counter()
            server.append(user, [message(n, "idle")])
            while stored(app) < n + 1:
                if time.perf_counter() - started > 10:
                    raise RuntimeError("IDLE delivery took over 10 s")
                time.sleep(0.002)
            out.append(time.perf_counter() - started)
            time.sleep(0.2)
        return out
    finally:
        runner.stop()
        thread.join(15)
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument(
        "--database-url",
        default="",
        help="an empty database for the catch-up run (default: SQLite)",
    )
    parser.add_argument("--idle-rounds", type=int, default=10)
    args = parser.parse_args()
    logs.configure(os.environ.get("EMAILD_BENCH_LOG", "error"), "json")

    work = Path(tempfile.mkdtemp(prefix="emaild-bench-imap-"))
    work.chmod(0o755)  # Dovecot's unprivileged processes must reach its directory
    server = Dovecot.start(work / "dovecot")
    try:
        user = server.new_user()
        raws = [message(n, "backlog") for n in range(args.messages)]
        started = time.perf_counter()
        server.append(user, raws)
        print(
            f"backlog: {len(raws)} messages of {MESSAGE_BYTES} bytes, APPENDed in "
            f"{time.perf_counter() - started:.1f} s"
        )

        runs = [plain_fetch(server, user) for _ in range(3)]
        count, best = min(runs, key=lambda r: r[1])
        plain_rate = count / best
        print(
            f"plain imapclient fetch (batches of {BATCH}, stores nothing): "
            f"{plain_rate:,.0f} msg/s ({best:.2f} s, best of 3)"
        )

        # Warm up (imports, parser, SQL compile caches) so neither timed run pays for it.
        warm = open_app(work / "state-warm", "")
        for n in range(20):
            warm.pipeline.ingest(message(n, "warm"), Envelope(channel="imap"))
        warm.close()

        rates = {}
        for name, prefetch in (("one batch after the other", False), ("prefetching", True)):
            if args.database_url and not prefetch:
                continue  # one empty database at hand: the catch-up as it runs
            app = open_app(work / f"state-{prefetch}", args.database_url)
            poller = MailboxPoller(app, mailbox(server, user))
            poller.prefetch = prefetch
            started = time.perf_counter()
            summary = poller.poll_once()
            elapsed = time.perf_counter() - started
            poller.close()
            assert summary.cases == args.messages, summary.as_json()
            rates[prefetch] = summary.fetched / elapsed
            print(
                f"emaild catch-up, {name} (parse, store, case, cursor, \\Seen): "
                f"{rates[prefetch]:,.0f} msg/s ({elapsed:.2f} s, {summary.cases} cases, "
                f"backend {app.db.engine.dialect.name})"
            )
            app.close()
        catch_up = rates[True]
        if False in rates:
            print(
                f"ratio prefetching / one after the other: {catch_up / rates[False]:.2f}x "
                "(issue 19's goal: >= 3x the catch-up before it)"
            )

        print(f"ratio catch-up / plain fetch: {catch_up / plain_rate:.3f}x (target >= 0.3x)")
        if not args.database_url:  # a second empty database is only at hand for SQLite
            alone = open_app(work / "state-alone", "")
            envelope = Envelope(channel="imap")
            started = time.perf_counter()
            for raw in raws:
                alone.pipeline.ingest(raw, envelope)
            pipeline_rate = len(raws) / (time.perf_counter() - started)
            alone.close()
            print(f"pipeline alone (same messages from memory): {pipeline_rate:,.0f} msg/s")
            print(
                f"ratio catch-up / pipeline alone: {catch_up / pipeline_rate:.2f}x "
                "(goal >= 0.9x: the IMAP part costs little on top of storing)"
            )

        latencies = idle_latencies(server, work, args.idle_rounds)
        print(
            f"IDLE delivery, APPEND to committed case ({len(latencies)} messages): "
            f"median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s "
            "(target <= 1 s)"
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
