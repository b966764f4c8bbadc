"""GET /api/v1/cases latency as the database grows (10^5 -> 10^6 cases), and reply latency.

Usage: .venv/bin/python bench/bench_api.py [--sizes 100000,1000000] [--requests N]
           [--database-url URL]

One database per size (SQLite in a temporary directory by default) is
filled with bulk Core inserts (one case and one inbound message per case),
each behind its own daemon's API (the real FastAPI app under uvicorn, in a
daemon's event loop, on a loopback port). A real HTTP client sends N
requests of each kind to every size, one at a time and interleaved (size A,
size B, A, B...), so background load falls on all sizes alike: the newest
page, a page deep in the table (a cursor half way down), and a filtered page
(status=pending, every tenth case). Reported: p50/p99 per kind and size and
the ratio of the largest size to the smallest (target: at most 1.5). Then
reply enqueue latency: POST /cases/{n}/replies (compose, blob, message row,
outbox row, event, one durable commit) to random cases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from emaild.app import App  # noqa: E402
from emaild.casework.query import encode_cursor  # noqa: E402
from emaild.casework.tokens import add_token  # noqa: E402
from emaild.config import load_config  # noqa: E402
from emaild.daemon import Daemon  # noqa: E402
from emaild.http.server import HttpComponent, http_component  # noqa: E402
from emaild.logs import configure as configure_logging  # noqa: E402
from emaild.store.models import Case, Message  # noqa: E402

BATCH = 20_000


def fill(app: App, start: int, stop: int) -> None:
    """Cases start+1..stop, each with one inbound message (bulk Core inserts)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with app.db.engine.begin() as conn:
        for lo in range(start, stop, BATCH):
            hi = min(lo + BATCH, stop)
            conn.execute(
                insert(Case),
                [
                    {
                        "id": i + 1,
                        "subject": f"Question {i}",
                        "status": "pending" if i % 10 == 0 else "new",
                        "priority": "Medium",
                        "origin": "Email",
                        "owner": "",
                        "category": "",
                        "tags": [],
                        "routing_address": "support@example.com",
                        "customer": f"c{i % 5000}@customer.test",
                        "customer_name": "",
                        "loop_count": 0,
                        "auto_responses": 0,
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                    }
                    for i in range(lo, hi)
                ],
            )
            conn.execute(
                insert(Message),
                [
                    {
                        "id": i + 1,
                        "case_id": i + 1,
                        "direction": "in",
                        "state": "stored",
                        "dedup_key": f"mid:<q{i}@customer.test>",
                        "message_id": f"<q{i}@customer.test>",
                        "in_reply_to": "",
                        "references": [],
                        "thread_index": "",
                        "from_addr": f"c{i % 5000}@customer.test",
                        "from_name": "",
                        "reply_to": "",
                        "to": ["support@example.com"],
                        "cc": [],
                        "subject": f"Question {i}",
                        "text": "Hello.",
                        "html": "",
                        "new_text": "Hello.",
                        "headers": [],
                        "raw_sha256": "0" * 64,
                        "raw_size": 100,
                        "channel": "bench",
                        "envelope_from": "",
                        "envelope_to": [],
                        "routing_address": "support@example.com",
                        "is_auto": False,
                        "is_bounce": False,
                        "fingerprint": "",
                        "defects": [],
                        "decision_trace": [],
                        "received_at": now,
                    }
                    for i in range(lo, hi)
                ],
            )


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def timed(client: httpx.Client, method: str, url: str, n: int, **kwargs: object) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        out.append(time.perf_counter() - started)
        assert r.status_code < 300, r.text
    return out


class Server:
    """One database of ``size`` cases behind its own daemon and API on a loopback port."""

    def __init__(self, size: int, tmp: str, database_url: str) -> None:
        env = {
            "EMAILD_STATE_DIR": tmp,
            "HOME": tmp,
            "EMAILD_HTTP_LISTEN": "127.0.0.1:0",
            "EMAILD_SMTP_LISTEN": "127.0.0.1:0",
        }
        if database_url:
            env["EMAILD_DATABASE_URL"] = database_url
        self.size = size
        self.app = App.open(load_config(None, env))
        started = time.perf_counter()
        fill(self.app, 0, size)
        print(f"filled {size:,} cases in {time.perf_counter() - started:.1f}s")
        self.daemon = Daemon(self.app, env={}, components=(http_component,))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.daemon.serve()), daemon=True)
        self.thread.start()
        assert self.daemon.ready.wait(60)
        [http] = [c for c in self.daemon.components if isinstance(c, HttpComponent)]
        app = self.app
        secret = app.db.run(lambda s: add_token(s, "bench", "write", app.pipeline.clock()))
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{http.port}/api/v1",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=60,
        )

    def kinds(self) -> dict[str, dict[str, object]]:
        return {
            "newest page": {"limit": 50},
            "deep page": {"limit": 50, "cursor": encode_cursor(self.size // 2)},
            "status=pending": {"limit": 50, "status": "pending"},
        }

    def close(self) -> None:
        self.client.close()
        self.daemon.request_stop()
        self.thread.join(60)
        self.app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--database-url", default="", help="one URL per size, comma-separated (default: SQLite)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    urls = args.database_url.split(",") if args.database_url else [""] * len(sizes)
    assert len(urls) == len(sizes), "give one database URL per size"
    configure_logging("error", "console")
    with contextlib.ExitStack() as stack:
        servers = []
        for size, url in zip(sizes, urls, strict=True):
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="emaild-bench-api-"))
            servers.append(Server(size, tmp, url))
            stack.callback(servers[-1].close)
        backend = servers[0].app.db.engine.dialect.name
        print(f"backend: {backend}; {args.requests} requests per kind and size, interleaved")
        # Requests alternate between the sizes, so whatever else the machine does
        # falls on every size alike and the ratio compares like with like.
        results: dict[str, dict[int, tuple[float, float]]] = {}
        for kind in servers[0].kinds():
            samples: dict[int, list[float]] = {s.size: [] for s in servers}
            for server in servers:  # warm caches
                timed(server.client, "GET", "/cases", 10, params=server.kinds()[kind])
            for _ in range(args.requests):
                for server in servers:
                    params = server.kinds()[kind]
                    samples[server.size] += timed(server.client, "GET", "/cases", 1, params=params)
            for size, got in samples.items():
                p50, p99 = pct(got, 50) * 1000, pct(got, 99) * 1000
                results.setdefault(kind, {})[size] = (p50, p99)
                print(f"  {size:>9,}  {kind:<15} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
        first, last = sizes[0], sizes[-1]
        print(f"\nratio {last:,} / {first:,} cases (target <= 1.5):")
        for kind, by_size in results.items():
            r50 = by_size[last][0] / by_size[first][0]
            r99 = by_size[last][1] / by_size[first][1]
            print(f"  {kind:<15} p50 {r50:.2f}x  p99 {r99:.2f}x")
        rng = random.Random(12)
        biggest = servers[-1]
        reply_samples = []
        for _ in range(min(args.requests, 200)):
            number = rng.randint(1, last)
            reply_samples += timed(
                biggest.client, "POST", f"/cases/{number}/replies", 1, json={"text": "Bench reply."}
            )
        p50, p99 = pct(reply_samples, 50) * 1000, pct(reply_samples, 99) * 1000
        print(
            f"\nreply enqueue at {last:,} cases ({len(reply_samples)} replies): "
            f"p50 {p50:.2f} ms  p99 {p99:.2f} ms"
        )
    os.sync()


if __name__ == "__main__":
    main()
