"""16 concurrent 34 MiB messages against ``emaild run``: peak memory vs the DATA budget.

Starts the daemon as a subprocess (``tests/smtp_helpers.DaemonProcess``, SQLite
in a throwaway state directory) with ``limits.data_bytes_in_flight`` (default
128 MiB), sends CLIENTS messages of SIZE bytes at once with smtplib (each
declares its SIZE), and prints how many got 250 and 451 4.3.2, whether every
250 is stored byte-exact, and the daemon's VmHWM above its idle RSS as a
ratio of the budget and of one message (issue 18 §4).

    .venv/bin/python bench/bench_data_budget.py [--clients 16] [--mib 34] [--budget-mib 128]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import smtplib
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from smtp_helpers import DaemonProcess  # noqa: E402

MiB = 1024 * 1024


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def message(n: int, size: int) -> bytes:
    """A short text and one base64 attachment (the usual shape of a big message)."""
    head = (
        f"From: big{n}@customer.test\r\nTo: support@example.com\r\nSubject: big {n}\r\n"
        f"Message-ID: <budget-bench-{n}@customer.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
        "Content-Type: text/plain\r\n\r\nThe logs.\r\n--zz\r\n"
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="logs{n}.bin"\r\n\r\n'
    ).encode()
    payload = base64.encodebytes(os.urandom((size - len(head)) * 3 // 4 - 100))
    return head + payload.replace(b"\n", b"\r\n") + b"--zz--\r\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--mib", type=float, default=34)
    parser.add_argument("--budget-mib", type=int, default=128)
    args = parser.parse_args()
    size = int(args.mib * MiB)
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        config = workdir / "emaild.toml"
        config.write_text(f"[limits]\ndata_bytes_in_flight = {args.budget_mib * MiB}\n")
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
            idle = vm(pid, "VmRSS")
            codes: dict[int, int] = {}
            sent = {n: message(n, size) for n in range(args.clients)}

            def send(n: int) -> None:
                try:
                    with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=600) as c:
                        c.sendmail(
                            "a@customer.test",
                            ["support@example.com"],
                            sent[n],
                            mail_options=[f"SIZE={len(sent[n])}"],
                        )
                    codes[n] = 250
                except smtplib.SMTPResponseException as exc:
                    codes[n] = exc.smtp_code

            threads = [threading.Thread(target=send, args=(n,)) for n in sent]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            peak = vm(pid, "VmHWM")
        finally:
            daemon.stop()
        from emaild.app import App
        from emaild.config import load_config

        app = App.open(load_config(config, env))
        exact = 0
        try:
            for n, code in codes.items():
                if code == 250:
                    digest = hashlib.sha256(sent[n]).hexdigest()
                    exact += app.blobs.read(digest) == sent[n]
        finally:
            app.close()
    stored = sum(1 for c in codes.values() if c == 250)
    told = sum(1 for c in codes.values() if c == 451)
    grown = peak - idle
    print(f"{args.clients} clients x {args.mib} MiB, budget {args.budget_mib} MiB")
    print(
        f"  250: {stored} (byte-exact {exact}), 451: {told}, other: {args.clients - stored - told}"
    )
    print(
        f"  VmHWM - idle RSS = {grown / MiB:.0f} MiB: {grown / (args.budget_mib * MiB):.2f}x "
        f"the budget, {grown / size:.2f}x one message"
    )


if __name__ == "__main__":
    main()
