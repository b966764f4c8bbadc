"""How long the ``emaild`` command takes: start-up, import, and ``ingest``.

Every figure is the median wall time of ``--runs`` fresh processes, measured
in one run beside ``python -c pass`` (the interpreter's own start-up), so the
ratios hold on a machine whose absolute speed drifts:

- ``python -c pass``: the floor;
- ``emaild --version``;
- ``import emaild.cli``: what ``python -X importtime`` reports for it (µs, cumulative);
- ``emaild ingest`` of a 4 KiB message with no daemon (the process runs the
  pipeline: config, database, pipeline imports and setup, then the message),
  and beside it what importing that pipeline alone costs (its floor);
- ``emaild ingest`` of the same size with a daemon running on the same state
  directory (handed over ``STATE_DIR/ingest.sock``).

Goals (issue 19): ``--version`` ≤ 0.15 s, ``import emaild.cli`` ≤ 0.1 s,
ingest ≤ 0.3 s with a daemon and ≤ 1 s without.

    .venv/bin/python bench/bench_cli.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_smtp import build_message  # noqa: E402  (the 4 KiB message of the SMTP bench)

EMAILD = [sys.executable, "-m", "emaild"]
PIPELINE = "emaild.channels.pipe.answer"  # the in-process ingest's entry


def wall(run: Callable[[], None], runs: int) -> float:
    """Median seconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def command(args: list[str], env: dict[str, str], stdin: bytes = b"") -> Callable[[], None]:
    def run() -> None:
        subprocess.run(args, input=stdin, env=env, capture_output=True, check=True, timeout=120)

    return run


def import_seconds(env: dict[str, str], module: str = "emaild.cli") -> float:
    """``module``'s cumulative import time from ``-X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    for line in proc.stderr.splitlines():
        match = re.match(rf"import time:\s+\d+ \|\s+(\d+) \| {re.escape(module)}$", line)
        if match:
            return int(match.group(1)) / 1e6
    raise SystemExit(f"no import time reported for {module}")


def wait_for_socket(path: Path, daemon: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        assert daemon.poll() is None, "the daemon exited"
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
            return
        except OSError:
            time.sleep(0.1)
        finally:
            probe.close()
    raise SystemExit("the daemon's ingest socket never came up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    runs = max(3, min(args.runs, 200))

    with tempfile.TemporaryDirectory() as tmp:
        base = {k: v for k, v in os.environ.items() if not k.startswith("EMAILD_")}
        base["HOME"] = tmp
        alone = dict(base, EMAILD_STATE_DIR=f"{tmp}/alone")
        served = dict(base, EMAILD_STATE_DIR=f"{tmp}/served", EMAILD_SMTP_LISTEN="127.0.0.1:0")
        counter = iter(range(1_000_000))

        def ingest(env: dict[str, str]) -> Callable[[], None]:
            def run() -> None:  # a new message each time: a new case, not a duplicate
                command([*EMAILD, "ingest"], env, build_message(next(counter), "cli"))()

            return run

        floor = wall(command([sys.executable, "-c", "pass"], base), runs)
        version = wall(command([*EMAILD, "--version"], base), runs)
        imported = statistics.median(import_seconds(base) for _ in range(runs))
        # What an in-process ingest imports (the pipeline, SQLAlchemy's ORM, the
        # config models): the floor of the no-daemon figure.
        pipeline = statistics.median(import_seconds(base, PIPELINE) for _ in range(runs))
        ingest(alone)()  # creates the store
        without = wall(ingest(alone), runs)
        daemon = subprocess.Popen(
            [*EMAILD, "run"], env=served, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_socket(Path(tmp, "served", "ingest.sock"), daemon, time.monotonic() + 120)
            ingest(served)()  # the daemon's first message warms its caches
            with_daemon = wall(ingest(served), runs)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)

    print(f"runs per figure: {runs} (median wall time)")
    print(f"python -c pass:                  {floor:6.3f} s")
    rows = [
        ("emaild --version", version, 0.15),
        ("import emaild.cli (importtime)", imported, 0.10),
        ("ingest 4 KiB, no daemon", without, 1.0),
        ("ingest 4 KiB, daemon running", with_daemon, 0.3),
    ]
    for name, seconds, goal in rows:
        verdict = "meets" if seconds <= goal else "misses"
        print(
            f"{name + ':':32} {seconds:6.3f} s = {seconds / floor:5.1f}× python -c pass"
            f"  ({verdict} the {goal} s goal)"
        )
    print(
        f"import {PIPELINE} (importtime): {pipeline:.3f} s = "
        f"{pipeline / without:.2f} of the no-daemon ingest"
    )
    print(f"ingest with / without a daemon:  {with_daemon / without:.2f}")


if __name__ == "__main__":
    main()
