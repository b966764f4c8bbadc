"""Two ``emaild run`` processes configured with the same IMAP mailbox on one
PostgreSQL, against the tests' own Dovecot: exactly one polls it; SIGKILL that
one in the middle of a catch-up and the other takes the mailbox over within
30 s; mail appended before, during and after the takeover each becomes exactly
one message and one case."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import pg_environment, start_all
from dovecot import Dovecot, ImapUser
from smtp_helpers import DaemonProcess
from sqlalchemy import func, select, text

from emaild.store.database import Database
from emaild.store.models import Case, ImapCursor, Message

pytestmark = [pytest.mark.dovecot, pytest.mark.postgres, pytest.mark.slow]

BEFORE, DURING, AFTER = 10, 150, 10
TAKEOVER_LIMIT_SECONDS = 30.0


def mail(n: int) -> bytes:
    body = ("y" * 70 + "\r\n") * 20
    return (
        f"From: Customer {n} <c{n}@customer.test>\r\nTo: support@example.com\r\n"
        f"Subject: Takeover {n}\r\nMessage-ID: <takeover-{n}@customer.test>\r\n\r\n"
        f"Hello {n}.\r\n{body}"
    ).encode()


@pytest.fixture
def pg_env(postgres: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    with pg_environment(postgres, tmp_path) as env:
        yield env


def counts(url: str) -> tuple[int, int, int]:
    """(messages, distinct Message-IDs, cases) of this test's mail."""
    db = Database(url)
    try:
        with db.session() as session:
            mine = Message.subject.like("Takeover %")
            messages = session.scalar(select(func.count()).where(mine)) or 0
            ids = session.scalar(select(func.count(func.distinct(Message.message_id))).where(mine))
            cases = session.scalar(select(func.count()).where(Case.subject.like("Takeover %")))
            return int(messages), int(ids or 0), int(cases or 0)
    finally:
        db.dispose()


def wait_stored(url: str, n: int, timeout: float, *daemons: DaemonProcess) -> None:
    deadline = time.monotonic() + timeout
    while counts(url)[0] < n:
        if time.monotonic() > deadline:
            logs = "\n".join(d.log()[-3000:] for d in daemons)
            raise AssertionError(f"only {counts(url)} of {n} stored; logs:\n{logs}")
        time.sleep(0.1)


def cursor(url: str) -> tuple[int, int]:
    """(last_uid, acked_uid) of the mailbox's INBOX."""
    db = Database(url)
    try:
        with db.session() as session:
            row = session.get(ImapCursor, ("support", "INBOX"))
            assert row is not None
            return row.last_uid, row.acked_uid
    finally:
        db.dispose()


