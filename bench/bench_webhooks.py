"""Webhook delivery: commit -> receipt latency under SMTP load, and events/s.

A fast receiver (a separate process: a threaded HTTP server that answers 200
and notes when each ``webhook-id`` arrived) and ``emaild run`` on its defaults
(SQLite, default ``[webhooks]`` settings) with one ``[[webhook]]`` for every
event type.

0. Baseline: the same SMTP load (below) with no subscription, for the intake
   rate to compare with (skip with ``--no-baseline``); the ratio of the two
   rates is printed.
1. Latency: 32 concurrent SMTP clients send ``--messages`` messages (a new
   connection each). For every message, latency = arrival of its
   ``message.received`` webhook at the receiver - the moment its client got
   the 250 to DATA (the commit happens just before the 250). p50/p99/max.
2. Throughput: with the daemon stopped, ``--backlog`` messages are ingested
   in-process (two events each: case.created, message.received); then the
   daemon starts and the time until every delivery is delivered gives events/s.

    .venv/bin/python bench/bench_webhooks.py [--messages 1000] [--backlog 1000] [--seconds 60]
        [--toml "[webhooks]\\nconcurrency = 16"] [--without-webhooks | --no-baseline]

Bounded in count (``--messages``, ``--backlog``) and time (``--seconds`` per phase).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 32

RECEIVER = r"""
import json, signal, sys, time, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

arrived = []
lock = threading.Lock()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        now = time.time()
        event = json.loads(body)
        mid = ""
        if event["type"] == "message.received":
            mid = event["data"]["message"]["message_id"]
        with lock:
            arrived.append((self.headers["webhook-id"], event["type"], mid, now))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

server = Server(("127.0.0.1", 0), Handler)
def dump(*_):
    with lock:
        json.dump(arrived, open(sys.argv[1], "w"))
    sys.exit(0)
signal.signal(signal.SIGTERM, dump)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_address[1], flush=True)
signal.pause()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emaild", "run"], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"emaild did not start; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def message(n: int) -> tuple[str, bytes]:
    mid = f"<bench-{n}-{secrets.token_hex(4)}@customer.test>"
    raw = (
        f"From: Customer {n} <c{n}@customer.test>\r\nTo: support@example.com\r\n"
        f"Subject: Bench {n}\r\nMessage-ID: {mid}\r\n\r\n" + "Some text of a question.\r\n" * 40
    ).encode()
    return mid, raw


async def smtp_one(port: int, n: int) -> tuple[str, float] | None:
    mid, raw = message(n)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def reply() -> bytes:
            while True:
                line = await reader.readline()
                if not line or line[3:4] != b"-":
                    return line

        await reply()
        for command in (b"EHLO bench\r\n", f"MAIL FROM:<c{n}@customer.test>\r\n".encode(),
                        b"RCPT TO:<support@example.com>\r\n", b"DATA\r\n"):  # fmt: skip
            writer.write(command)
            await reply()
        writer.write(raw + b".\r\n")
        code = await reply()
        done = time.time()
        writer.write(b"QUIT\r\n")
        writer.close()
        return (mid, done) if code.startswith(b"250") else None
    except OSError:
        return None


async def smtp_load(port: int, messages: int, seconds: float) -> dict[str, float]:
    acknowledged: dict[str, float] = {}
    refused = [0]
    counter = iter(range(messages))
    deadline = time.monotonic() + seconds

    async def client() -> None:
        for n in counter:
            if time.monotonic() > deadline:
                return
            got = await smtp_one(port, n)
            if got:
                acknowledged[got[0]] = got[1]
            else:
                refused[0] += 1

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    if refused[0]:
        print(f"  {refused[0]} messages not acknowledged (not 250, or the connection failed)")
    return acknowledged


