"""Outbox delivery against a real SMTP relay on loopback: retry, refusal, restart, claims.

The relay is ``relay_sink`` (aiosmtpd); "down" means it is stopped and the
port refuses connections, 4xx/5xx are real SMTP replies.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from emaild.app import App
from emaild.errors import EX_TEMPFAIL
from emaild.outbox import deliver_due, enqueue
from emaild.outbox.delivery import retry_delay
from emaild.outbox.queue import requeue
from emaild.store.models import Case, Message, OutboxItem, SuppressedRecipient

# A minute ago: items queued "at T0" are due now for the real clock, and tests
# that move a Clock by hand start from the same instant.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


class Clock:
    """A clock the test moves by hand (retry timers without sleeping)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def notice(n: int, to: str = "bob@customer.test") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Example Support <support@example.com>"
    msg["To"] = to
    msg["Subject"] = f"Notice {n}"
    msg["Message-ID"] = f"<notice{n}@example.com>"
    msg.set_content(f"Notice number {n}.\n")
    return msg


@pytest.fixture
def relay_config(make_config: Any, relay_sink: Any) -> Any:
    """Config pointing at the sink; ``relay`` is extra lines for the [relay] table."""

    def build(relay: str = "", **env: str) -> Any:
        base = "[relay]\nretry_base_seconds = 60.0\nmax_attempts = 3\n"
        relay = relay if "starttls" in relay else relay + 'starttls = "off"\n'
        return make_config(base + relay, **relay_sink.relay_env, **env)

    return build


@pytest.fixture
def outbox_app(relay_config: Any) -> Any:
    apps: list[App] = []

    def build(relay: str = "") -> App:
        app = App.open(relay_config(relay))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.close()


def queue_notices(
    app: App, count: int, *, case: bool = False, to: str = "bob@customer.test"
) -> None:
    def work(s: Any) -> None:
        case_id = None
        if case:
            row = Case(routing_address="support@example.com", created_at=T0, updated_at=T0)
            s.add(row)
            s.flush()
            case_id = row.id
        for n in range(count):
            enqueue(
                s,
                notice(n, to),
                mail_from="support@example.com",
                rcpt_to=to,
                now=T0,
                kind="notice",
                case_id=case_id,
            )

    app.db.run(work)


def items(app: App) -> list[OutboxItem]:
    with app.db.session() as s:
        return list(s.scalars(select(OutboxItem).order_by(OutboxItem.id)))


def test_enqueue_is_part_of_the_callers_transaction(outbox_app: Any) -> None:
    app = outbox_app()

    def fail(s: Any) -> None:
        enqueue(s, notice(1), mail_from="", rcpt_to="x@y.test", now=T0, kind="notice")
        raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        app.db.run(fail)
    assert items(app) == []
    with pytest.raises(ValueError, match="bad recipient"):
        app.db.run(
            lambda s: enqueue(
                s, notice(1), mail_from="", rcpt_to="x@y.test\r\nRCPT TO:<z@z>", now=T0, kind="n"
            )
        )


def test_sent_items_are_stored_on_the_case_as_outbound_messages(
    outbox_app: Any, relay_sink: Any
) -> None:
    app = outbox_app()
    queue_notices(app, 2, case=True)
    report = deliver_due(app, clock=Clock())
    assert len(report.sent) == 2 and not report.deferred and not report.failed
    got = relay_sink.wait_for(2)
    assert sorted(m.message()["Subject"] for m in got) == ["Notice 0", "Notice 1"]
    assert all(m.mail_from == "support@example.com" for m in got)
    with app.db.session() as s:
        out = list(s.scalars(select(Message).order_by(Message.id)))
        assert [(m.direction, m.dedup_key) for m in out] == [
            ("out", "mid:<notice0@example.com>"),
            ("out", "mid:<notice1@example.com>"),
        ]
        assert all(app.blobs.exists(m.raw_sha256) for m in out)
    assert [i.status for i in items(app)] == ["sent", "sent"]