def holders(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "emaild", "status", "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr.decode()
    return {h["name"]: h for h in json.loads(done.stdout)["holders"]}


def imap_logins(dovecot: Dovecot, user: ImapUser) -> int:
    return dovecot.log.read_text("utf-8", "replace").count(f"Login: user=<{user.name}>")


def imap_activity(daemon: DaemonProcess) -> int:
    """How often this process connected to the mailbox (polls and IDLE)."""
    return len(daemon.events("imap.connected")) + len(daemon.events("imap.idle_started"))


def test_one_process_polls_a_mailbox_and_another_takes_over_when_it_is_killed(
    dovecot: Dovecot, pg_env: dict[str, str], tmp_path: Path, record_property: Any
) -> None:
    user = dovecot.new_user()
    config = tmp_path / "emaild.toml"
    config.write_text(
        dovecot.mailbox_toml(user, poll_interval_seconds=2.0, idle=True), encoding="utf-8"
    )
    env = dict(pg_env, EMAILD_CONFIG=str(config))
    url = env["EMAILD_DATABASE_URL"]
    dovecot.append(user, [mail(n) for n in range(BEFORE)])
    logins_before = imap_logins(dovecot, user)  # the test's own APPEND
    first, second = DaemonProcess(env, tmp_path), DaemonProcess(env, tmp_path)
    try:
        first.start()
        second.start()
        wait_stored(url, BEFORE, 30, first, second)
        time.sleep(6)  # more than one claim round (5 s): the loser has tried again

        # Exactly one process works the mailbox: the holder emaild status names.
        held = holders(env)["imap:support"]
        pids = {first.proc.pid: first, second.proc.pid: second}  # type: ignore[union-attr]
        assert held["pid"] in pids, held
        owner = pids.pop(held["pid"])
        (standby,) = pids.values()
        assert imap_activity(owner) >= 1
        assert imap_activity(standby) == 0, standby.log()[-3000:]
        # Dovecot saw only the owner's connections (poll + IDLE), never the standby's.
        assert imap_logins(dovecot, user) - logins_before <= 2, dovecot.log_tail()

        # Kill the owner in the middle of a catch-up.
        dovecot.append(user, [mail(n) for n in range(BEFORE, BEFORE + DURING)])
        wait_stored(url, BEFORE + 20, 30, owner)
        owner.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        owner.wait(10)
        at_kill = counts(url)[0]
        assert at_kill < BEFORE + DURING, "the catch-up ended before the kill: proves nothing"
        # Stored but not yet flagged on the server: the new owner fetches these again.
        last_uid, acked_uid = cursor(url)

        deadline = killed_at + TAKEOVER_LIMIT_SECONDS
        while not standby.events("imap.mailbox_owned"):
            assert time.monotonic() < deadline, standby.log()[-3000:]
            time.sleep(0.1)
        takeover = time.monotonic() - killed_at
        record_property("imap_takeover_seconds", round(takeover, 2))
        print(f"takeover after SIGKILL: {takeover:.2f} s ({at_kill} of {BEFORE + DURING} stored)")
        assert takeover < TAKEOVER_LIMIT_SECONDS

        dovecot.append(user, [mail(n) for n in range(BEFORE + DURING, BEFORE + DURING + AFTER)])
        total = BEFORE + DURING + AFTER
        wait_stored(url, total, 60, standby)
        time.sleep(2.5)  # one more poll interval: nothing more may turn up
        assert counts(url) == (total, total, total)
        # The re-fetched ones were answered by duplicate suppression, not stored again.
        refetched = sum(int(e.get("duplicates", 0)) for e in standby.events("imap.polled"))
        record_property("imap_takeover_refetched", refetched)
        print(f"re-fetched after the takeover: {refetched} (cursor {last_uid}/{acked_uid})")
        assert refetched == last_uid - acked_uid
        assert holders(env)["imap:support"]["pid"] == standby.proc.pid  # type: ignore[union-attr]

        standby.signal(signal.SIGTERM)
        assert standby.wait(30) == 0
        # A clean stop lets the mailbox go at once: nobody holds it now.
        assert holders(env)["imap:support"]["holder"] is None
    finally:
        first.stop()
        second.stop()


def test_an_owner_that_loses_its_lock_connection_stops_and_the_other_takes_over(
    dovecot: Dovecot, pg_env: dict[str, str], tmp_path: Path
) -> None:
    """The owner is alive but its lock session is killed (pg_terminate_backend): it
    notices at its next heartbeat and stops polling; the other takes the mailbox."""
    user = dovecot.new_user()
    config = tmp_path / "emaild.toml"
    config.write_text(
        dovecot.mailbox_toml(user, poll_interval_seconds=2.0, idle=True), encoding="utf-8"
    )
    env = dict(pg_env, EMAILD_CONFIG=str(config))
    url = env["EMAILD_DATABASE_URL"]
    dovecot.append(user, [mail(n) for n in range(BEFORE)])
    first, second = DaemonProcess(env, tmp_path), DaemonProcess(env, tmp_path)
    try:
        start_all([first, second])
        wait_stored(url, BEFORE, 30, first, second)
        held = holders(env)["imap:support"]
        owner, standby = (first, second) if held["pid"] == first.proc.pid else (second, first)  # type: ignore[union-attr]
        assert held["pid"] == owner.proc.pid  # type: ignore[union-attr]

        db = Database(url)
        try:
            with db.engine.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = :app"
                    ),
                    {"app": f"emaild locks {held['holder']}"[:63]},
                ).all()
                conn.commit()
        finally:
            db.dispose()
        assert killed, "the owner's lock session was not found"
        cut_at = time.monotonic()

        deadline = cut_at + TAKEOVER_LIMIT_SECONDS
        while not (owner.events("imap.mailbox_lost") and standby.events("imap.mailbox_owned")):
            assert time.monotonic() < deadline, owner.log()[-2000:] + standby.log()[-2000:]
            time.sleep(0.1)
        print(
            f"lock session cut: owner stopped, other took over in {time.monotonic() - cut_at:.2f} s"
        )
        assert owner.events("cluster.lock_lost")
        assert owner.proc.poll() is None, "the owner keeps running: only the mailbox moved"  # type: ignore[union-attr]

        dovecot.append(user, [mail(n) for n in range(BEFORE, BEFORE + AFTER)])
        wait_stored(url, BEFORE + AFTER, 30, standby)
        time.sleep(2.5)
        assert counts(url) == (BEFORE + AFTER,) * 3
        assert holders(env)["imap:support"]["pid"] == standby.proc.pid  # type: ignore[union-attr]
        # The former owner polled nothing after it noticed (it only retries the lock).
        lost_at = owner.events("imap.mailbox_lost")[0]["timestamp"]
        later = [e for e in owner.events("imap.connected") if e["timestamp"] > lost_at]
        assert later == [], later
    finally:
        first.stop()
        second.stop()
