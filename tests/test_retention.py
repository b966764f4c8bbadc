"""``[retention]`` and ``emaild purge`` (issue 15): what the policy keeps is untouched,
shared blobs survive, a dry run changes nothing; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from mailbuilder import build_mail, build_multipart
from sqlalchemy import select, update
from webhook_receiver import make_secret

from emaild.app import App
from emaild.casework.ops import update_case
from emaild.intake import Envelope, Outcome
from emaild.privacy.retention import purge
from emaild.store.models import (
    Attachment,
    BlobRow,
    Case,
    CaseEvent,
    Message,
    QuarantineEntry,
)

SHARED = b"the price list every customer gets\n" * 20
ONLY_A = b"alice's own scan\n" * 20
RULES = (
    '[[rule]]\nname = "noise"\ndescription = "test drop"\n'
    'all = [{ field = "subject", starts_with = "[noise]" }]\n'
    'actions = { drop = true, reason = "noise" }\n'
    '[[rule]]\nname = "held"\ndescription = "test quarantine"\n'
    'all = [{ field = "subject", starts_with = "[hold]" }]\n'
    'actions = { quarantine = true, reason = "held" }\n'
)
RETENTION = "[retention]\nclosed_case_raw_days = 30\nquarantine_days = 10\ndropped_days = 5\n"


def _ingest(app: App, raw: bytes) -> Any:
    return app.pipeline.ingest(raw, Envelope(channel="test", rcpt_to=("support@example.com",)))


def _backdate(app: App, model: Any, row_id: int, **values: Any) -> None:
    with app.db.session() as s, s.begin():
        s.execute(update(model).where(model.id == row_id).values(**values))


def _blob_files(app: App) -> set[str]:
    """The shas of every stored blob, whichever store holds them."""
    if app.blobs.kind == "postgresql":
        with app.db.session() as s:
            return set(s.scalars(select(BlobRow.sha256)))
    return {
        p.name for p in Path(app.config.blob_dir).rglob("*") if p.is_file() and len(p.name) == 64
    }


def _setup(app: App) -> dict[str, Any]:
    now = app.pipeline.clock()
    a = _ingest(
        app,
        build_multipart(
            sender="alice@a.test",
            subject="A",
            message_id="<a@a.test>",
            attachments={"prices.txt": SHARED, "scan.txt": ONLY_A},
        ),
    )
    b = _ingest(
        app,
        build_multipart(
            sender="bob@b.test",
            subject="B",
            message_id="<b@b.test>",
            attachments={"prices.txt": SHARED},
        ),
    )
    c = _ingest(app, build_mail(sender="carol@c.test", subject="C", message_id="<c@c.test>"))
    for result in (a, c):
        assert result.outcome is Outcome.NEW_CASE, result.trace
        app.db.run(
            lambda s, n=result.case_number: update_case(
                s, n, {"status": "closed"}, actor="test", now=now
            )
        )
    _backdate(app, Case, a.case_number, closed_at=now - timedelta(days=31))
    _backdate(app, Case, c.case_number, closed_at=now - timedelta(days=29))
    rows = {"a": a, "b": b, "c": c}
    for name, days in (("q_old", 11), ("q_new", 9)):
        q = _ingest(
            app,
            build_mail(sender="x@q.test", subject=f"[hold] {name}", message_id=f"<{name}@q.test>"),
        )
        assert q.outcome is Outcome.QUARANTINED, q.trace
        _backdate(app, QuarantineEntry, q.quarantine_id, created_at=now - timedelta(days=days))
        rows[name] = q
    for name, days in (("d_old", 6), ("d_new", 4)):
        d = _ingest(
            app,
            build_mail(sender="x@d.test", subject=f"[noise] {name}", message_id=f"<{name}@d.test>"),
        )
        assert d.outcome is Outcome.DROPPED, d.trace
        _backdate(app, Message, d.message_row_id, received_at=now - timedelta(days=days))
        rows[name] = d
    return rows


def _age_blobs(app: App, seconds: float = 600) -> None:
    """Every blob as if stored ``seconds`` ago (past the purge's grace period)."""
    import os
    import time
    from datetime import UTC, datetime

    when = time.time() - seconds
    if app.blobs.kind == "postgresql":
        with app.db.session() as s, s.begin():
            s.execute(update(BlobRow).values(used_at=datetime.fromtimestamp(when, UTC)))
        return
    for path in Path(app.config.blob_dir).rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def _state(app: App) -> Any:
    with app.db.session() as s:
        messages = s.execute(select(Message.id, Message.state, Message.raw_sha256)).all()
        attachments = s.execute(select(Attachment.id, Attachment.sha256)).all()
        quarantine = s.execute(select(QuarantineEntry.id, QuarantineEntry.raw_sha256)).all()
    return sorted(messages), sorted(attachments), sorted(quarantine), _blob_files(app)


@pytest.mark.parametrize(
    ("database_url", "blobs"),
    [("sqlite", "file"), ("postgresql", "file"), ("postgresql", "postgresql")],
    indirect=["database_url"],
)
def test_purge_removes_only_what_the_rules_name(make_app: Any, tmp_path: Path, blobs: str) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "50-test.toml").write_text(RULES, encoding="utf-8")
    app = make_app(f'[storage]\nblobs = "{blobs}"\n' + RETENTION, EMAILD_RULES_DIR=str(rules))
    assert app.blobs.kind == blobs
    rows = _setup(app)
    with app.db.session() as s:
        a_msg = s.get(Message, rows["a"].message_row_id)
        assert a_msg is not None
        a_raw = a_msg.raw_sha256
        a_shas = {
            x.sha256 for x in s.scalars(select(Attachment).where(Attachment.message_id == a_msg.id))
        }
        q_old = s.get(QuarantineEntry, rows["q_old"].quarantine_id)
        d_old = s.get(Message, rows["d_old"].message_row_id)
        assert q_old is not None and d_old is not None
        gone_raw = {a_raw, q_old.raw_sha256, d_old.raw_sha256}
    import hashlib

    shared, only_a = hashlib.sha256(SHARED).hexdigest(), hashlib.sha256(ONLY_A).hexdigest()
    assert a_shas == {shared, only_a}
    _age_blobs(app)
    # Someone stores the same scan right now (their row not committed yet): it stays.
    app.blobs.put(ONLY_A)
    before = _state(app)
    now = app.pipeline.clock()

    dry = purge(app.db, app.blobs, app.config.retention, now, dry_run=True)
    assert _state(app) == before  # a dry run changes nothing
    real = purge(app.db, app.blobs, app.config.retention, now)
    assert (real.cases, real.raw_messages, real.attachments) == (1, 1, 2)
    assert (real.quarantine_entries, real.dropped_messages) == (1, 1)
    # a's raw, the old quarantined and dropped raw go; the price list (bob's message
    # has it) and the scan (stored again just now) stay.
    assert real.blobs.deleted == 3 and real.blobs.kept == 2
    assert dry.as_json() == {**real.as_json(), "dry_run": True}

    files = _blob_files(app)
    assert not gone_raw & files and only_a in files
    assert shared in files  # bob's message still has it
    with app.db.session() as s:
        kept_case = s.get(Case, rows["a"].case_number)
        assert kept_case is not None and kept_case.status == "closed"  # the case stays
        a_msg = s.get(Message, rows["a"].message_row_id)
        assert a_msg is not None and a_msg.raw_sha256 == "" and a_msg.subject == "A"
        assert {
            x.sha256 for x in s.scalars(select(Attachment).where(Attachment.message_id == a_msg.id))
        } == {""}
        kinds = list(
            s.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == rows["a"].case_number))
        )
        assert kinds[-1] == "case.purged"
        # What the rules keep is untouched.
        for name in ("b", "c", "d_new"):
            m = s.get(Message, rows[name].message_row_id)
            assert m is not None and app.blobs.exists(m.raw_sha256), name
        assert s.get(Message, rows["d_old"].message_row_id) is None
        assert s.get(QuarantineEntry, rows["q_old"].quarantine_id) is None
        q_new = s.get(QuarantineEntry, rows["q_new"].quarantine_id)
        assert q_new is not None and app.blobs.exists(q_new.raw_sha256)
    after = _state(app)
    again = purge(app.db, app.blobs, app.config.retention, now)
    assert again.as_json() == {
        **purge(app.db, app.blobs, app.config.retention, now, dry_run=True).as_json(),
        "dry_run": False,
    }
    assert (again.raw_messages, again.quarantine_entries, again.blobs.deleted) == (0, 0, 0)
    assert _state(app) == after


