"""Web-to-Case throughput: sustained submissions/s with the challenge verified, and p99.

Usage: .venv/bin/python bench/bench_web.py [--submissions N] [--concurrency C]
           [--database-url URL] [--max-number M]

A daemon (the real FastAPI app under uvicorn, in the daemon's event loop, on a
loopback port; SQLite in a temporary directory by default) serves one form
with its defaults but a rate limit out of the way. The client fetches N
challenges and solves them first, in a process pool (that is the visitor's
browser's work, not the server's), waits out the minimum fill time, then
posts the N submissions (multipart: the four fields, a 20 KB attachment and
the solved ``altcha`` payload) from C threads, each on its own keep-alive
connection. Every submission is checked by the server exactly as in
production: rate limit, Origin, body, honeypot, challenge (HMAC of the
parameters and of the derived key), fill time, fields, message, daily cap,
the whole pipeline with its durable commit. Reported: submissions/s over the
posting phase, and p50/p99 latency of one submission.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import altcha  # noqa: E402
import httpx  # noqa: E402

from emaild.app import App  # noqa: E402
from emaild.config import load_config  # noqa: E402
from emaild.daemon import Daemon  # noqa: E402
from emaild.http.server import HttpComponent, http_component  # noqa: E402
from emaild.logs import configure as configure_logging  # noqa: E402

TOML = """
[[webform]]
name = "bench"
address = "support@example.com"
rate_burst = 1000000
rate_per_minute = 1000000.0
challenge_max_number = {max_number}
daily_cap = 1000000
"""


def solve(challenge: dict[str, Any]) -> str:
    parsed = altcha.Challenge.from_dict(challenge)
    solution = altcha.solve_challenge(parsed, timeout=120)
    assert solution is not None
    return altcha.Payload(parsed, solution).to_base64()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-number", type=int, default=100_000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "emaild.toml"
        conf.write_text(TOML.format(max_number=args.max_number), encoding="utf-8")
        env = {
            "HOME": tmp,
            "EMAILD_STATE_DIR": str(Path(tmp) / "state"),
            "EMAILD_HTTP_LISTEN": "127.0.0.1:0",
            "EMAILD_SMTP_LISTEN": "127.0.0.1:0",
            "EMAILD_SMTP_RELAY": "127.0.0.1:9",
        }
        if args.database_url:
            env["EMAILD_DATABASE_URL"] = args.database_url
        app = App.open(load_config(conf, env))
        daemon = Daemon(app, env={}, components=(http_component,))
        thread = threading.Thread(target=lambda: asyncio.run(daemon.serve()), daemon=True)
        thread.start()
        assert daemon.ready.wait(30), "daemon not ready"
        [http] = [c for c in daemon.components if isinstance(c, HttpComponent)]
        base = f"http://127.0.0.1:{http.port}"
        try:
            run(base, args, app)
        finally:
            daemon.request_stop()
            thread.join(60)
            app.close()


def verify_cost(app: App, payloads: list[str]) -> float:
    """Mean seconds of one challenge verification, as the server does it."""
    from emaild.webform import challenge

    [form] = app.config.webform
    secret = app.services.signer.secret
    t0 = time.perf_counter()
    for payload in payloads:
        assert challenge.verify(payload, form, secret).status == 0
    return (time.perf_counter() - t0) / len(payloads)


def run(base: str, args: argparse.Namespace, app: App) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        challenges = [
            client.get("/web-to-case/bench/challenge").json() for _ in range(args.submissions)
        ]
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        payloads = list(pool.map(solve, challenges, chunksize=8))
    solving = time.monotonic() - t0
    time.sleep(max(0.0, 2.1 - solving))  # the default minimum fill time
    attachment = os.urandom(20_000)
    local = threading.local()
    latencies: list[float] = []
    lock = threading.Lock()

    def submit(index: int) -> int:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=60)
        data = {
            "name": f"Visitor {index}",
            "email": f"visitor{index}@customer.test",
            "subject": f"Question {index}",
            "description": "Hello,\nI have a question about my order.\n",
            "altcha": payloads[index],
        }
        started = time.perf_counter()
        answer = local.client.post(
            "/web-to-case/bench",
            data=data,
            files=[("attachment", ("receipt.pdf", attachment, "application/pdf"))],
            headers={"Accept": "application/json", "Origin": base},
        )
        took = time.perf_counter() - started
        with lock:
            latencies.append(took)
        return answer.status_code

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.concurrency) as workers:
        codes = list(workers.map(submit, range(args.submissions)))
    wall = time.monotonic() - t0
    assert codes.count(201) == args.submissions, {c: codes.count(c) for c in set(codes)}
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"challenges: {args.submissions} solved by the client in {solving:.1f} s "
        f"(max number {args.max_number}); one verification "
        f"{verify_cost(app, payloads) * 1e6:.0f} us"
    )
    print(
        f"submissions: {args.submissions} from {args.concurrency} clients in {wall:.2f} s = "
        f"{args.submissions / wall:.1f}/s sustained; latency p50 "
        f"{statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
