"""``emaild run``: the daemon as a real subprocess (signals, reload, drain) and in-process
(components, scheduler), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from smtp_helpers import DaemonProcess, daemon_process
from sqlalchemy import func, select

from emaild.app import App
from emaild.channels.smtp import replies
from emaild.daemon import Daemon
from emaild.store.database import Database
from emaild.store.models import Message

SENDER = "alice@customer.test"


def message(n: int | str) -> bytes:
    return (
        f"From: Alice <{SENDER}>\r\nTo: support@example.com\r\nSubject: Daemon {n}\r\n"
        f"Message-ID: <daemon-{n}@customer.test>\r\n\r\nHello {n}.\r\n"
    ).encode()


def stored_ids(database_url: str) -> list[str]:
    db = Database(database_url)
    try:
        with db.session() as s:
            return list(s.scalars(select(Message.message_id).order_by(Message.id)))
    finally:
        db.dispose()


class RawSmtp:
    """A line-level SMTP client, for stopping in the middle of DATA."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.reply()

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            if not line:
                return "\n".join(lines) or "<closed>"
            lines.append(line)
            if line[3:4] != "-":
                return "\n".join(lines)

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def start_data(self) -> None:
        assert self.command("EHLO client.test").startswith("250")
        assert self.command(f"MAIL FROM:<{SENDER}>").startswith("250")
        assert self.command("RCPT TO:<support@example.com>") == replies.RCPT_OK
        assert self.command("DATA").startswith("354")

    def finish_data(self, rest: bytes) -> str:
        try:
            self.sock.sendall(rest + b".\r\n")
            return self.reply()
        except OSError:
            return "<closed>"

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_run_serves_smtp_and_lmtp_and_exits_0_on_sigterm(
    cli_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    with daemon_process(cli_env, tmp_path) as daemon:
        assert "smtp 127.0.0.1" in daemon.notifications[-1]["STATUS"]
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as client:
            assert client.sendmail(SENDER, ["support@example.com"], message(1)) == {}
        with smtplib.LMTP("127.0.0.1", daemon.lmtp_port) as client:
            assert client.sendmail(SENDER, ["support@example.com"], message(2)) == {}
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_for("STOPPING")["STOPPING"] == "1"
        assert daemon.wait() == 0
        [stopped] = daemon.events("daemon.stopped")
        assert "2 stored" in stopped["status"]
    assert stored_ids(database_url) == ["<daemon-1@customer.test>", "<daemon-2@customer.test>"]


def test_sigterm_during_data_completes_the_message(
    cli_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    with daemon_process(cli_env, tmp_path) as daemon:
        client = RawSmtp(daemon.smtp_port)
        client.start_data()
        head, _, body = message(3).partition(b"\r\n\r\n")
        client.sock.sendall(head + b"\r\n\r\n")
        daemon.signal(signal.SIGTERM)
        daemon.wait_for("STOPPING")
        # Draining: no new connections, but the transaction in flight goes on.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", daemon.smtp_port), timeout=5).close()
        reply = client.finish_data(body)
        # After its reply the session is told the service is going away.
        goodbye = client.reply()
        client.close()
        assert daemon.wait() == 0
    # Within the drain deadline the message completes: stored, then 250.
    assert reply.startswith("250 2.0.0 Ok: new case ")
    assert goodbye == replies.SHUTTING_DOWN
    assert stored_ids(database_url) == ["<daemon-3@customer.test>"]


def test_shutdown_deadline_cuts_a_stalled_transaction_without_250(
    cli_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    config = tmp_path / "emaild.toml"
    config.write_text("[daemon]\nshutdown_deadline_seconds = 1.0\n")
    with daemon_process(cli_env, tmp_path, args=["--config", str(config)]) as daemon:
        idle = RawSmtp(daemon.smtp_port)
        client = RawSmtp(daemon.smtp_port)
        client.start_data()
        client.sock.sendall(b"Subject: stalled\r\n\r\nhalf a mes")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        # An idle session is told at once; the stalled one at the deadline.
        assert idle.reply() == replies.SHUTTING_DOWN
        assert daemon.wait() == 0
        assert time.monotonic() - started < 10
        reply = client.finish_data(b"sage\r\n")
        assert not reply.startswith("250")
        assert reply in (replies.SHUTTING_DOWN, "<closed>")
        client.close()
        idle.close()
    assert stored_ids(database_url) == []


def test_second_signal_exits_at_once(cli_env: dict[str, str], tmp_path: Path) -> None:
    with daemon_process(cli_env, tmp_path) as daemon:
        client = RawSmtp(daemon.smtp_port)
        client.start_data()  # keeps the 30 s drain busy
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        daemon.wait_for("STOPPING")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 10
        assert daemon.events("daemon.exit_now")
        client.close()


def test_sighup_reloads_addresses_and_keeps_old_config_when_bad(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "emaild.toml"
    config.write_text('[[address]]\naddress = "support@example.com"\n')
    with daemon_process(cli_env, tmp_path, args=["--config", str(config)]) as daemon:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as client:
            client.ehlo()
            client.mail(SENDER)
            assert client.rcpt("sales@example.com")[0] == 550
            # Add an address and reload, with this session still open.
            config.write_text(
                '[[address]]\naddress = "support@example.com"\n'
                '[[address]]\naddress = "sales@example.com"\n'
            )
            daemon.signal(signal.SIGHUP)
            assert daemon.wait_for("RELOADING")["RELOADING"] == "1"
            daemon.wait_for("READY")
            client.rset()
            client.mail(SENDER)
            assert client.rcpt("sales@example.com")[0] == 250
            # A broken file: logged with file:line, the running config stays.
            config.write_text('[[address]]\naddress = "sales@example.com"\nprio = "High"\n')
            daemon.signal(signal.SIGHUP)
            assert "reload failed" in daemon.wait_for("READY")["STATUS"]
            client.rset()
            client.mail(SENDER)
            assert client.rcpt("support@example.com")[0] == 250
            assert client.rcpt("sales@example.com")[0] == 250
            # A certificate that cannot be loaded fails the whole reload too.
            config.write_text(
                '[[address]]\naddress = "support@example.com"\n'
                f'[smtp]\ntls_cert = "{tmp_path}/missing.pem"\ntls_key = "{tmp_path}/k.pem"\n'
            )
            daemon.signal(signal.SIGHUP)
            assert "reload failed" in daemon.wait_for("READY")["STATUS"]
            client.rset()
            client.mail(SENDER)
            assert client.rcpt("sales@example.com")[0] == 250
        first, second = daemon.events("daemon.reload_failed")
        assert first["error"] == f"{config}:3: address[0].prio: unknown key"
        assert second["error"].startswith("smtp.tls_cert: cannot load certificate/key")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0


def test_bad_config_exits_78_and_busy_port_is_reported(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "emaild.toml"
    config.write_text("[smtp]\nlisten = 25\n")
    bad = DaemonProcess(cli_env, tmp_path, args=["--config", str(config)])
    with pytest.raises(AssertionError):
        bad.start(timeout=30)
    assert bad.wait() == 78
    bad.stop()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = DaemonProcess({**cli_env, "EMAILD_SMTP_LISTEN": f"127.0.0.1:{port}"}, tmp_path)
        with pytest.raises(AssertionError):
            busy.start(timeout=30)
        assert busy.wait() == 78
        assert f"smtp.listen: cannot listen on 127.0.0.1:{port}" in busy.log()
        busy.stop()


# --- in-process: the plug-in point for other parts -------------------------------------
class Recorder:
    """A component like the IMAP poller: a scheduler job doing blocking work."""

    name = "recorder"

    def __init__(self, app: App) -> None:
        self.app = app
        self.calls: list[str] = []
        self.ran = threading.Event()
        self.daemon: Daemon | None = None

    async def start(self, daemon: Daemon) -> None:
        assert daemon.smtp is not None and daemon.smtp.listeners  # bound before components
        self.daemon = daemon
        self.calls.append("start")
        daemon.scheduler.add_job(self.tick, "interval", seconds=0.05, id="recorder")

    async def tick(self) -> None:
        assert self.daemon is not None
        thread = await self.daemon.run_sync(lambda: threading.current_thread().name)
        self.calls.append(thread)
        self.ran.set()

    async def stop(self) -> None:
        self.calls.append("stop")


class Broken:
    name = "broken"

    async def start(self, daemon: Daemon) -> None:
        raise RuntimeError("cannot reach the mailbox")

    async def stop(self) -> None:  # pragma: no cover - never started
        raise AssertionError


def test_components_start_after_listeners_and_stop_on_shutdown(make_config: Any) -> None:
    app = App.open(make_config(EMAILD_SMTP_LISTEN="127.0.0.1:0"))
    recorder = Recorder(app)
    daemon = Daemon(app, components=(lambda a: None, lambda a: Broken(), lambda a: recorder))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(daemon.serve())))
    thread.start()
    try:
        assert daemon.ready.wait(30)
        assert recorder.ran.wait(10)
        assert daemon.smtp is not None
        host, port = daemon.smtp.listeners[0].address
        with smtplib.SMTP(host, port) as client:
            assert client.sendmail(SENDER, ["support@example.com"], message(4)) == {}
        assert [c.name for c in daemon.components] == ["recorder"]  # broken one skipped
    finally:
        daemon.request_stop()
        thread.join(30)
        app.close()
    assert result == [0]
    assert recorder.calls[0] == "start" and recorder.calls[-1] == "stop"
    assert any(c.startswith("emaild-worker") for c in recorder.calls[1:-1])
    db = Database(app.config.database_url)
    try:
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(Message)) == 1
    finally:
        db.dispose()


def test_log_level_option_and_journald_priorities(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`emaild run --log-level` overrides logging.level; under journald (stderr is
    $JOURNAL_STREAM) every line carries its syslog priority for `journalctl -p`."""
    import json

    quiet = DaemonProcess(cli_env, tmp_path, run_args=["--log-level", "warning"])
    try:
        quiet.start()
        quiet.signal(signal.SIGTERM)
        assert quiet.wait() == 0
    finally:
        quiet.stop()
    assert "daemon.ready" not in quiet.log()

    journal = DaemonProcess(cli_env, tmp_path)
    journal.log_path.touch()
    st = os.stat(journal.log_path)
    journal.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    try:
        journal.start()
        journal.signal(signal.SIGTERM)
        assert journal.wait() == 0
    finally:
        journal.stop()
    lines = journal.log().splitlines()
    events = []
    for line in lines:
        assert line[:3] in ("<6>", "<4>", "<3>"), line
        events.append((line[:3], json.loads(line[3:])))
    ready = [prio for prio, e in events if e["event"] == "daemon.ready"]
    assert ready == ["<6>"]
    assert all(
        {"<6>": "info", "<4>": "warning", "<3>": "error"}[p] == e["level"] for p, e in events
    )


def test_journald_priority_for_structlog_and_stdlib_lines(tmp_path: Path, monkeypatch: Any) -> None:
    import logging

    import structlog

    from emaild import logs

    path = tmp_path / "journal"
    root = logging.getLogger()
    saved = (structlog.get_config(), list(root.handlers), root.level)
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        try:
            root.handlers[:] = []
            logs.configure("info", "json", stream=stream)
            structlog.get_logger("t").debug("hidden")
            structlog.get_logger("t").info("routine")
            structlog.get_logger("t").error("trouble")
            logging.getLogger("lib").warning("library says")
        finally:
            structlog.configure(**saved[0])
            root.handlers[:] = saved[1]
            root.setLevel(saved[2])
    lines = path.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<6>", "<3>", "<4>"]
    assert '"event": "routine"' in lines[0] and lines[2].endswith("lib: library says")
    # Not under journald (another stream): no prefixes.
    assert not logs.under_journald(sys.stderr, {"JOURNAL_STREAM": "1:2"})
