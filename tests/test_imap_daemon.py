"""The IMAP poller inside ``emaild run`` (a real subprocess) against a real Dovecot:
IDLE delivery time, SMTP staying responsive during a catch-up, clean shutdown."""

from __future__ import annotations

import signal
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest
from dovecot import Dovecot, ImapUser
from smtp_helpers import DaemonProcess, daemon_process
from sqlalchemy import func, select

from emaild.store.database import Database
from emaild.store.models import Message

pytestmark = pytest.mark.dovecot


def mail(n: int | str, size: int = 0) -> bytes:
    body = ("x" * 70 + "\r\n") * (size // 72)
    return (
        f"From: Bob <bob@customer.test>\r\nTo: support@example.com\r\nSubject: Daemon IMAP {n}\r\n"
        f"Message-ID: <daemon-imap-{n}@customer.test>\r\n\r\nHello {n}.\r\n{body}"
    ).encode()


def config_for(dovecot: Dovecot, user: ImapUser, tmp_path: Path) -> Path:
    secret = tmp_path / "imap.pass"
    secret.write_text(user.password, encoding="utf-8")
    path = tmp_path / "emaild.toml"
    path.write_text(
        dovecot.mailbox_toml(
            user, password_file="imap.pass", poll_interval_seconds=300.0, idle=True
        ),
        encoding="utf-8",
    )
    return path


def stored(database_url: str, subject_like: str = "Daemon IMAP%") -> int:
    db = Database(database_url)
    try:
        with db.session() as session:
            query = select(func.count()).select_from(Message)
            return int(session.scalar(query.where(Message.subject.like(subject_like))) or 0)
    finally:
        db.dispose()


def wait_for_event(daemon: DaemonProcess, name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = daemon.events(name)
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {name} event; log:\n{daemon.log()[-4000:]}")


def test_idle_turns_appended_mail_into_a_case_within_two_seconds(
    dovecot: Dovecot,
    cli_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
    record_property: Any,
) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [mail("old")])
    env = dict(cli_env, EMAILD_CONFIG=str(config_for(dovecot, user, tmp_path)))
    with daemon_process(env, tmp_path) as daemon:
        wait_for_event(daemon, "imap.idle_started")
        deadline = time.monotonic() + 30
        while stored(database_url) < 1:  # the start-up poll takes the backlog
            assert time.monotonic() < deadline, daemon.log()[-4000:]
            time.sleep(0.05)

        latencies = []
        for n in range(3):
            started = time.monotonic()
            dovecot.append(user, [mail(f"idle-{n}")])
            while stored(database_url) < 2 + n:
                assert time.monotonic() - started < 2.0, daemon.log()[-4000:]
                time.sleep(0.01)
            latencies.append(time.monotonic() - started)
        record_property("imap_idle_latency_seconds", latencies)
        print(f"IDLE delivery latency: {', '.join(f'{s:.3f} s' for s in latencies)}")
        assert max(latencies) < 2.0

        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["SEEN"])) == 4


def test_smtp_answers_while_imap_catches_up(
    dovecot: Dovecot, cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    backlog = 600
    user = dovecot.new_user()
    dovecot.append(user, [mail(n, size=2048) for n in range(backlog)])
    env = dict(cli_env, EMAILD_CONFIG=str(config_for(dovecot, user, tmp_path)))
    with daemon_process(env, tmp_path) as daemon:
        wait_for_event(daemon, "imap.connected")
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
            client.sendmail(
                "carol@customer.test",
                ["support@example.com"],
                b"From: carol@customer.test\r\nTo: support@example.com\r\n"
                b"Subject: via SMTP\r\nMessage-ID: <smtp-during-imap@customer.test>\r\n\r\nHi\r\n",
            )
        smtp_seconds = time.monotonic() - started
        during = stored(database_url)
        # The SMTP message went through while the IMAP catch-up was still running.
        assert during < backlog, "catch-up finished before SMTP was tried: test proves nothing"
        assert smtp_seconds < 3.0
        assert stored(database_url, "via SMTP") == 1
        deadline = time.monotonic() + 120
        while stored(database_url) < backlog:
            assert time.monotonic() < deadline, daemon.log()[-4000:]
            time.sleep(0.2)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
