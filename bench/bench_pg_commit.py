"""The PostgreSQL primary's commit rate: the ceiling of one emaild cluster.

Every stored message is at least one durable COMMIT on the primary (WAL
flushed to disk, ``synchronous_commit`` as the server has it). This measures
how many small durable transactions per second the server takes, with 1, 8
and 32 connections committing at once (PostgreSQL flushes concurrent commits
together, so the rate grows with concurrency until the disk or CPU is full).
Each transaction inserts one ~1 KiB row into a table of a scratch database
that is dropped at the end. Bounded by ``--seconds`` per level and
``--max-commits`` in all.

    .venv/bin/python bench/bench_pg_commit.py --admin-url postgresql://postgres@127.0.0.1:5432/test

Read with ``bench_smtp.py``'s commits per message (``pg_stat_database``) to get
messages per second: commit rate / commits per message (README "Scaling").
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import psycopg

LEVELS = (1, 8, 32)


def run_level(url: str, connections: int, seconds: float, budget: int) -> tuple[int, float]:
    """(commits done, elapsed seconds) with ``connections`` committing in a loop."""
    done = [0] * connections
    stop_at = time.monotonic() + seconds
    per_thread = max(1, budget // connections)
    payload = "x" * 1024

    def loop(n: int) -> None:
        with psycopg.connect(url) as conn:
            for _ in range(per_thread):
                if time.monotonic() >= stop_at:
                    return
                with conn.transaction():
                    conn.execute("INSERT INTO commits (worker, body) VALUES (%s, %s)", (n, payload))
                done[n] += 1

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seconds", type=float, default=5.0, help="time cap per level")
    parser.add_argument("--max-commits", type=int, default=60_000, help="cap per level")
    args = parser.parse_args()
    scratch = f"emaild_commit_bench_{os.getpid()}"
    base = args.admin_url.rsplit("/", 1)[0]
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        settings = {
            name: admin.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("fsync", "synchronous_commit", "wal_sync_method", "commit_delay")
        }
        admin.execute(f'CREATE DATABASE "{scratch}"')
    try:
        url = f"{base}/{scratch}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE commits (id bigserial PRIMARY KEY, worker int, body text)")
        print(f"PostgreSQL commit rate ({', '.join(f'{k}={v}' for k, v in settings.items())})")
        for connections in LEVELS:
            commits, elapsed = run_level(url, connections, args.seconds, args.max_commits)
            print(
                f"  {connections:3} connections: {commits / elapsed:8.0f} commits/s "
                f"({commits} in {elapsed:.1f} s)",
                flush=True,
            )
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


if __name__ == "__main__":
    main()