def test_relay_down_keeps_items_queued_then_delivers_once_it_returns(
    outbox_app: Any, relay_sink: Any
) -> None:
    app = outbox_app()
    queue_notices(app, 3)
    clock = Clock()
    relay_sink.stop()
    report = deliver_due(app, clock=clock)
    # One connection attempt for the run, not one per item; nobody's mail is lost.
    assert len(report.deferred) == 1 and not report.sent and "refused" in report.relay_error.lower()
    rows = items(app)
    assert [i.status for i in rows] == ["queued"] * 3
    assert [i.attempts for i in rows] == [1, 0, 0]
    assert rows[0].next_attempt_at == T0 + timedelta(seconds=60)
    assert "ConnectionRefused" in rows[0].last_error

    relay_sink.start()  # back, on the same port
    report = deliver_due(app, clock=clock)
    # The first item waits for its retry time; the other two go now.
    assert len(report.sent) == 2
    clock.advance(61)
    assert len(deliver_due(app, clock=clock).sent) == 1
    assert [i.status for i in items(app)] == ["sent"] * 3
    assert len(relay_sink.wait_for(3)) == 3
    clock.advance(3600)
    assert deliver_due(app, clock=clock).attempted == 0
    assert len(relay_sink.received()) == 3


def test_nothing_is_sent_twice_after_a_restart(relay_config: Any, relay_sink: Any) -> None:
    config = relay_config()
    first = App.open(config)
    queue_notices(first, 2)
    assert len(deliver_due(first).sent) == 2
    first.close()
    # A new process on the same database: "sent" is final.
    second = App.open(config)
    try:
        assert deliver_due(second, ignore_schedule=True).attempted == 0
        assert len(second.db.run(lambda s: requeue(s, None, datetime.now(UTC)))) == 0
        assert deliver_due(second, ignore_schedule=True).attempted == 0
    finally:
        second.close()
    assert len(relay_sink.received()) == 2


def test_a_crashed_workers_claim_lapses_and_the_item_is_taken_over(
    outbox_app: Any, relay_sink: Any
) -> None:
    from emaild.outbox.queue import claim

    app = outbox_app()
    queue_notices(app, 1)
    [item] = items(app)
    assert app.db.run(lambda s: claim(s, item.id, "dead-worker", T0, 300.0))
    clock = Clock()
    # While the claim holds, nobody else may send it.
    assert deliver_due(app, clock=clock, ignore_schedule=True).attempted == 0
    clock.advance(301)
    assert len(deliver_due(app, clock=clock).sent) == 1
    assert len(relay_sink.wait_for(1)) == 1


def test_temporary_refusal_backs_off_exponentially_then_fails(
    outbox_app: Any, relay_sink: Any
) -> None:
    app = outbox_app()
    queue_notices(app, 1)
    relay_sink.mode = "tempfail"
    clock = Clock()
    waits = []
    for _ in range(3):
        report = deliver_due(app, clock=clock)
        assert report.attempted == 1
        [row] = items(app)
        waits.append((row.next_attempt_at - clock.now).total_seconds())
        clock.now = row.next_attempt_at
    # max_attempts = 3: two waits (60 s, 120 s), then the third 4xx gives up.
    [row] = items(app)
    assert row.status == "failed" and row.attempts == 3
    assert "451" in row.last_error and "gave up after 3 attempts" in row.last_error
    assert waits[:2] == [60.0, 120.0]
    with app.db.session() as s:
        assert s.get(SuppressedRecipient, "bob@customer.test") is None  # 4xx never suppresses
    assert retry_delay(20, 60.0, 3600.0) == 3600.0


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_permanent_refusal_fails_the_item_and_suppresses_the_recipient(
    outbox_app: Any, relay_sink: Any, stage: str
) -> None:
    app = outbox_app()
    queue_notices(app, 1)
    relay_sink.mode, relay_sink.refuse_at = "reject", stage
    report = deliver_due(app, clock=Clock())
    assert len(report.failed) == 1
    [row] = items(app)
    assert row.status == "failed" and row.attempts == 1 and "550" in row.last_error
    with app.db.session() as s:
        suppressed = s.get(SuppressedRecipient, "bob@customer.test")
        assert suppressed is not None and "5.1.1" in suppressed.reason
    assert relay_sink.received() == []


