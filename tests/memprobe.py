"""Memory of a running process from /proc, and big messages to spend it on (issue 18 §4).

Shared by tests/test_smtp_memory.py and bench/bench_data_budget.py:

    idle = rss(pid)
    reset_peak(pid)                    # VmHWM := VmRSS (Linux, our own child)
    ... send mail ...
    grown = peak(pid) - idle
"""

from __future__ import annotations

import base64
import random
import smtplib
import threading
from pathlib import Path

MiB = 1024 * 1024


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss(pid: int) -> int:
    """Resident set size now, in bytes."""
    return _status(pid, "VmRSS")


def peak(pid: int) -> int:
    """Peak resident set size (VmHWM) since start or the last ``reset_peak``."""
    return _status(pid, "VmHWM")


def reset_peak(pid: int) -> None:
    """Set the process's VmHWM back to its current RSS (proc(5): clear_refs ``5``)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def big_message(n: int, size: int, seed: int = 0) -> bytes:
    """About ``size`` bytes: a short text and one base64 attachment (the usual big mail).

    Each ``n`` gets its own Message-ID and attachment bytes (fixed by ``seed``).
    """
    head = (
        f"From: big{n}@customer.test\r\nTo: support@example.com\r\nSubject: big {n}\r\n"
        f"Message-ID: <big-{seed}-{n}@customer.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
        "Content-Type: text/plain\r\n\r\nThe logs.\r\n--zz\r\n"
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="logs{n}.bin"\r\n\r\n'
    ).encode()
    # base64 of k bytes is 4k/3 characters plus a CRLF per 76 of them.
    payload_bytes = (size - len(head) - 200) * 57 // 78
    data = random.Random(seed * 1_000_003 + n).randbytes(payload_bytes)
    payload = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return head + payload + b"--zz--\r\n"


def send_concurrently(
    port: int, messages: dict[int, bytes], timeout: float = 120
) -> dict[int, tuple[int, bytes]]:
    """Send each message from its own SMTP client at once (SIZE declared); n -> (code, reply)."""
    results: dict[int, tuple[int, bytes]] = {}

    def send(n: int) -> None:
        raw = messages[n]
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
                client.sendmail(
                    "a@customer.test",
                    ["support@example.com"],
                    raw,
                    mail_options=[f"SIZE={len(raw)}"],
                )
            results[n] = (250, b"")
        except smtplib.SMTPResponseException as exc:
            results[n] = (exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:
            results[n] = (0, repr(exc).encode())

    threads = [threading.Thread(target=send, args=(n,)) for n in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results
