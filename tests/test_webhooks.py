"""Webhook delivery end to end: case events POSTed to a real receiver on loopback,
signed (Standard Webhooks), retried on the schedule, in order per case, 410 disables.

Each test runs a real ``Daemon`` with the webhook component against SQLite and
PostgreSQL; the receiver verifies every signature with ``standardwebhooks``.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mailbuilder import build_mail, count
from sqlalchemy import select
from standardwebhooks import Webhook, WebhookVerificationError
from webhook_receiver import (
    LOOPBACK,
    Receiver,
    hook_toml,
    make_secret,
    receiver,
    running,
    wait_until,
)

from emaild.casework.events import MAIL, record
from emaild.casework.ops import add_note, update_case
from emaild.intake import Envelope
from emaild.store.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from emaild.webhooks.sender import encode, sign


def ingest(app: Any, n: int, *, thread_of: int | None = None) -> int:
    headers = f"In-Reply-To: <q{thread_of}@customer.test>\r\n" if thread_of is not None else ""
    subject = f"Question {thread_of if thread_of is not None else n}"
    raw = build_mail(subject=subject, message_id=f"<q{n}@customer.test>", headers=headers)
    result = app.pipeline.ingest(raw, Envelope(channel="pipe"))
    assert result.case_number is not None, result
    return int(result.case_number)


def types(requests: list[Any]) -> list[str]:
    return [r.json["type"] for r in requests]


@pytest.fixture
def hook(tmp_path: Path) -> Any:
    with receiver(stall_seconds=3.0) as r:
        yield r


def app_for(make_app: Any, hook: Receiver, tmp_path: Path, **kw: str) -> Any:
    return make_app(hook_toml(hook.url, hook.secret_file(tmp_path), **kw), **LOOPBACK)


def test_case_events_arrive_signed_with_the_documented_body(
    make_app: Any, hook: Receiver, tmp_path: Path
) -> None:
    app = app_for(make_app, hook, tmp_path)
    number = ingest(app, 1)
    now = app.pipeline.clock()
    app.db.run(
        lambda s: update_case(s, number, {"status": "open", "owner": "bo"}, actor="x", now=now)
    )
    app.db.run(lambda s: add_note(s, number, "internal", actor="x", now=now))
    with running(app):
        got = hook.wait_delivered(4)
    assert types(got) == ["case.created", "message.received", "case.updated", "note.added"]
    assert all(r.verified for r in got), [r.error for r in got]
    created = got[0].json
    assert set(created) == {"type", "timestamp", "data"}
    assert created["data"]["case"]["number"] == number
    assert datetime.fromisoformat(created["timestamp"]).tzinfo is not None
    message = got[1].json["data"]["message"]
    assert message["new_text"].strip() == "Hello."
    assert message["links"]["raw"] == f"/api/v1/messages/{message['id']}/raw"
    changes = got[2].json["data"]["changes"]
    assert {(c["field"], c["to"]) for c in changes} == {("status", "open"), ("owner", "bo")}
    assert got[2].json["data"]["case"]["status"] == "open"  # the summary after the change
    assert got[3].json["data"]["note"]["text"] == "internal"
    assert len({r.id for r in got}) == 4 and all(r.id.startswith("msg_") for r in got)
    for r in got:
        assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= r.headers.keys()
        assert r.headers["content-type"] == "application/json"
    assert count(app, WebhookDelivery, WebhookDelivery.status == "delivered") == 4


def test_rolled_back_change_sends_nothing(make_app: Any, hook: Receiver, tmp_path: Path) -> None:
    app = app_for(make_app, hook, tmp_path)
    number = ingest(app, 1)

    def change_then_fail(session: Any) -> None:
        record(session, number, "note.added", MAIL, app.pipeline.clock(), text="never")
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        app.db.run(change_then_fail)
    assert count(app, WebhookEvent) == 2  # case.created and message.received only
    with running(app):
        got = hook.wait_delivered(2)
    assert types(got) == ["case.created", "message.received"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # timing, not storage
def test_retries_follow_the_schedule_with_one_id(
    make_app: Any, hook: Receiver, tmp_path: Path
) -> None:
    app = app_for(make_app, hook, tmp_path, extra='events = ["case.created"]')
    answers = iter([500, "close", "stall", ("slow", 0.3, 200)])
    hook.plan(lambda _: next(answers))
    ingest(app, 1)
    with running(app):
        hook.wait_delivered(1, timeout=30)
    tries = hook.received
    assert [r.answer for r in tries][:4] == [500, "close", "stall", ("slow", 0.3, 200)]
    assert len(tries) == 4 and len({r.id for r in tries}) == 1 and all(r.verified for r in tries)
    # base 0.2 s doubling, no jitter: waits of 0.2, 0.4, 0.8 s after each failure
    # (the stalled attempt also took its 1 s timeout before the wait began).
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    assert 0.2 <= gaps[0] < 1.2, gaps
    assert 0.4 <= gaps[1] < 1.4, gaps
    assert 1.0 + 0.8 <= gaps[2] < 3.5, gaps
    with app.db.session() as s:
        attempts = list(s.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)))
    assert [a.status_code for a in attempts] == [500, None, None, 200]
    assert "timed out" in attempts[2].error
    assert attempts[1].error  # the connection closed without an answer


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # timing, not storage
def test_a_redirect_is_not_followed(make_app: Any, hook: Receiver, tmp_path: Path) -> None:
    app = app_for(make_app, hook, tmp_path, extra='events = ["case.created"]')
    answers = iter([302, 200])
    hook.plan(lambda _: next(answers))
    ingest(app, 1)
    with running(app):
        hook.wait_delivered(1)
    assert [r.path for r in hook.received] == ["/hook", "/hook"]  # never /hook/elsewhere
    with app.db.session() as s:
        first = s.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).first()
    assert first is not None and first.status_code == 302 and "redirect" in first.error


def test_events_of_one_case_wait_for_each_other_other_cases_do_not(
    make_app: Any, hook: Receiver, tmp_path: Path
) -> None:
    app = app_for(make_app, hook, tmp_path)
    first = ingest(app, 1)
    ingest(app, 2, thread_of=1)  # a second message.received on case 1
    second = ingest(app, 3)
    failures = {"left": 3}

    def decide(request: Any) -> Any:
        body = request.json
        if body["data"]["case"]["number"] == first and failures["left"] > 0:
            failures["left"] -= 1
            return 500
        return 200

    hook.plan(decide)
    with running(app):
        got = hook.wait_delivered(5, timeout=30)
    by_case: dict[int, list[tuple[str, int]]] = {}
    for r in got:
        data = r.json["data"]
        by_case.setdefault(data["case"]["number"], []).append((r.json["type"], r.at))
    assert [t for t, _ in by_case[first]] == [
        "case.created",
        "message.received",
        "message.received",
    ]
    assert [t for t, _ in by_case[second]] == ["case.created", "message.received"]
    # case 2 did not wait for case 1's retries
    assert by_case[second][-1][1] < by_case[first][0][1]
    # nothing of case 1 was sent before its first event got through
    refused = [r for r in hook.received if r.answer == 500]
    assert {r.json["type"] for r in refused} == {"case.created"}


def test_410_gone_disables_the_subscription(make_app: Any, hook: Receiver, tmp_path: Path) -> None:
    app = app_for(make_app, hook, tmp_path)
    hook.answer = 410
    ingest(app, 1)
    with running(app):
        hook.wait_for(lambda got: len(got) >= 1)
        wait_until(lambda: count(app, WebhookSubscription, WebhookSubscription.enabled.is_(False)))
        ingest(app, 2)
        time.sleep(0.3)  # several polls: nothing may go out
    assert len(hook.received) == 1  # nothing after the 410
    with app.db.session() as s:
        sub = s.scalars(select(WebhookSubscription)).one()
    assert not sub.enabled and "410" in sub.disabled_reason
    # what was queued waits, in order, for the subscription to be enabled again;
    # a disabled subscription collects nothing new
    assert count(app, WebhookDelivery, WebhookDelivery.status == "pending") == 2
    assert count(app, WebhookDelivery) == 2
    from emaild.status import gather_status

    status = gather_status(app)
    assert any("webhook test" in line and "410" in line for line in status["attention"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # timing, not storage
def test_a_subscription_failing_long_enough_raises_channel_failing_then_recovers(
    make_app: Any, tmp_path: Path
) -> None:
    with receiver() as bad, receiver() as watcher:
        toml = hook_toml(
            bad.url,
            bad.secret_file(tmp_path, "bad"),
            extra='events = ["case.created"]',
            failing_after_seconds=0.5,
        )
        toml += (
            f'[[webhook]]\nname = "watcher"\nurl = "{watcher.url}"\n'
            f'secret_file = "{watcher.secret_file(tmp_path, "w")}"\n'
            'events = ["channel.failing", "channel.recovered"]\n'
        )
        app = make_app(toml, **LOOPBACK)
        bad.answer = 500
        ingest(app, 1)
        with running(app):
            [alert] = watcher.wait_delivered(1, timeout=20)
            assert alert.json["type"] == "channel.failing"
            assert alert.json["data"]["channel"] == "webhook:test"
            assert "HTTP 500" in alert.json["data"]["error"]
            from emaild.status import gather_status

            attention = gather_status(app)["attention"]
            assert any(line.startswith("webhook test: failing since") for line in attention)
            bad.answer = 200
            got = watcher.wait_delivered(2, timeout=20)
        assert types(got) == ["channel.failing", "channel.recovered"]
        assert all(r.verified for r in got)


def test_tampered_body_or_old_timestamp_fails_verification() -> None:
    secret = make_secret()
    receiver_side = Webhook(secret)
    body = encode({"type": "case.created", "timestamp": "t", "data": {"case": {"number": 7}}})
    now = datetime.now(UTC)
    headers = sign(secret, "msg_1", now, body)
    assert receiver_side.verify(body, headers)["data"]["case"]["number"] == 7
    with pytest.raises(WebhookVerificationError):
        receiver_side.verify(body.replace("7", "8"), headers)
    old = sign(secret, "msg_1", now - timedelta(minutes=10), body)
    with pytest.raises(WebhookVerificationError):
        receiver_side.verify(body, old)
    with pytest.raises(WebhookVerificationError):
        Webhook(make_secret()).verify(body, headers)  # another secret


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SKIP LOCKED
def test_two_daemons_share_the_work_each_event_once_in_case_order(
    make_app: Any, hook: Receiver, tmp_path: Path
) -> None:
    # A delivery that times out at the sender after the receiver got it is sent
    # again (at least once, by design): a loaded machine must not turn the
    # receiver's 20 ms into a timeout here, where "once" is the point.
    toml = hook_toml(hook.url, hook.secret_file(tmp_path), concurrency=4, timeout_seconds=10.0)
    first, second = make_app(toml, **LOOPBACK), make_app(toml, **LOOPBACK)
    hook.plan(lambda _: ("slow", 0.02, 200))
    for n in range(20):
        ingest(first, n)
        ingest(second, 100 + n, thread_of=n)  # a second message on the same case
    with app_events(first) as events, running(first), running(second):
        got = hook.wait_delivered(len(events), timeout=30)
    assert sorted(r.id for r in got) == sorted(events)  # every event, once
    order: dict[int, list[int]] = {}
    for r in got:
        order.setdefault(r.json["data"]["case"]["number"], []).append(events[r.id])
    assert all(ids == sorted(ids) and len(ids) == 3 for ids in order.values()), order


@contextlib.contextmanager
def app_events(app: Any) -> Any:
    with app.db.session() as s:
        yield {e.uid: e.id for e in s.scalars(select(WebhookEvent))}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # timing, not storage
def test_a_delivery_is_given_up_after_max_retry_age_and_the_case_moves_on(
    make_app: Any, hook: Receiver, tmp_path: Path
) -> None:
    app = app_for(make_app, hook, tmp_path, max_retry_age_seconds=0.6)
    number = ingest(app, 1)
    hook.plan(lambda r: 500 if r.json["type"] == "case.created" else 200)
    with running(app):
        [received] = hook.wait_delivered(1, timeout=20)
    assert received.json["type"] == "message.received"  # after case.created gave up
    tries = [r for r in hook.received if r.json["type"] == "case.created"]
    assert len(tries) >= 2 and len({r.id for r in tries}) == 1
    with app.db.session() as s:
        failed = s.scalars(select(WebhookDelivery).where(WebhookDelivery.status == "failed")).one()
    assert failed.case_id == number and failed.last_error.startswith("gave up after")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # a rule, not storage
def test_a_run_time_subscription_to_a_private_target_is_checked_at_every_attempt(
    make_app: Any, hook: Receiver
) -> None:
    from emaild.webhooks import admin

    allowed = make_app("[webhooks]\nallow_private = true\n", **LOOPBACK)
    admin.add(allowed.db, allowed.config, url=hook.url, events=[], addresses=[], name="rt")
    app = make_app(  # allow_private switched off again: the subscription stays, and is refused
        "[webhooks]\nallow_private = false\npoll_interval_seconds = 0.05\n", **LOOPBACK
    )
    ingest(app, 1)
    with running(app):
        wait_until(lambda: admin.deliveries(app.db, failed=True))
    assert hook.received == []
    assert "allow_private" in admin.deliveries(app.db, failed=True)[0]["last_error"]
