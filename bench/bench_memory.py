"""Peak memory of one in-flight 35 MB message (a 25 MB base64 attachment).

Each measurement runs in a fresh subprocess: imports and a warm-up message
first, then the peak resident set size is reset (/proc/self/clear_refs) and
the message is read from disk and ingested. The figure is (peak RSS - RSS
before reading the message) / wire size. For reference the same message is
parsed whole with mail-parser, which is what emaild avoids (`pip install -e ".[bench]"`).

    .venv/bin/python bench/bench_memory.py
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ATTACHMENT_BYTES = 25 * 1024 * 1024


def build_message(path: Path) -> int:
    payload = os.urandom(ATTACHMENT_BYTES)
    encoded = base64.encodebytes(payload)  # 76-char lines, as mail clients write
    head = (
        b"From: Big Sender <big@customer.test>\r\nTo: support@example.com\r\n"
        b"Subject: the logs you asked for\r\nMessage-ID: <big-1@customer.test>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nLogs attached.\r\n"
        b'--b1\r\nContent-Type: application/octet-stream; name="logs.tar"\r\n'
        b'Content-Disposition: attachment; filename="logs.tar"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    with path.open("wb") as fh:
        fh.write(head)
        fh.write(encoded.replace(b"\n", b"\r\n"))
        fh.write(b"--b1--\r\n")
    return path.stat().st_size


CHILD = r"""
import json, sys, os
from pathlib import Path

def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)

mode, path, state = sys.argv[1], sys.argv[2], sys.argv[3]
small = b"From: a@b.test\r\nTo: support@example.com\r\nSubject: warm\r\n\r\nhi\r\n"
if mode == "emaild":
    from emaild.app import App
    from emaild.config import load_config
    from emaild.pipeline import Envelope
    config = load_config(None, {"EMAILD_STATE_DIR": state, "HOME": state})
    app = App.open(config)
    app.pipeline.ingest(small, Envelope(channel="bench"))
else:
    import mailparser
    mailparser.parse_from_bytes(small)
base = rss("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
raw = Path(path).read_bytes()
if mode == "emaild":
    result = app.pipeline.ingest(raw, Envelope(channel="bench"))
    assert result.outcome.value == "new_case", result
else:
    mail = mailparser.parse_from_bytes(raw)
    assert mail.attachments
peak = rss("VmHWM")
print(json.dumps({"base": base, "peak": peak}))
"""


def measure(mode: str, path: Path, state: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(state)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return int(data["peak"]) - int(data["base"])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.eml"
        wire = build_message(path)
        emaild_cost = measure("emaild", path, Path(tmp) / "state")
        parser_cost = measure("mailparser", path, Path(tmp) / "state2")
    mib = 1024 * 1024
    print(f"message on the wire:        {wire / mib:8.1f} MiB (attachment 25.0 MiB)")
    print(
        f"emaild ingest peak cost:    {emaild_cost / mib:8.1f} MiB = {emaild_cost / wire:.2f}x wire"
        "  (target <= 3x)"
    )
    print(
        f"mail-parser whole message:  {parser_cost / mib:8.1f} MiB = {parser_cost / wire:.2f}x wire"
    )
    print(f"ratio emaild / mail-parser: {emaild_cost / parser_cost:.2f}")


if __name__ == "__main__":
    main()
