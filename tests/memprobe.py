"""Memory of a running process from /proc, and big messages to spend it on (issue 18 §4).

Shared by tests/test_smtp_memory.py and bench/bench_data_budget.py:

    idle = rss(pid)
    reset_peak(pid)                    # VmHWM := VmRSS (Linux, our own child)
    ... send mail ...
    grown = peak(pid) - idle
"""

from __future__ import annotations

import base64
import quopri
import random
import smtplib
import socket
import threading
from collections.abc import Sequence
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
    head = big_head(n, seed)
    return head + attachment(size - len(head), seed * 1_000_003 + n)


def big_head(n: int, seed: int = 0) -> bytes:
    """The header block and first parts of ``big_message`` up to the attachment's body."""
    return (
        f"From: big{n}@customer.test\r\nTo: support@example.com\r\nSubject: big {n}\r\n"
        f"Message-ID: <big-{seed}-{n}@customer.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
        "Content-Type: text/plain\r\n\r\nThe logs.\r\n--zz\r\n"
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="logs{n}.bin"\r\n\r\n'
    ).encode()


def attachment(size: int, seed: int) -> bytes:
    """About ``size`` bytes of base64 (76 characters and CRLF a line) and the closing delimiter."""
    # base64 of k bytes is 4k/3 characters plus a CRLF per 76 of them.
    data = random.Random(seed).randbytes((size - 200) * 57 // 78)
    return base64.encodebytes(data).replace(b"\n", b"\r\n") + b"--zz--\r\n"


def text_message(n: int, size: int, kind: str = "qp") -> bytes:
    """About ``size`` bytes whose bulk is a text body: ``qp`` (text/plain,
    quoted-printable UTF-8) or ``html`` (text/html, 8bit UTF-8), no attachment."""
    ctype, cte = ("text/html", "8bit") if kind == "html" else ("text/plain", "quoted-printable")
    head = (
        f"From: text{n}@customer.test\r\nTo: support@example.com\r\nSubject: text {n}\r\n"
        f"Message-ID: <text-{kind}-{n}@customer.test>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {ctype}; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    ).encode()
    lines = [f"{n} {i}: Grüße aus Köln, ça va, 日本語のテキスト, naïve café" for i in range(1000)]
    if kind == "html":
        block = "".join(f"<p>{line}</p>\r\n" for line in lines).encode()
    else:
        block = quopri.encodestring("\n".join(lines).encode() + b"\n").replace(b"\n", b"\r\n")
    body = block * ((size - len(head)) // len(block) + 1)
    return head + body[: body.rfind(b"\r\n", 0, size - len(head)) + 2]


def send_raw(port: int, pieces: Sequence[bytes], timeout: float = 120) -> tuple[int, str]:
    """One SMTP transaction sending ``b"".join(pieces)`` as is (no line may start with a dot).

    Without smtplib's copies and dot-stuffing: many concurrent senders of big
    messages cost the test process little. Returns the reply to DATA.
    """
    size = sum(len(p) for p in pieces)
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        replies = sock.makefile("rb")

        def reply() -> tuple[int, str]:
            while True:
                line = replies.readline().decode("ascii", "replace")
                if not line:
                    return 0, "<closed>"
                if line[3:4] != "-":
                    return int(line[:3]), line.strip()

        code, text = reply()
        for command in (
            b"EHLO client.test",
            b"MAIL FROM:<a@customer.test> SIZE=%d" % size,
            b"RCPT TO:<support@example.com>",
            b"DATA",
        ):
            if code >= 400:
                return code, text
            sock.sendall(command + b"\r\n")
            code, text = reply()
        if code != 354:
            return code, text
        for piece in pieces:
            sock.sendall(piece)
        sock.sendall(b".\r\n")
        code, text = reply()
        sock.sendall(b"QUIT\r\n")
        return code, text


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
