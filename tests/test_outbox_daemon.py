"""``emaild run`` delivers auto-responses by itself, survives a relay outage, and never
re-sends after a restart (the daemon as a real subprocess, the relay a real aiosmtpd)."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from smtp_helpers import daemon_process


def customer_mail(n: int) -> bytes:
    return (
        f"From: Customer {n} <customer{n}@customer.test>\r\nTo: support@example.com\r\n"
        f"Subject: Question {n}\r\nMessage-ID: <question-{n}@customer.test>\r\n\r\n"
        f"Question number {n}.\r\n"
    ).encode()


def send(port: int, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(f"customer{n}@customer.test", ["support@example.com"], customer_mail(n))


def outbox_list(env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "emaild", "outbox", "list", "--json"],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def stop(daemon: Any) -> None:
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log()


def test_daemon_delivers_retries_across_an_outage_and_never_resends(
    cli_env: dict[str, str], tmp_path: Path, relay_sink: Any, database_url: str
) -> None:
    config = tmp_path / "emaild.toml"
    config.write_text(
        '[relay]\nstarttls = "off"\nflush_interval_seconds = 0.2\nretry_base_seconds = 0.5\n'
    )
    env = dict(cli_env, **relay_sink.relay_env, EMAILD_CONFIG=str(config))

    with daemon_process(env, tmp_path) as daemon:
        send(daemon.smtp_port, 1)
        [got] = relay_sink.wait_for(1, timeout=30)
        assert got.rcpt_tos == ("customer1@customer.test",)
        assert got.message()["Auto-Submitted"] == "auto-replied"

        relay_sink.stop()  # the relay goes down
        send(daemon.smtp_port, 2)
        wait_until(
            lambda: any(
                r["to"] == "customer2@customer.test" and r["attempts"] >= 1
                for r in outbox_list(env)
            )
        )
        stop(daemon)

    rows = {r["to"]: r for r in outbox_list(env)}
    assert rows["customer1@customer.test"]["status"] == "sent"
    assert rows["customer2@customer.test"]["status"] == "queued"
    assert "refused" in rows["customer2@customer.test"]["last_error"].lower()

    relay_sink.start()  # back, same port; the daemon starts again
    with daemon_process(env, tmp_path) as daemon:
        got = relay_sink.wait_for(2, timeout=30)
        assert [m.rcpt_tos for m in got] == [
            ("customer1@customer.test",),
            ("customer2@customer.test",),
        ]
        stop(daemon)

    # A third start: everything is sent, nothing goes out again.
    with daemon_process(env, tmp_path) as daemon:
        time.sleep(1.5)  # several flush intervals
        stop(daemon)
    assert len(relay_sink.received()) == 2
    assert {r["status"] for r in outbox_list(env)} == {"sent"}