def test_policy_refusal_at_data_does_not_blame_the_recipient(
    outbox_app: Any, relay_sink: Any
) -> None:
    app = outbox_app()
    queue_notices(app, 1)
    relay_sink.mode, relay_sink.refuse_at = "reject", "data"
    relay_sink.reject_reply = "554 5.7.1 message content rejected"
    assert len(deliver_due(app).failed) == 1
    with app.db.session() as s:
        assert s.get(SuppressedRecipient, "bob@customer.test") is None


def test_dropped_connection_is_temporary(outbox_app: Any, relay_sink: Any) -> None:
    app = outbox_app()
    queue_notices(app, 1)
    relay_sink.mode = "drop"
    report = deliver_due(app, clock=Clock())
    assert len(report.deferred) == 1 and report.relay_error
    relay_sink.mode = "accept"
    assert len(deliver_due(app, ignore_schedule=True).sent) == 1


def test_starttls_and_auth(
    make_config: Any, make_relay_sink: Any, relay_certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    sink = make_relay_sink(tls_cert=relay_certificate, require_tls=True, auth=("emaild", "s3cret"))
    password = tmp_path / "relay-password"
    password.write_text("s3cret\n")
    config = make_config(
        '[relay]\nstarttls = "required"\nusername = "emaild"\n'
        f'password_file = "{password}"\nca_file = "{relay_certificate[0]}"\n',
        **sink.relay_env,
    )
    app = App.open(config)
    try:
        queue_notices(app, 1)
        assert len(deliver_due(app).sent) == 1
        [got] = sink.wait_for(1)
        assert got.tls and got.auth_user == "emaild"
    finally:
        app.close()


def test_required_starttls_missing_is_a_relay_error(outbox_app: Any, relay_sink: Any) -> None:
    # The plain sink offers no STARTTLS: with "required" nothing goes out in clear.
    app = outbox_app('starttls = "required"\n')
    queue_notices(app, 1)
    report = deliver_due(app, clock=Clock())
    assert len(report.deferred) == 1 and "does not offer STARTTLS" in report.relay_error
    assert relay_sink.received() == []


def test_wrong_auth_password_keeps_items_queued(
    make_config: Any, make_relay_sink: Any, relay_certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    sink = make_relay_sink(tls_cert=relay_certificate, auth=("emaild", "right"))
    password = tmp_path / "pw"
    password.write_text("wrong")
    config = make_config(
        f'[relay]\nstarttls = "required"\nca_file = "{relay_certificate[0]}"\n'
        f'username = "emaild"\npassword_file = "{password}"\n',
        **sink.relay_env,
    )
    app = App.open(config)
    try:
        queue_notices(app, 1)
        report = deliver_due(app, clock=Clock())
        assert len(report.deferred) == 1 and "refused AUTH" in report.relay_error
        assert [i.status for i in items(app)] == ["queued"]
    finally:
        app.close()


def test_two_processes_never_send_one_item_twice(
    outbox_app: Any, relay_sink: Any, cli_env: dict[str, str]
) -> None:
    app = outbox_app()
    count = 40
    queue_notices(app, count)
    env = dict(cli_env, **relay_sink.relay_env, EMAILD_CONFIG=str(app.config.source))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "emaild", "outbox", "flush"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    got = relay_sink.wait_for(count)
    subjects = [m.message()["Subject"] for m in got]
    assert len(subjects) == count and len(set(subjects)) == count
    assert [i.status for i in items(app)] == ["sent"] * count


def test_cli_list_retry_flush(
    outbox_app: Any, relay_sink: Any, run_cli: Any, cli_env: dict[str, str]
) -> None:
    app = outbox_app()
    queue_notices(app, 2, case=True)
    env = dict(relay_sink.relay_env, EMAILD_CONFIG=str(app.config.source))
    relay_sink.stop()
    done = run_cli("outbox", "flush", env=env)
    assert done.returncode == EX_TEMPFAIL, done.stderr
    assert b"deferred 1" in done.stdout
    listed = json.loads(run_cli("outbox", "list", "--json", env=env).stdout)
    assert [(r["status"], r["to"], r["case"]) for r in listed] == [
        ("queued", "bob@customer.test", 1),
        ("queued", "bob@customer.test", 1),
    ]
    relay_sink.start()
    # flush ignores the retry timer: every queued item is tried once, now.
    done = run_cli("outbox", "flush", env=env)
    assert done.returncode == 0 and b"sent 2" in done.stdout, done.stderr
    assert {
        r["status"] for r in json.loads(run_cli("outbox", "list", "--json", env=env).stdout)
    } == {"sent"}
    # Sent items cannot be retried; unknown ids are an error.
    retried = run_cli("outbox", "retry", "1", env=env)
    assert retried.returncode != 0 and b"no queued or failed item" in retried.stderr
    assert len(relay_sink.received()) == 2

    relay_sink.mode = "reject"
    queue_notices(app, 1, to="carol@customer.test")
    assert run_cli("outbox", "flush", env=env).returncode == 0
    failed = json.loads(run_cli("outbox", "list", "--json", "--status", "failed", env=env).stdout)
    assert [r["to"] for r in failed] == ["carol@customer.test"]
    relay_sink.mode = "accept"
    assert (
        run_cli("outbox", "retry", "--all", env=env).stdout.strip()
        == f"{failed[0]['id']}: queued".encode()
    )
    assert run_cli("outbox", "flush", env=env).returncode == 0
    assert len(relay_sink.wait_for(3)) == 3


def test_unreadable_password_file_defers_with_the_reason(
    make_config: Any, make_relay_sink: Any, relay_certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    sink = make_relay_sink(tls_cert=relay_certificate, auth=("emaild", "right"))
    config = make_config(
        f'[relay]\nstarttls = "required"\nca_file = "{relay_certificate[0]}"\n'
        f'username = "emaild"\npassword_file = "{tmp_path / "missing"}"\n',
        **sink.relay_env,
    )
    app = App.open(config)
    try:
        queue_notices(app, 1)
        report = deliver_due(app, clock=Clock())
        assert len(report.deferred) == 1
        assert "relay.password_file: cannot read" in report.relay_error
        assert "cannot read" in items(app)[0].last_error
    finally:
        app.close()


def test_without_a_configured_relay_it_is_said_once_in_the_log_and_in_status(
    make_config: Any,
) -> None:
    """A fresh install has no MTA on the default 127.0.0.1:25: one warning naming
    the missing [relay], not a warning per retry, and one line in `emaild status`."""
    from smtp_helpers import free_port
    from structlog.testing import capture_logs

    from emaild.status import gather_status

    config = make_config("")
    assert config.relay_configured is False
    assert make_config("[relay]\nhost = '127.0.0.1'\n").relay_configured is True
    # The default relay, moved to a closed loopback port: no test may touch port 25.
    closed = config.relay.model_copy(update={"port": free_port()})
    app = App.open(config.model_copy(update={"relay": closed}))
    try:
        queue_notices(app, 2)
        clock = Clock()
        with capture_logs() as logged:
            for _ in range(3):
                assert deliver_due(app, clock=clock, ignore_schedule=True).deferred
                clock.advance(3600)
        said = [e for e in logged if e["event"].startswith("outbox.")]
        assert [e["event"] for e in said if e["log_level"] == "warning"] == ["outbox.no_relay"]
        assert "no relay configured" in said[0]["hint"]
        status = gather_status(app)
        assert status["relay"] == {"address": f"127.0.0.1:{closed.port}", "configured": False}
        assert [a for a in status["attention"] if "no relay configured" in a] == [
            f"outbox: no relay configured ([relay] host), the default 127.0.0.1:{closed.port}"
            " fails: 2 queued"
        ]
    finally:
        app.close()