def pending(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        sql = "SELECT count(*) FROM webhook_deliveries WHERE status != 'delivered'"
        return int(conn.execute(sql).fetchone()[0])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--toml",
        default="",
        help='More config, e.g. "[webhooks]\\nconcurrency = 16" (\\n for newlines).',
    )
    parser.add_argument(
        "--without-webhooks",
        action="store_true",
        help="Only the baseline: phase 1 with no subscription.",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="Skip the baseline run without webhooks."
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="emaild-bench-webhooks-"))
    arrivals_file = work / "arrivals.json"
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(arrivals_file)], stdout=subprocess.PIPE
    )
    assert receiver.stdout is not None
    hook_port = int(receiver.stdout.readline())
    secret = work / "hook.secret"
    secret.write_text("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    config = work / "emaild.toml"
    hook = (
        f'[[webhook]]\nname = "bench"\nurl = "http://127.0.0.1:{hook_port}/hook"\n'
        f'secret_file = "{secret}"\n'
    )

    def configure(with_hook: bool) -> None:
        config.write_text(
            (hook if with_hook else "")
            + '[autoresponse]\nenabled = false\n[logging]\nlevel = "warning"\n'
            # One loopback client IP sends everything: lift the per-IP connection rate.
            + "[smtp]\nmax_connection_rate_per_ip = 1000000\n"
            + args.toml.replace("\\n", "\n")
        )

    smtp_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILD_")}
    env.update(
        EMAILD_CONFIG=str(config),
        EMAILD_STATE_DIR=str(work / "state"),
        EMAILD_SMTP_LISTEN=f"127.0.0.1:{smtp_port}",
        EMAILD_SMTP_RELAY="127.0.0.1:9",
    )
    db = work / "state" / "emaild.db"
    log = work / "emaild.log"
    baseline = 0.0
    try:
        # --- 0. the same SMTP load without webhooks -----------------------------------
        if not args.no_baseline:
            configure(False)
            plain = env | {"EMAILD_STATE_DIR": str(work / "baseline")}
            daemon = start_daemon(plain, smtp_port, log)
            started = time.monotonic()
            acknowledged = asyncio.run(smtp_load(smtp_port, args.messages, args.seconds))
            baseline = len(acknowledged) / (time.monotonic() - started)
            stop(daemon)
            print(f"SMTP without webhooks: {baseline:.0f} messages/s")
            if args.without_webhooks:
                return

        # --- 1. latency under 32 SMTP clients --------------------------------------
        configure(True)
        daemon = start_daemon(env, smtp_port, log)
        started = time.monotonic()
        acknowledged = asyncio.run(smtp_load(smtp_port, args.messages, args.seconds))
        smtp_seconds = time.monotonic() - started
        deadline = time.monotonic() + args.seconds
        while pending(db) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = pending(db)
        stop(daemon)

        # --- 2. events/s from a backlog ----------------------------------------------
        sys.path.insert(0, str(ROOT))
        from emaild import logs
        from emaild.app import App
        from emaild.config import load_config
        from emaild.intake import Envelope

        loaded = load_config(config, env)
        logs.configure(loaded.logging.level, loaded.logging.format)
        app = App.open(loaded)
        for n in range(args.backlog):
            app.pipeline.ingest(message(10**6 + n)[1], Envelope(channel="pipe"))
        app.close()
        backlog = pending(db)
        daemon = start_daemon(env, smtp_port, log)
        started = time.monotonic()
        deadline = started + args.seconds
        while pending(db) and time.monotonic() < deadline:
            time.sleep(0.05)
        drained = time.monotonic() - started
        backlog_left = pending(db)
        stop(daemon)
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
    arrivals = json.loads(arrivals_file.read_text())
    first: dict[str, float] = {}
    for _, kind, mid, at in arrivals:
        if kind == "message.received" and mid in acknowledged:
            first.setdefault(mid, at)
    latencies = [(first[mid] - t) * 1000 for mid, t in acknowledged.items() if mid in first]
    rate = len(acknowledged) / smtp_seconds
    print(f"SMTP with webhooks: {len(acknowledged)} messages acknowledged by {CLIENTS} clients "
          f"in {smtp_seconds:.1f}s ({rate:.0f}/s)")  # fmt: skip
    if baseline:
        print(f"intake with webhooks / without: {rate / baseline:.2f}")
    if latencies:
        print(
            f"commit -> receipt (250 -> message.received at the receiver), {len(latencies)} "
            f"messages: p50 {percentile(latencies, 50):.0f} ms, p99 "
            f"{percentile(latencies, 99):.0f} ms, max {max(latencies):.0f} ms"
        )
    print(f"  not delivered within {args.seconds:.0f}s: {left}")
    delivered = backlog - backlog_left
    print(
        f"backlog: {backlog} deliveries ({args.backlog} messages) drained in {drained:.1f}s by "
        f"a restarted daemon: {delivered / drained:.0f} events/s; {backlog_left} left"
    )
    print(f"(work dir {work}; daemon log {log})")


if __name__ == "__main__":
    main()