def test_rules_off_by_default_and_cli(app: App, run_cli: Any) -> None:
    rules = app.config.retention
    # Mail is kept for ever unless a rule says otherwise; only the log of finished
    # webhook deliveries is pruned by default.
    assert (rules.closed_case_raw_days, rules.quarantine_days, rules.dropped_days) == (0, 0, 0)
    assert rules.webhook_days == 30 and rules.enabled
    raw = build_mail(sender="alice@a.test", message_id="<keep@a.test>")
    result = _ingest(app, raw)
    now = app.pipeline.clock()
    app.db.run(
        lambda s: update_case(s, result.case_number, {"status": "closed"}, actor="t", now=now)
    )
    _backdate(app, Case, result.case_number, closed_at=now - timedelta(days=3650))
    before = _state(app)
    done = run_cli("purge", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["raw_messages"] == 0 and data["blobs"]["deleted"] == 0
    assert _state(app) == before
    done = run_cli("purge", "--dry-run", env={"EMAILD_CONFIG": ""})
    assert done.returncode == 0, done.stderr
    assert b"would remove: raw bytes of 0 messages" in done.stdout
    assert b"0 finished webhook deliveries" in done.stdout


def test_daemon_runs_the_purge_daily(make_app: Any, tmp_path: Path) -> None:
    import asyncio
    import threading
    import time
    from datetime import UTC, datetime

    from emaild.daemon import Daemon
    from emaild.privacy.component import JOB_ID, retention_component

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "50-test.toml").write_text(RULES, encoding="utf-8")
    app = make_app(
        "[retention]\ndropped_days = 5\nrun_hour = 4\n",
        EMAILD_RULES_DIR=str(rules),
        EMAILD_SMTP_LISTEN="127.0.0.1:0",
    )
    now = app.pipeline.clock()
    dropped = _ingest(app, build_mail(subject="[noise] x", message_id="<x@d.test>"))
    _backdate(app, Message, dropped.message_row_id, received_at=now - timedelta(days=6))
    _age_blobs(app)
    daemon = Daemon(app, env={}, components=(retention_component,))
    thread = threading.Thread(target=lambda: asyncio.run(daemon.serve()), daemon=True)
    thread.start()
    try:
        assert daemon.ready.wait(30)
        job = daemon.scheduler.get_job(JOB_ID)
        assert job is not None and (job.next_run_time.hour, job.next_run_time.minute) == (4, 0)
        assert daemon.loop is not None
        # Its time has come (the job as scheduled, not a direct call).
        daemon.loop.call_soon_threadsafe(lambda: job.modify(next_run_time=datetime.now(UTC)))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with app.db.session() as s:
                if s.get(Message, dropped.message_row_id) is None:
                    break
            time.sleep(0.1)
        with app.db.session() as s:
            assert s.get(Message, dropped.message_row_id) is None
    finally:
        daemon.request_stop()
        thread.join(30)
    assert not thread.is_alive()


