"""Issue 18 §4: DATA is spooled to disk as it arrives, with aiosmtpd's limits and meaning.

The block reader (``DotReader``) against a line-by-line reference over every
way of cutting the stream into blocks; on a real socket, content sent in
awkward pieces (a dot-stuffed line cut between CR, LF and the dot, a
pipelined QUIT after the final dot) is stored exactly, over-long lines and
oversize mail are refused after the dot with the session going on, and no
spool file is left behind. Spool files a killed daemon left are removed when
it starts again; a file another process is writing is kept.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from smtp_helpers import DaemonProcess, running_listener
from sqlalchemy import select

from emaild.app import App
from emaild.channels.smtp.data import TOO_LONG, TOO_MUCH, DotReader
from emaild.store.blobs import FileBlobStore
from emaild.store.models import Message


def reference(stream: bytes) -> tuple[bytes, bytes]:
    """aiosmtpd's reading: CRLF lines up to a lone ``.``; leading dots removed. (content, rest)"""
    content, pos = [], 0
    while True:
        end = stream.index(b"\r\n", pos) + 2
        line = stream[pos:end]
        pos = end
        if line == b".\r\n":
            return b"".join(content), stream[pos:]
        content.append(line[1:] if line.startswith(b".") else line)


def read_in_blocks(stream: bytes, cuts: list[int], dots: DotReader) -> tuple[bytes, bytes]:
    """Feed ``stream`` as ``receive`` would: blocks end at ``.\\r\\n`` or at a cut."""
    out, pos = [], 0
    # Like the stream reader's limit, a cut never falls inside a ".\r\n".
    inside = {m + k for m in range(len(stream)) if stream.startswith(b".\r\n", m) for k in (1, 2)}
    cuts = sorted(set(cuts) - inside)
    while True:
        sep = stream.find(b".\r\n", pos)
        assert sep >= 0, "the end of the transfer was missed"
        nxt = [c for c in cuts if pos < c < sep + 3]
        end = nxt[0] if nxt else sep + 3
        block = stream[pos:end]
        pos = end
        if block.endswith(b".\r\n") and dots.ends(block):
            out.append(dots.feed(block[:-3]))
            return b"".join(out), stream[pos:]
        out.append(dots.feed(block))


STREAM = (
    b".leading dot on the first line\r\n"
    b"..two dots\r\n"
    b"a line. with a dot-CRLF inside.\r\n"
    b"bare\rcr and bare\nlf.\r\n"
    b"...\r\n"
    b"\r\n"
    b". \r\n"
    b"end.\r\n"
    b".\r\nQUIT\r\n"
)


def test_dot_reader_matches_line_by_line_reading_however_the_stream_is_cut() -> None:
    expected = reference(STREAM)
    assert expected[1] == b"QUIT\r\n"
    # Every single cut, every pair of cuts: CR | LF | dot boundaries included.
    for a in range(1, len(STREAM)):
        for b in range(a, len(STREAM), 7):
            got = read_in_blocks(STREAM, [a, b], DotReader(None, 1000))
            assert got == expected, (a, b)


def test_an_empty_message_and_a_random_stream_in_random_blocks() -> None:
    assert read_in_blocks(b".\r\n", [], DotReader(None, 1000)) == (b"", b"")
    rng = random.Random(18)
    alphabet = [b".", b"\r", b"\n", b"\r\n", b"a", b".\r\n", b"\r\n.", b"x."]
    for _ in range(300):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        stream = body + b"\r\n.\r\n"
        cuts = [rng.randint(1, len(stream)) for _ in range(rng.randint(0, 5))]
        assert read_in_blocks(stream, cuts, DotReader(None, 10_000)) == reference(stream)


def test_dot_reader_limits_count_like_aiosmtpd() -> None:
    # A line of exactly the limit (its CRLF included) passes; one byte more does not.
    ok = b"x" * 98 + b"\r\n"
    dots = DotReader(None, 100)
    read_in_blocks(ok + b".\r\n", [50, 99], dots)
    assert dots.refusal == ""
    dots = DotReader(None, 100)
    read_in_blocks(b"x" + ok + b".\r\n", [50, 100], dots)
    assert dots.refusal == TOO_LONG
    # The size limit counts the dot-stuffed bytes, not the final dot.
    dots = DotReader(10, 1000)
    assert read_in_blocks(b"..4567\r\n.\r\n", [], dots) == (b".4567\r\n", b"")
    assert dots.refusal == "" and dots.size == 8
    dots = DotReader(7, 1000)
    assert read_in_blocks(b"..4567\r\n.\r\n", [], dots) == (b"", b"")
    assert dots.refusal == TOO_MUCH


