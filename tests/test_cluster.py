"""Cluster-wide locks (``emaild.cluster``) in one test process, on both backends.

Two ``Cluster`` objects on two ``Database`` objects stand for two processes:
on PostgreSQL each has its own lock connection (session), exactly as two
``emaild run`` processes would. The multi-process proofs are in
``test_cluster_processes.py``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import text

from emaild.app import App
from emaild.cluster import Cluster
from emaild.cluster.holders import live_holders
from emaild.store.database import Database


def test_a_lock_is_held_by_one_holder_at_a_time(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    first, second = Cluster(db), Cluster(db)
    try:
        assert first.try_acquire("job:x")
        assert not first.try_acquire("job:x"), "not re-entrant in one process either"
        if not db.is_sqlite:  # SQLite locks are in-process: one Cluster per process
            assert not second.try_acquire("job:x")
        with db.session() as session:
            rows = live_holders(session, first_now())
        assert [(r["name"], r["holder"]) for r in rows] == [("job:x", first.identity)]
        first.release("job:x")
        with db.session() as session:
            assert live_holders(session, first_now()) == []
        if not db.is_sqlite:
            assert second.try_acquire("job:x")
            assert not first.try_acquire("job:x")
    finally:
        first.close()
        second.close()
        db.dispose()


def first_now() -> Any:
    from emaild.clock import utcnow

    return utcnow()


def test_exclusive_block_releases_even_when_the_work_fails(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    cluster = Cluster(db)
    try:
        with pytest.raises(RuntimeError), cluster.exclusive("job:y") as mine:
            assert mine
            raise RuntimeError("boom")
        assert not cluster.holds("job:y")
        with cluster.exclusive("job:y") as mine:
            assert mine
    finally:
        cluster.close()
        db.dispose()


def test_a_lost_lock_connection_sets_lost_and_frees_the_lock(postgres: Any) -> None:
    """pg_terminate_backend on the holder's lock session: the lock is free for the other
    at once, and the holder's heartbeat notices within a beat and sets ``lost``."""
    name = postgres.create()
    url = postgres.url(name)
    db_a, db_b = Database(url), Database(url)
    a = Cluster(db_a, heartbeat_seconds=0.2)
    b = Cluster(db_b, heartbeat_seconds=0.2)
    try:
        lost = threading.Event()
        assert a.try_acquire("imap:support", lost=lost)
        # The server drops the session of a holder whose host vanished in seconds, not hours.
        with a._mutex:
            conn = a._connection()
            assert conn.execute(text("SHOW tcp_keepalives_idle")).scalar() == "5"
            assert conn.execute(text("SHOW tcp_user_timeout")).scalar() in ("10s", "10000")
        assert not b.try_acquire("imap:support")
        with db_b.engine.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = :app"
                ),
                {"app": f"emaild locks {a.identity}"[:63]},
            ).all()
            conn.commit()
        assert killed, "the holder's lock session was not found"
        deadline = time.monotonic() + 10
        while not b.try_acquire("imap:support"):
            assert time.monotonic() < deadline, "the lock did not come free"
            time.sleep(0.05)
        assert lost.wait(5), "the old holder did not notice it lost the lock"
        assert not a.holds("imap:support")
        with db_b.session() as session:
            rows = live_holders(session, first_now())
        assert [r["holder"] for r in rows] == [b.identity]
    finally:
        a.close()
        b.close()
        db_a.dispose()
        db_b.dispose()
        postgres.drop(name)


def test_status_lists_holders_and_mailboxes_nobody_holds(
    make_app: Any, run_cli: Any, dovecot: Any, tmp_path: Any
) -> None:
    user = dovecot.new_user()
    app: App = make_app(dovecot.mailbox_toml(user) + dovecot.mailbox_toml(user, name="other"))
    from emaild.cluster import cluster_for

    cluster = cluster_for(app.db)
    assert cluster.try_acquire("imap:support")
    try:
        from emaild.status import gather_status

        holders = {h["name"]: h for h in gather_status(app)["holders"]}
        assert holders["imap:support"]["holder"] == cluster.identity
        assert holders["imap:support"]["pid"] == cluster.pid
        assert holders["imap:other"]["holder"] is None
        done = run_cli("status", env={"EMAILD_CONFIG": str(tmp_path / "emaild.toml")})
        out = done.stdout.decode()
        assert "Held by" in out, done.stderr.decode()
        lines = {line.split()[0]: line for line in out.splitlines() if "imap:" in line}
        assert cluster.identity in lines["imap:support"]
        assert "nobody" in lines["imap:other"]
    finally:
        cluster.release("imap:support")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_poll_once_refuses_a_mailbox_another_process_holds(
    make_app: Any, run_cli: Any, dovecot: Any, tmp_path: Any
) -> None:
    user = dovecot.new_user()
    app: App = make_app(dovecot.mailbox_toml(user))
    from emaild.cluster import cluster_for

    cluster = cluster_for(app.db)
    env = {"EMAILD_CONFIG": str(tmp_path / "emaild.toml")}
    assert cluster.try_acquire("imap:support")
    try:
        done = run_cli("poll", "--once", "support", env=env)
        assert done.returncode == 75, done.stderr.decode()
        assert b"being polled by another emaild process" in done.stderr
    finally:
        cluster.release("imap:support")
    done = run_cli("poll", "--once", "support", env=env)
    assert done.returncode == 0, done.stderr.decode()
