"""Single-threaded ingest: milliseconds per message, stage by stage.

One thread calls ``Pipeline.ingest`` in a loop with the 4 KiB messages of
``bench_smtp.py`` (no SMTP, no other threads), so the figures are the
pipeline's own cost: what each stage takes, the blob write (fsync of file
and directory), and the rest (session, commit with its WAL fsync, logging).

- ``--answered`` gives every message a new sender, so each one gets an
  auto-response; without it senders repeat as in ``bench_smtp.py`` (97 of
  them), and after three messages each the per-recipient rate limit answers
  no more.
- Logging is on, as in the daemon (JSON lines), written to /dev/null.
- ``--cpu`` reports thread CPU time instead of wall time.
- The same messages parsed by mail-parser alone (``mailparser.parse_from_bytes``,
  the ``bench`` extra), timed with the same clock right after each round (best
  round): the floor the pipeline is measured against (issue 19's goal: at
  most 2.5 times it).
- ``--metrics-overhead``: each round ingests ``--messages`` with metrics counting
  (``[metrics] enabled``) and as many without, alternating every 10 messages,
  and reports the per-message cost of each and their ratio (no stage breakdown).

    .venv/bin/python bench/bench_ingest.py [--messages 300] [--rounds 3] [--answered]
    .venv/bin/python bench/bench_ingest.py --metrics-overhead --rounds 5
    .venv/bin/python bench/bench_ingest.py --database-url postgresql+psycopg://...

Each round ingests ``--messages`` new messages into the same store; the best
round is reported (the least disturbed by whatever else the machine runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_smtp import build_message  # noqa: E402

import emaild.pipeline.core as core  # noqa: E402
from emaild import logs  # noqa: E402
from emaild.app import App  # noqa: E402
from emaild.config import load_config  # noqa: E402
from emaild.observe import metrics  # noqa: E402
from emaild.pipeline import Envelope  # noqa: E402

# Issue 19: a message through the pipeline costs at most this many mail-parser parses.
GOAL_RATIO = 2.5
# --metrics-overhead: messages per alternation between metrics on and off.
CHUNK = 10
ENVELOPE = Envelope(
    channel="smtp",
    mail_from="bench@customer.test",
    rcpt_to=("support@example.com",),
    peer="127.0.0.1:1",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--answered", action="store_true", help="a new sender per message")
    parser.add_argument("--cpu", action="store_true", help="thread CPU time, not wall time")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument(
        "--metrics-overhead", action="store_true", help="metrics on vs off, per message"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="emaild-bench-ingest-") as state:
        env = {"EMAILD_STATE_DIR": state, "HOME": state}
        if args.database_url:
            env["EMAILD_DATABASE_URL"] = args.database_url
        config = load_config(None, env)
        # Logged as the daemon logs (JSON lines), into the void.
        with open(os.devnull, "w") as void:
            logs.configure(config.logging.level, "json", stream=void)
            app = App.open(config)
            try:
                if args.metrics_overhead:
                    overhead(app, args)
                else:
                    run(app, args)
            finally:
                app.close()


def run(app: App, args: argparse.Namespace) -> None:
    clock: Callable[[], float] = time.thread_time if args.cpu else time.perf_counter
    spent: dict[str, float] = defaultdict(float)
    timed_stage = core._run_stage

    def stage(stage: Any, ctx: Any) -> None:
        started = clock()
        try:
            timed_stage(stage, ctx)
        finally:
            spent[stage.name] += clock() - started

    put = app.blobs.put

    def blob_put(data: bytes | memoryview) -> tuple[str, int]:
        started = clock()
        try:
            return put(data)
        finally:
            spent["(blob write)"] += clock() - started

    core._run_stage = stage
    app.blobs.put = blob_put  # type: ignore[method-assign]
    tag = str(time.time())
    for n in range(30):  # imports, caches, prepared statements
        app.pipeline.ingest(build_message(n, f"{tag}-warm"), ENVELOPE)

    best_total = floor = float("inf")
    best: dict[str, float] = {}
    for r in range(args.rounds):
        messages = [build_message(n, f"{tag}-{r}") for n in range(args.messages)]
        if args.answered:
            messages = [
                m.replace(f"customer{n % 97}@".encode(), f"new{r}x{n}@".encode())
                for n, m in enumerate(messages)
            ]
        spent.clear()
        started = clock()
        for raw in messages:
            app.pipeline.ingest(raw, ENVELOPE)
        total = clock() - started
        spent["(rest: session, commit, log)"] = total - sum(spent.values())
        for name, value in spent.items():  # each line: its best round
            best[name] = min(best.get(name, float("inf")), value)
        best_total = min(best_total, total)
        # The floor, right after each round: a machine whose speed drifts
        # drifts for both alike.
        floor = min(floor, parse_only(messages, clock))

    n = args.messages
    what = "thread CPU" if args.cpu else "wall"
    backend = app.db.engine.dialect.name
    answered = "every message answered" if args.answered else "senders repeat as in bench_smtp"
    print(f"{backend}, {answered}: {best_total / n * 1000:.2f} ms/message ({what}), ", end="")
    print(f"{n / best_total:.0f} msg/s, best of {args.rounds} rounds of {n}")
    for name, value in sorted(best.items(), key=lambda item: -item[1]):
        print(f"  {name:30} {value / n * 1000:6.3f} ms")
    ratio = best_total / n / floor
    print(f"mail-parser alone: {floor * 1000:.3f} ms/message ({what}); ", end="")
    print(f"pipeline / parse = {ratio:.2f} (goal <= {GOAL_RATIO})")


def parse_only(messages: list[bytes], clock: Callable[[], float]) -> float:
    """Seconds per message mail-parser alone spends on ``messages``."""
    try:
        import mailparser
    except ImportError:
        sys.exit("bench_ingest: mail-parser is missing: pip install -e '.[bench]'")
    started = clock()
    for raw in messages:
        mailparser.parse_from_bytes(raw)
    return (clock() - started) / len(messages)


def overhead(app: App, args: argparse.Namespace) -> None:
    """Per-message cost with metrics on and off: within each round the messages go in
    chunks of ``CHUNK``, alternately with and without, so a growing store and the
    machine's background load fall on both alike; the best round of each is kept."""
    clock: Callable[[], float] = time.thread_time if args.cpu else time.perf_counter
    tag = str(time.time())
    for n in range(30):
        app.pipeline.ingest(build_message(n, f"{tag}-warm"), ENVELOPE)
    best = {True: float("inf"), False: float("inf")}
    for r in range(args.rounds):
        messages = [build_message(n, f"{tag}-{r}") for n in range(args.messages * 2)]
        spent = {True: 0.0, False: 0.0}
        for index, start in enumerate(range(0, len(messages), CHUNK)):
            on = (index + r) % 2 == 0
            metrics.set_enabled(on)
            started = clock()
            for raw in messages[start : start + CHUNK]:
                app.pipeline.ingest(raw, ENVELOPE)
            spent[on] += clock() - started
        for on in (True, False):
            best[on] = min(best[on], spent[on])
    metrics.set_enabled(True)
    n = args.messages
    on, off = best[True] / n * 1000, best[False] / n * 1000
    backend = app.db.engine.dialect.name
    what = "thread CPU" if args.cpu else "wall"
    print(f"{backend}, metrics on vs off ({what}), best of {args.rounds} rounds of {n} each:")
    print(f"  on  {on:.3f} ms/message\n  off {off:.3f} ms/message")
    print(f"  ratio {on / off:.3f} ({(on / off - 1) * 100:+.1f} %)")
    # The same difference without the noise of fsyncs and a shared machine: the
    # instrument calls one message makes (each stage, the message, one commit),
    # timed on their own.
    names = [stage.name for stage in app.pipeline.stages]
    repeat = 5000
    started = clock()
    for _ in range(repeat):
        for name in names:
            metrics.stage(name, 0.0001)
        metrics.message("smtp", "new_case", 0.004)
        metrics.commit(0.002)
    calls = (clock() - started) / repeat * 1000
    print(f"  instrument calls of one message: {calls * 1000:.1f} us ({calls / off * 100:.2f} %)")


if __name__ == "__main__":
    main()