class Client:
    """A raw SMTP connection; replies are read line by line (pipelined ones kept apart)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, 10)
        self.sock.settimeout(20)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def reply(self) -> str:
        while True:
            line = self.file.readline().decode()
            assert line, "connection closed"
            if line[3:4] != "-":
                return line.strip()

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _transaction(client: Client) -> None:
    for line in (b"MAIL FROM:<a@customer.test>", b"RCPT TO:<support@example.com>", b"DATA"):
        client.send(line + b"\r\n")
        assert client.reply()[:3] in ("250", "354"), line


def _spools(app: App) -> list[str]:
    tmp = app.blobs.root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def test_data_sent_in_awkward_pieces_is_stored_exactly_and_limits_keep_the_session(
    make_app: Any,
) -> None:
    app: App = make_app("[smtp]\nmax_line_length = 1000\n[limits]\nmax_message_bytes = 300000\n")
    body = b"".join(b"..line %d of a message\r\n" % n for n in range(2000))
    message = (
        b"From: a@customer.test\r\nTo: support@example.com\r\nSubject: dots\r\n"
        b"Message-ID: <spool-1@customer.test>\r\n\r\n" + body
    )
    wire = message.replace(b"\r\n.", b"\r\n..") + b".\r\nQUIT\r\n"
    with running_listener(app) as running:
        sock = Client(running.address)
        assert sock.reply().startswith("220")
        sock.send(b"EHLO client.test\r\n")
        assert sock.reply().startswith("250")
        # Over-long line: 500 after the final dot; the session goes on.
        _transaction(sock)
        sock.send(b"Subject: x\r\n\r\n" + b"y" * 1500 + b"\r\n.\r\n")
        assert sock.reply() == "500 5.5.2 Line too long"
        # Too much: 552 after the final dot, the body thrown away as it arrived.
        _transaction(sock)
        sock.send(b"Subject: x\r\n\r\n" + (b"z" * 98 + b"\r\n") * 3500 + b".\r\n")
        assert sock.reply().startswith("552 5.3.4")
        assert _spools(app) == []
        # The real message, cut at CR | LF | dot, with QUIT pipelined after the dot.
        _transaction(sock)
        pos = 0
        for at in [i + k for i in range(0, len(wire), 4099) for k in (0, 1, 2)][1:]:
            sock.send(wire[pos:at])
            pos = at
            time.sleep(0.001)
        sock.send(wire[pos:])
        assert sock.reply().startswith("250 2.0.0")
        assert sock.reply().startswith("221")
        sock.close()
    with app.db.session() as s:
        row = s.scalars(select(Message).where(Message.message_id == "<spool-1@customer.test>"))
        assert app.blobs.read(row.one().raw_sha256) == message
    assert _spools(app) == []  # published as the blob, nothing left in tmp/


def test_remove_stale_temp_keeps_what_a_live_writer_holds(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    live = store.spool()
    live.write(b"being received")
    (tmp_path / "blobs" / "tmp" / "spool-left-by-a-crash").write_bytes(b"half a message")
    (tmp_path / "blobs" / "tmp" / "blob-left-by-a-crash").write_bytes(b"half an attachment")
    (tmp_path / "blobs" / "tmp" / "unrelated").write_bytes(b"not ours")
    assert store.remove_stale_temp() == 2
    assert sorted(p.name for p in (tmp_path / "blobs" / "tmp").iterdir()) == sorted(
        [Path(live.path).name, "unrelated"]
    )
    # The live file is locked while open: nobody else can take it.
    fd = os.open(live.path, os.O_RDONLY)
    with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
    live.discard()
    assert not Path(live.path).exists()


def test_spool_left_by_a_killed_daemon_is_removed_when_it_starts_again(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILD_")}
    env.update(
        {
            "EMAILD_STATE_DIR": str(tmp_path / "state"),
            "HOME": str(tmp_path),
            "EMAILD_SMTP_RELAY": "127.0.0.1:9",
        }
    )
    tmp = tmp_path / "state" / "blobs" / "tmp"
    daemon = DaemonProcess(env, tmp_path)
    try:
        daemon.start()
        sock = Client(("127.0.0.1", daemon.smtp_port))
        assert sock.reply().startswith("220")
        sock.send(b"EHLO client.test\r\n")
        assert sock.reply().startswith("250")
        _transaction(sock)
        sock.send(b"Subject: half\r\n\r\n" + b"half a message\r\n" * 1000)
        deadline = time.monotonic() + 10
        while not (tmp.is_dir() and any(p.stat().st_size for p in tmp.glob("spool-*"))):
            assert time.monotonic() < deadline, "no spool file appeared"
            time.sleep(0.05)
        daemon.signal(signal.SIGKILL)
        daemon.wait(10)
        sock.close()
        assert len(list(tmp.glob("spool-*"))) == 1
        daemon.stop()
        daemon = DaemonProcess(env, tmp_path)
        daemon.start()
        assert list(tmp.glob("spool-*")) == []
        deadline = time.monotonic() + 10
        while not daemon.events("smtp.spool_cleaned"):
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        assert daemon.events("smtp.spool_cleaned")[0]["removed"] == 1
    finally:
        daemon.stop()
