"""Alerts: a channel failing past ``alert_after_seconds`` gives one notice and one event,
its recovery one more of each; at most one failure notice per channel per hour.

End to end: the daemon (IMAP poller, alert job, outbox, API) against a real
Dovecot that refuses the mailbox's login until the test fixes the password,
with the notices delivered through a real SMTP relay sink.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiserver import API_TOML, LOOPBACK, ApiServer
from dovecot import Dovecot, ImapUser
from sqlalchemy import select

from emaild.alerts.component import alerts_component
from emaild.alerts.evaluate import FAILING, RECOVERED, Notices, check_channels
from emaild.app import App
from emaild.channels.imap.component import imap_component
from emaild.store.models import ChannelStatus, OpsEvent, OutboxItem

NOTICES = Notices(admin="admin@example.net", sender="support@example.com", domain="example.com")
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def events(app: App) -> list[tuple[str, str]]:
    with app.db.session() as session:
        rows = session.scalars(select(OpsEvent).order_by(OpsEvent.id))
        return [(row.kind, str(row.data["channel"])) for row in rows]


def set_health(app: App, name: str, *, failures: int, since: datetime | None) -> None:
    def work(session: Any) -> None:
        row = session.get(ChannelStatus, name) or ChannelStatus(name=name, kind="imap")
        row.consecutive_failures, row.failing_since = failures, since
        row.last_error = "LOGIN refused" if failures else ""
        session.add(row)

    app.db.run(work)


def check(app: App, now: datetime, alert_after: float = 300) -> list[str]:
    changes = app.db.run(
        lambda s: check_channels(
            s, names={"imap:box", "relay"}, alert_after=alert_after, now=now, notices=NOTICES
        )
    )
    return [c.event for c in changes]


def test_one_notice_per_streak_and_at_most_one_failure_notice_an_hour(app: App) -> None:
    set_health(app, "imap:box", failures=2, since=T0)
    set_health(app, "imap:stale", failures=9, since=T0)  # not this daemon's: never alerted
    assert check(app, T0 + timedelta(seconds=299)) == []  # not failing long enough yet
    assert check(app, T0 + timedelta(seconds=300)) == [FAILING]
    assert check(app, T0 + timedelta(seconds=400)) == []  # said once; still failing
    set_health(app, "imap:box", failures=0, since=None)
    assert check(app, T0 + timedelta(minutes=10)) == [RECOVERED]
    # It fails again at once: a second failure notice waits out the hour after
    # the first one (sent at minute 5).
    set_health(app, "imap:box", failures=1, since=T0 + timedelta(minutes=11))
    assert check(app, T0 + timedelta(minutes=30)) == []
    assert check(app, T0 + timedelta(minutes=64)) == []
    assert check(app, T0 + timedelta(minutes=66)) == [FAILING]
    assert events(app) == [(FAILING, "imap:box"), (RECOVERED, "imap:box"), (FAILING, "imap:box")]
    with app.db.session() as session:
        queued = list(session.scalars(select(OutboxItem).order_by(OutboxItem.id)))
    assert [(q.rcpt_to, q.kind, q.mail_from) for q in queued] == [
        ("admin@example.net", "alert", "")
    ] * 3
    assert b"Subject: emaild: imap:box is failing" in queued[0].raw
    assert b"LOGIN refused" in queued[0].raw
    assert b"Subject: emaild: imap:box works again" in queued[1].raw


def break_login(dovecot: Dovecot, user: ImapUser, password: str) -> None:
    """Give ``user`` another password in Dovecot's passwd file (seen within a second)."""
    entry = dovecot.passwd_dir / user.name
    entry.write_text(f"{user.name}:{{PLAIN}}{password}::::{user.home}::\n", encoding="utf-8")


@pytest.mark.dovecot
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # both: the test above
def test_dovecot_refusing_the_login_gives_one_notice_and_one_event_and_recovery_one_more(
    dovecot: Dovecot, make_app: Any, relay_sink: Any, tmp_path: Path
) -> None:
    user = dovecot.new_user()
    break_login(dovecot, user, "not-what-emaild-has")
    toml = (
        API_TOML
        + dovecot.mailbox_toml(user, idle=False, poll_interval_seconds=300.0)
        + '[alerts]\nadmin_address = "admin@example.net"\nalert_after_seconds = 1.5\n'
        + "check_interval_seconds = 0.2\n"
        + "[metrics]\ncache_seconds = 0.0\n"
    )
    app = make_app(toml, **LOOPBACK, **relay_sink.relay_env)
    server = ApiServer(app, components=(imap_component, alerts_component)).start()
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            [notice] = relay_sink.wait_for(1, timeout=20)
            assert list(notice.rcpt_tos) == ["admin@example.net"]
            assert notice.message()["Subject"] == "emaild: imap:support is failing"
            assert "authentication failed" in notice.message().get_content().lower()
            assert events(app) == [(FAILING, "imap:support")]
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["problems"][0].startswith("channel imap:support failing for")
            time.sleep(1.1)  # more checks and failed polls: nothing more is said
            assert len(relay_sink.received()) == 1
            break_login(dovecot, user, user.password)  # the admin fixes the account
            mails = relay_sink.wait_for(2, timeout=30)
            assert mails[1].message()["Subject"] == "emaild: imap:support works again"
            assert events(app) == [(FAILING, "imap:support"), (RECOVERED, "imap:support")]
            assert client.get("/readyz").status_code == 200
            time.sleep(0.6)
            assert len(relay_sink.received()) == 2
            assert len(events(app)) == 2
    finally:
        server.stop()