def test_retention_config_is_checked(tmp_path: Path) -> None:
    import pytest

    from emaild.config import load_config
    from emaild.errors import ConfigError

    env = {"HOME": str(tmp_path), "EMAILD_STATE_DIR": str(tmp_path)}
    path = tmp_path / "emaild.toml"
    for bad, key in (
        ("quarantine_days = -1", "quarantine_days"),
        ("run_hour = 24", "run_hour"),
        ("keep_days = 3", "keep_days"),
        ('dropped_days = "5"', "dropped_days"),
    ):
        path.write_text(f"[retention]\n{bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path, env)
        assert key in str(caught.value) and ":2:" in str(caught.value)
    path.write_text("[retention]\ndropped_days = 7\n", encoding="utf-8")
    rules = load_config(path, env).retention
    assert rules.enabled and (rules.dropped_days, rules.quarantine_days) == (7, 0)


def test_finished_webhook_deliveries_are_pruned_pending_ones_kept(
    make_app: Any, tmp_path: Path
) -> None:
    from sqlalchemy import func

    from emaild.privacy.retention import purge
    from emaild.store.models import WebhookAttempt, WebhookDelivery, WebhookEvent

    secret = tmp_path / "hook.secret"
    secret.write_text(make_secret())
    app = make_app(
        f'[[webhook]]\nname = "all"\nurl = "http://127.0.0.1:9/hook"\nsecret_file = "{secret}"\n'
    )
    for n in range(3):
        _ingest(app, build_mail(sender="a@a.test", message_id=f"<w{n}@a.test>"))
    now = app.pipeline.clock()
    with app.db.session() as s:
        ids = list(s.scalars(select(WebhookDelivery.id).order_by(WebhookDelivery.id)))
        assert len(ids) == 6  # case.created and message.received, three times
    old = now - timedelta(days=31)

    def age(session: Any) -> None:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids[:4]))
            .values(created_at=old, status="delivered")
        )
        session.add(WebhookAttempt(delivery_id=ids[0], at=old, status_code=200, duration_ms=5))

    app.db.run(age)
    report = purge(app.db, app.blobs, app.config.retention, now)
    assert report.webhook_deliveries == 4
    with app.db.session() as s:
        assert list(s.scalars(select(WebhookDelivery.id).order_by(WebhookDelivery.id))) == ids[4:]
        assert s.scalar(select(func.count(WebhookAttempt.id))) == 0
        # Only the events of the deliveries left remain.
        assert s.scalar(select(func.count(WebhookEvent.id))) == 2
