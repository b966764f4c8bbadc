"""Big messages against ``emaild run``: what one costs in memory, and many at once vs the budget.

Starts the daemon as a subprocess (``tests/smtp_helpers.DaemonProcess``, SQLite
in a throwaway state directory) with ``limits.data_bytes_in_flight`` (default
128 MiB). Warms it up with a small message and a small HTML one, then:

1. sends one message of SIZE bytes (a base64 attachment, ``SIZE`` declared)
   and prints the daemon's VmHWM above its idle RSS as a ratio of the message
   (issue 18 §4: at most 1.5x, the DATA transfer being spooled to disk);
   then one message of SIZE bytes whose bulk is a text body, for each of
   quoted-printable text/plain and HTML (the parser sees 512 KiB of it, the
   whole body is stored as an attachment), and prints the same ratio;
2. sends CLIENTS such messages at once and prints how many got 250 and 451,
   whether every 250 is stored byte-exact, and VmHWM above idle RSS as a
   ratio of the budget and of one message.

VmHWM is reset (``/proc/PID/clear_refs``) before each part.

    .venv/bin/python bench/bench_data_budget.py [--clients 16] [--mib 34] [--budget-mib 128]
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from memprobe import (  # noqa: E402
    MiB,
    big_message,
    peak,
    reset_peak,
    rss,
    send_concurrently,
    text_message,
)
from smtp_helpers import DaemonProcess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--mib", type=float, default=34)
    parser.add_argument("--budget-mib", type=int, default=128)
    args = parser.parse_args()
    size = int(args.mib * MiB)
    budget = args.budget_mib * MiB
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        config = workdir / "emaild.toml"
        config.write_text(f"[limits]\ndata_bytes_in_flight = {budget}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILD_")}
        env.update(
            {
                "EMAILD_STATE_DIR": str(workdir / "state"),
                "HOME": work,
                "EMAILD_CONFIG": str(config),
                "EMAILD_SMTP_RELAY": "127.0.0.1:9",
            }
        )
        daemon = DaemonProcess(env, workdir)
        daemon.start()
        try:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=60) as c:
                c.sendmail("a@customer.test", ["support@example.com"], big_message(0, MiB, 1))
                # The first HTML body imports the HTML-to-text renderer (lxml), once.
                html = text_message(0, 64 * 1024, "html")
                c.sendmail("a@customer.test", ["support@example.com"], html)
            idle = rss(pid)
            reset_peak(pid)
            one = big_message(0, size)
            started = time.monotonic()
            single = send_concurrently(daemon.smtp_port, {0: one})
            one_s = time.monotonic() - started
            one_cost = peak(pid) - idle
            texts: dict[str, tuple[int, int, float, int]] = {}
            for kind in ("qp", "html"):
                raw = text_message(0, size, kind)
                idle_text = rss(pid)
                reset_peak(pid)
                started = time.monotonic()
                code = send_concurrently(daemon.smtp_port, {0: raw})[0][0]
                took = time.monotonic() - started
                texts[kind] = (len(raw), code, took, peak(pid) - idle_text)

            sent = {n: big_message(n, size, seed=2) for n in range(args.clients)}
            idle_many = rss(pid)
            reset_peak(pid)
            started = time.monotonic()
            codes = send_concurrently(daemon.smtp_port, sent, timeout=600)
            many_s = time.monotonic() - started
            grown = peak(pid) - idle_many
        finally:
            daemon.stop()
        from emaild.app import App
        from emaild.config import load_config

        app = App.open(load_config(config, env))
        exact = 0
        try:
            import hashlib

            for n, (code, _) in codes.items():
                if code == 250:
                    digest = hashlib.sha256(sent[n]).hexdigest()
                    exact += app.blobs.exists(digest) and app.blobs.read(digest) == sent[n]
        finally:
            app.close()
    stored = sum(1 for c, _ in codes.values() if c == 250)
    told = sum(1 for c, _ in codes.values() if c == 451)
    print(f"one message of {len(one) / MiB:.1f} MiB: reply {single[0][0]} in {one_s:.1f} s")
    print(
        f"  VmHWM - idle RSS ({idle / MiB:.0f} MiB) = {one_cost / MiB:.1f} MiB: "
        f"{one_cost / len(one):.2f}x the message"
    )
    for kind, (length, code, took, cost) in texts.items():
        print(f"one {kind} text message of {length / MiB:.1f} MiB: reply {code} in {took:.1f} s")
        print(f"  VmHWM - idle RSS = {cost / MiB:.1f} MiB: {cost / length:.2f}x the message")
    print(
        f"{args.clients} clients x {args.mib} MiB at once, budget {args.budget_mib} MiB, "
        f"{many_s:.1f} s"
    )
    print(
        f"  250: {stored} (byte-exact {exact}), 451: {told}, other: {args.clients - stored - told}"
    )
    print(
        f"  VmHWM - idle RSS ({idle_many / MiB:.0f} MiB) = {grown / MiB:.0f} MiB: "
        f"{grown / budget:.2f}x the budget, {grown / size:.2f}x one message"
    )


if __name__ == "__main__":
    main()
