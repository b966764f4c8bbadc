"""The IMAP poller against a real Dovecot, on SQLite and PostgreSQL.

Crash tests run the poller in a subprocess and SIGKILL it at a chosen step
(``progress`` hook), then poll again and count cases: nothing lost, nothing
twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from dovecot import Dovecot, ImapUser
from sqlalchemy import func, select

from emaild.app import App
from emaild.channels.imap.connection import mailbox_from_url
from emaild.channels.imap.poller import MailboxPoller
from emaild.channels.imap.worker import MailboxWorker
from emaild.config import Config, MailboxConfig
from emaild.store.models import Case, ImapCursor, Message, OutboxItem, QuarantineEntry

pytestmark = pytest.mark.dovecot

SEEN = b"\\Seen"


def mail(n: int | str, *, sender: str = "alice@customer.test", extra: str = "") -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: support@example.com\r\nSubject: IMAP {n}\r\n"
        f"Message-ID: <imap-{n}@customer.test>\r\nDate: Mon, 2 Sep 2024 10:00:00 +0000\r\n"
        f"{extra}\r\nHello {n}.\r\n"
    ).encode()


def box_for(dovecot: Dovecot, user: ImapUser, **settings: Any) -> MailboxConfig:
    data: dict[str, Any] = {
        "name": "support",
        "host": dovecot.host,
        "port": dovecot.port,
        "tls": "plain",
        "user": user.name,
        "password": user.password,
        "idle": False,
    }
    data.update(settings)
    return MailboxConfig.model_validate(data)


def poll(app: App, box: MailboxConfig) -> dict[str, int]:
    poller = MailboxPoller(app, box)
    try:
        return poller.poll_once().as_json()
    finally:
        poller.close()


def flags(dovecot: Dovecot, user: ImapUser, folder: str = "INBOX") -> list[tuple[bytes, ...]]:
    with dovecot.client(user) as client:
        client.select_folder(folder, readonly=True)
        found = client.get_flags(client.search())
        return [found[uid] for uid in sorted(found)]


def count(app: App, model: Any, *where: Any) -> int:
    with app.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def cursor(app: App, box: str = "support", folder: str = "INBOX") -> ImapCursor | None:
    with app.db.session() as session:
        return session.get(ImapCursor, (box, folder))


# --- the basics ------------------------------------------------------------------------
def test_cli_poll_once_turns_appended_mail_into_cases_and_marks_seen(
    dovecot: Dovecot, run_cli: Any, cli_env: dict[str, str]
) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [mail(1), mail(2), mail(3)])
    url = f"imap://{user.name}@{dovecot.host}:{dovecot.port}/INBOX"
    env = {"EMAILD_IMAP_PASSWORD": user.password}

    first = run_cli("poll", "--once", "--json", url, env=env)
    assert first.returncode == 0, first.stderr.decode()
    summary = json.loads(first.stdout)
    keys = ("fetched", "cases", "appended", "duplicates", "quarantined")
    assert [summary[k] for k in keys] == [3, 3, 0, 0, 0]
    assert flags(dovecot, user) == [(SEEN,)] * 3

    # The cursor moved: a second pass fetches nothing; new mail is picked up alone.
    dovecot.append(user, [mail(4)])
    second = json.loads(run_cli("poll", "--once", "--json", url, env=env).stdout)
    assert (second["fetched"], second["cases"]) == (1, 1)
    third = json.loads(run_cli("poll", "--once", "--json", url, env=env).stdout)
    assert third["fetched"] == 0
    listed = run_cli("cases", "list", "--json")
    subjects = sorted(c["subject"] for c in json.loads(listed.stdout))
    assert subjects == [f"IMAP {n}" for n in (1, 2, 3, 4)]
    # A one-off URL poll leaves no channel behind in `emaild status`.
    status = json.loads(run_cli("status", "--json").stdout)
    assert [c["name"] for c in status["channels"] if c["kind"] == "imap"] == []


def test_cursor_and_flags_follow_each_pass(dovecot: Dovecot, app: App) -> None:
    user = dovecot.new_user()
    box = box_for(dovecot, user, batch_size=2)  # several batches in one pass
    dovecot.append(user, [mail(n) for n in range(5)])

    assert poll(app, box)["cases"] == 5
    row = cursor(app)
    assert row is not None
    with dovecot.client(user) as client:
        uidvalidity = client.select_folder("INBOX")[b"UIDVALIDITY"]
    assert (row.uidvalidity, row.last_uid, row.acked_uid) == (uidvalidity, 5, 5)
    assert flags(dovecot, user) == [(SEEN,)] * 5
    # A message a person marked unread again is not fetched again: the cursor rules.
    with dovecot.client(user) as client:
        client.select_folder("INBOX")
        client.remove_flags([1], [SEEN])
    assert poll(app, box)["fetched"] == 0
    assert count(app, Case) == 5


@pytest.mark.parametrize("action", ["move", "delete"])
def test_after_store_move_and_delete(dovecot: Dovecot, app: App, action: str) -> None:
    user = dovecot.new_user()
    move_to = "Processed" if action == "move" else ""
    box = box_for(dovecot, user, after_store=action, move_to=move_to)
    dovecot.append(user, [mail(1), mail(2)])

    assert poll(app, box)["cases"] == 2
    assert flags(dovecot, user) == []
    with dovecot.client(user) as client:
        moved = client.select_folder("Processed")[b"EXISTS"] if action == "move" else 0
    assert moved == (2 if action == "move" else 0)
    assert count(app, Message) == 2


def test_other_folder_and_url_query_settings(dovecot: Dovecot, app: App) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [mail(1)], folder="Support")
    dovecot.append(user, [mail(2)])  # INBOX: not polled
    url = (
        f"imap://{user.name}@{dovecot.host}:{dovecot.port}/Support"
        "?routing_address=Help@Example.com&after_store=move&move_to=Done&idle=false"
    )
    box = mailbox_from_url(url, {"EMAILD_IMAP_PASSWORD": user.password})
    assert (box.folders, box.routing_address, box.tls) == (["Support"], "help@example.com", "plain")

    assert poll(app, box)["cases"] == 1
    with dovecot.client(user) as client:
        assert client.select_folder("Done")[b"EXISTS"] == 1
        assert client.select_folder("INBOX")[b"EXISTS"] == 1


# --- crashes ---------------------------------------------------------------------------
CRASHING_POLLER = textwrap.dedent(
    """
    import os, signal, sys
    from emaild.app import App
    from emaild.channels.imap.connection import mailbox_from_url
    from emaild.channels.imap.worker import MailboxWorker
    from emaild.config import load_config

    url, step, at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def progress(name, folder, uid):
        if name == step and uid == at:
            os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no cleanup, no flush

    app = App.open(load_config(None, os.environ))
    box = mailbox_from_url(url, os.environ)
    MailboxWorker(app, box, progress=progress).poll_or_raise()
    """
)


def kill_poller_at(url: str, step: str, uid: int, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_POLLER, url, step, str(uid)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -9, done.stderr.decode()[-3000:]


@pytest.mark.parametrize(
    ("step", "stored_before_restart"),
    [
        ("stored", 3),  # killed between commit and \Seen: 3 committed, none flagged
        ("fetched", 2),  # killed between fetch and commit of message 3
    ],
)
def test_killed_poller_neither_loses_nor_duplicates(
    dovecot: Dovecot,
    app: App,
    run_cli: Any,
    cli_env: dict[str, str],
    step: str,
    stored_before_restart: int,
) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [mail(n) for n in range(1, 6)])
    url = f"imap://{user.name}@{dovecot.host}:{dovecot.port}/INBOX"
    env = dict(cli_env, EMAILD_IMAP_PASSWORD=user.password)

    kill_poller_at(url, step, 3, env)
    assert count(app, Message) == stored_before_restart
    assert flags(dovecot, user) == [()] * 5  # flags are set only after the batch's commits
    name = mailbox_from_url(url, env).name
    row = cursor(app, name)
    assert row is not None and (row.last_uid, row.acked_uid) == (stored_before_restart, 0)

    restarted = run_cli("poll", "--once", "--json", url, env=env)
    assert restarted.returncode == 0, restarted.stderr.decode()
    summary = json.loads(restarted.stdout)
    assert summary["duplicates"] == stored_before_restart
    assert summary["cases"] == 5 - stored_before_restart
    assert count(app, Case) == 5
    assert count(app, Message) == 5
    assert flags(dovecot, user) == [(SEEN,)] * 5
    row = cursor(app, name)
    assert row is not None and (row.last_uid, row.acked_uid) == (5, 5)


def test_uidvalidity_reset_rescans_without_duplicates(dovecot: Dovecot, app: App) -> None:
    user = dovecot.new_user()
    box = box_for(dovecot, user, folders=["Support"])
    messages = [mail(n) for n in range(4)]
    dovecot.append(user, messages, folder="Support")
    assert poll(app, box)["cases"] == 4
    before = cursor(app, folder="Support")

    with dovecot.client(user) as client:  # recreate the folder: a new UIDVALIDITY
        client.delete_folder("Support")
        client.create_folder("Support")
    dovecot.append(user, [*messages, mail("new")], folder="Support")

    summary = poll(app, box)
    assert summary["uidvalidity_resets"] == 1
    assert (summary["duplicates"], summary["cases"]) == (4, 1)
    assert count(app, Case) == 5
    after = cursor(app, folder="Support")
    assert before is not None and after is not None
    assert after.uidvalidity != before.uidvalidity
    assert (after.last_uid, after.acked_uid) == (5, 5)
    assert flags(dovecot, user, "Support") == [(SEEN,)] * 5


# --- bad and oversized mail -------------------------------------------------------------
def test_malformed_message_mid_batch_is_quarantined_and_the_rest_stored(
    dovecot: Dovecot, app: App, corpus: Path
) -> None:
    user = dovecot.new_user()
    box = box_for(dovecot, user, failed_folder="emaild-failed")
    odd = sorted((corpus / "mikel-mail" / "error_emails").glob("*.eml"))[:6]
    garbage = b"\x01\x02 this is not a message \xff\r\n"  # (IMAP forbids NUL bytes)
    batch = [mail(1), *(p.read_bytes() for p in odd), garbage, mail(2)]
    dovecot.append(user, batch)

    summary = poll(app, box)
    assert summary["fetched"] == len(batch)
    assert summary["quarantined"] == 1
    assert summary["cases"] + summary["appended"] + summary["duplicates"] == len(batch) - 1
    with app.db.session() as session:
        entry = session.scalars(select(QuarantineEntry)).one()
        assert entry.channel == "imap" and entry.status == "held"
        assert app.blobs.read(entry.raw_sha256) == garbage
    with dovecot.client(user) as client:
        client.select_folder("emaild-failed")
        (moved,) = client.fetch(client.search(), ["BODY.PEEK[]"]).values()
        assert moved[b"BODY[]"] == garbage
    assert flags(dovecot, user) == [(SEEN,)] * (len(batch) - 1)
    assert poll(app, box)["fetched"] == 0  # nothing stalls or comes back


def test_too_large_message_is_recorded_and_the_sender_told_once(
    dovecot: Dovecot, make_config: Any
) -> None:
    config: Config = make_config("[limits]\nmax_message_bytes = 20000\n")
    app = App.open(config)
    try:
        user = dovecot.new_user()
        box = box_for(dovecot, user, folders=["Support"], after_store="delete")
        padding = "x" * 76 + "\r\n"
        big = mail("big", extra="X-Note: big\r\n") + (padding * 400).encode()
        bounce = (
            b"From: MAILER-DAEMON <mailer-daemon@customer.test>\r\nTo: support@example.com\r\n"
            b"Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\n"
            b"Message-ID: <bounce-1@customer.test>\r\n\r\n" + (padding * 400).encode()
        )
        dovecot.append(user, [mail(1), big, bounce], folder="Support")

        summary = poll(app, box)
        assert (summary["too_large"], summary["quarantined"], summary["cases"]) == (2, 2, 1)
        with app.db.session() as session:
            entries = list(session.scalars(select(QuarantineEntry).order_by(QuarantineEntry.id)))
            assert [e.reason for e in entries] == ["too_large", "too_large"]
            assert entries[0].raw_sha256 == "" and entries[0].raw_size > 20000
            assert "Subject: IMAP big" in entries[0].headers
            assert "told" in entries[0].error and "no notice" in entries[1].error
            notices = list(
                session.scalars(select(OutboxItem).where(OutboxItem.kind == "too_large"))
            )
            assert [(n.kind, n.rcpt_to, n.mail_from) for n in notices] == [
                ("too_large", "alice@customer.test", "support@example.com")
            ]
            assert b"Auto-Submitted: auto-replied" in notices[0].raw
        # Only headers were kept: "delete" must not remove these from the server.
        with dovecot.client(user) as client:
            assert client.select_folder("Support")[b"EXISTS"] == 2

        # Seen again after a UIDVALIDITY reset: still one entry each, one notice.
        with dovecot.client(user) as client:
            client.delete_folder("Support")
        dovecot.append(user, [big, bounce], folder="Support")
        assert poll(app, box)["too_large"] == 2
        assert count(app, QuarantineEntry) == 2
        assert count(app, OutboxItem, OutboxItem.kind == "too_large") == 1
    finally:
        app.close()


# --- one poll at a time ------------------------------------------------------------------
def test_one_poll_at_a_time_and_a_wake_mid_poll_gets_another_pass(
    dovecot: Dovecot, app: App
) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [mail(1), mail(2)])
    answers: list[object] = []

    def progress(step: str, folder: str, uid: int) -> None:
        if step == "stored" and uid == 1 and not answers:
            # Mail arrives while the poll runs; IDLE would call poll(again=True) now.
            dovecot.append(user, [mail("late")])
            answers.append(worker.poll())  # busy: skipped
            answers.append(worker.poll(again=True))  # busy: asks for one more pass

    worker = MailboxWorker(app, box_for(dovecot, user), progress=progress)
    summary = worker.poll()
    worker.poller.close()
    assert answers == [None, None]
    assert summary is not None and (summary.fetched, summary.cases) == (3, 3)


# --- failures are visible ---------------------------------------------------------------
def test_unreachable_server_is_recorded_in_channel_status(app: App) -> None:
    from dovecot import free_port

    from emaild.store.models import ChannelStatus

    box = MailboxConfig.model_validate(
        {"name": "down", "host": "127.0.0.1", "port": free_port(), "tls": "plain", "user": "x"}
        | {"password": "y", "idle": False}
    )
    worker = MailboxWorker(app, box)
    with structlog.testing.capture_logs() as logged:
        for _ in range(3):
            assert worker.poll(force=True) is not None
    levels = [e["log_level"] for e in logged if e["event"] == "imap.poll_failed"]
    assert levels == ["warning", "warning", "error"]  # loud once it keeps failing
    assert worker.retry_in() is not None
    with app.db.session() as session:
        row = session.get(ChannelStatus, "imap:down")
        assert row is not None
        assert row.consecutive_failures == 3 and row.last_success_at is None
        assert "connection refused" in row.last_error
    # Backoff: an unforced poll right after a failure is skipped.
    assert worker.poll() is None


def test_missing_folder_is_a_config_problem(dovecot: Dovecot, app: App, run_cli: Any) -> None:
    user = dovecot.new_user()
    url = f"imap://{user.name}@{dovecot.host}:{dovecot.port}/Nowhere"
    done = run_cli("poll", "--once", url, env={"EMAILD_IMAP_PASSWORD": user.password})
    assert done.returncode == 78
    assert "cannot open folder 'Nowhere'" in done.stderr.decode()


def test_env_password_is_never_printed(dovecot: Dovecot, run_cli: Any) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [mail(1)])
    url = f"imap://{user.name}@{dovecot.host}:{dovecot.port}/INBOX"
    done = run_cli("poll", "--once", url, env={"EMAILD_IMAP_PASSWORD": user.password})
    assert done.returncode == 0
    assert user.password.encode() not in done.stdout + done.stderr
    bad = run_cli("poll", "--once", url, env={"EMAILD_IMAP_PASSWORD": user.password + "z"})
    assert bad.returncode == 78
    assert user.password.encode() not in bad.stdout + bad.stderr
    assert b"refused the password" in bad.stderr


def test_config_file_mailbox_with_password_file(
    dovecot: Dovecot, make_config: Any, tmp_path: Path
) -> None:
    user = dovecot.new_user()
    (tmp_path / "imap.pass").write_text(user.password + "\n", encoding="utf-8")
    config: Config = make_config(dovecot.mailbox_toml(user, password_file="imap.pass", idle=False))
    box = config.mailbox[0]
    assert box.password_file == str(tmp_path / "imap.pass")  # relative to the config file
    dovecot.append(user, [mail(1)])
    app = App.open(config)
    try:
        assert poll(app, box)["cases"] == 1
    finally:
        app.close()


# --- IDLE ---------------------------------------------------------------------------------
def test_idle_watcher_reissues_and_wakes_on_new_mail(dovecot: Dovecot) -> None:
    import threading
    import time

    from emaild.channels.imap.auth import Credentials
    from emaild.channels.imap.idle import IdleWatcher

    user = dovecot.new_user()
    box = box_for(dovecot, user, idle=True, idle_reissue_seconds=1.0)
    woke = threading.Event()
    stop = threading.Event()
    watcher = IdleWatcher(box, Credentials(box), woke.set, stop)
    watcher.start()
    try:
        assert watcher.idling.wait(10)
        time.sleep(2.5)  # the 1 s limit re-issues the IDLE twice meanwhile
        assert watcher.idle_commands >= 3
        assert not woke.is_set()
        started = time.monotonic()
        dovecot.append(user, [mail(1)])
        assert woke.wait(5)
        assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        watcher.interrupt()
        watcher.join(10)
    assert not watcher.is_alive() and watcher.supported is True


def test_poll_without_once_keeps_polling_until_sigterm(
    dovecot: Dovecot, app: App, cli_env: dict[str, str]
) -> None:
    import signal
    import time

    user = dovecot.new_user()
    url = f"imap://{user.name}@{dovecot.host}:{dovecot.port}/INBOX"
    env = dict(cli_env, EMAILD_IMAP_PASSWORD=user.password)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emaild", "poll", url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        dovecot.append(user, [mail("first")])
        while count(app, Message) < 1:  # the first pass, then IDLE
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        dovecot.append(user, [mail("second")])
        while count(app, Message) < 2:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert flags(dovecot, user) == [(SEEN,)] * 2
