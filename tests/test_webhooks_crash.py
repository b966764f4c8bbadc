"""Crash test: ``emaild run`` is SIGKILLed at random moments (fixed seed) while SMTP
clients send mail and the webhook component delivers, over and over. Afterwards:
every committed event reached the receiver at least once, deduplicating by
``webhook-id`` leaves exactly the committed events (nothing for a change that
was rolled back), each case's events first arrived in order, and every message
the daemon acknowledged with 250 is among them."""

from __future__ import annotations

import random
import smtplib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from smtp_helpers import DaemonProcess
from sqlalchemy import create_engine, text
from webhook_receiver import hook_toml, receiver

CYCLES = 10
SEED = 1313
SENDERS = 3


class Senders:
    """SMTP clients sending numbered mail to one daemon until told to stop."""

    def __init__(self, port: int, counter: list[int], lock: threading.Lock) -> None:
        self.port = port
        self.counter = counter
        self.lock = lock
        self.acknowledged: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(SENDERS)]

    def __enter__(self) -> Senders:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as client:
                    while not self.stop.is_set():
                        with self.lock:
                            self.counter[0] += 1
                            n = self.counter[0]
                        mid = f"<crash-{n}@customer.test>"
                        raw = (
                            f"From: c{n % 7}@customer.test\r\nTo: support@example.com\r\n"
                            f"Subject: Crash {n}\r\nMessage-ID: {mid}\r\n\r\nBody {n}.\r\n"
                        )
                        client.sendmail(f"c{n % 7}@customer.test", ["support@example.com"], raw)
                        self.acknowledged.append(mid)  # 250: committed (contract 1)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the daemon was killed: wait for the stop


def committed_events(database_url: str) -> dict[str, tuple[int, int | None, str]]:
    """uid -> (event id, case id, type) of every webhook event in the database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT uid, id, case_id, kind FROM webhook_events"))
            return {r.uid: (r.id, r.case_id, r.kind) for r in rows}
    finally:
        engine.dispose()


def pending(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM webhook_deliveries WHERE status != 'delivered'"
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


# SQLite, the default store: one run is most of this file's time budget. The claim
# logic PostgreSQL adds (SKIP LOCKED) is covered by tests/test_webhooks.py on both.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sigkill_while_ingesting_and_delivering_loses_and_invents_nothing(
    cli_env: dict[str, str], tmp_path: Path, database_url: str, state_dir: Path
) -> None:
    rng = random.Random(SEED)
    url = (
        database_url
        if not database_url.startswith("sqlite")
        else f"sqlite:///{state_dir}/emaild.db"
    )
    with receiver() as hook:
        # The receiver is slow now and then, so kills also land mid-request.
        hook.plan(lambda _: ("slow", 0.05, 200) if rng.random() < 0.1 else 200)
        config = tmp_path / "emaild.toml"
        config.write_text(
            hook_toml(
                hook.url, hook.secret_file(tmp_path), timeout_seconds=2.0, retry_base_seconds=0.1
            )
            + "[autoresponse]\nenabled = false\n"
        )
        env = dict(cli_env, EMAILD_CONFIG=str(config))
        counter, lock = [0], threading.Lock()
        acknowledged: list[str] = []
        for cycle in range(CYCLES):
            daemon = DaemonProcess(env, tmp_path)
            try:
                daemon.start()
                with Senders(daemon.smtp_port, counter, lock) as senders:
                    time.sleep(rng.uniform(0.2, 1.0))
                    assert daemon.proc is not None
                    daemon.proc.kill()  # SIGKILL: no shutdown, no flush
                    daemon.proc.wait(10)
                acknowledged += senders.acknowledged
            finally:
                daemon.stop()
            assert cycle < 2 or acknowledged, "no mail got through: the test tests nothing"
        # A last, clean run delivers what is left.
        daemon = DaemonProcess(env, tmp_path)
        try:
            daemon.start()
            deadline = time.monotonic() + 30
            while pending(url) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert pending(url) == 0, daemon.log()[-3000:]
        finally:
            daemon.stop()

    events = committed_events(url)
    got: dict[str, list[Any]] = {}
    for request in hook.received:
        assert request.verified, request.error
        got.setdefault(request.id, []).append(request)
    # at least once, and nothing that was never committed (a rolled-back change)
    assert set(got) == set(events), (len(got), len(events))
    # deduplicated by webhook-id: exactly once per event, the same body every time
    for uid, requests in got.items():
        assert len({r.body for r in requests}) == 1, uid
        assert requests[0].json["type"] == events[uid][2]
    # every acknowledged message's message.received arrived
    received_mids = {
        r[0].json["data"]["message"]["message_id"]
        for r in got.values()
        if r[0].json["type"] == "message.received"
    }
    assert set(acknowledged) <= received_mids
    # per case, events first arrived in the order they were committed
    first_seen: dict[int, list[int]] = {}
    for request in sorted((rs[0] for rs in got.values()), key=lambda r: r.at):
        event_id, case_id, _ = events[request.id]
        if case_id is not None:
            first_seen.setdefault(case_id, []).append(event_id)
    assert all(ids == sorted(ids) for ids in first_seen.values())
    redelivered = sum(len(rs) - 1 for rs in got.values())
    print(f"{len(events)} events, {len(acknowledged)} acknowledged, {redelivered} redelivered")
