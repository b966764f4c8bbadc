"""Compare channel health with what was last said about it; say what changed.

A channel is *failing* once it has failed without a success in between for
``alert_after`` seconds (``channel_status.failing_since``). Then, once:
``channel_alerts.state`` becomes "failing", a ``channel.failing`` event is
emitted and a notice is queued for the admin. When the channel works again:
state "ok", ``channel.recovered`` and a second notice. A channel that fails
again within the hour after its last failure notice waits until the hour is
over (and is alerted then if it still fails): at most one failure notice per
channel per hour, however it flaps. Everything is in the database, so a
restart neither repeats nor forgets a notice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.alerts.events import emit
from emaild.classify import LOOP_HEADER
from emaild.outbox.queue import enqueue
from emaild.store.models import ChannelAlert, ChannelStatus
from emaild.text import one_line

NOTICE_EVERY = timedelta(hours=1)
FAILING = "channel.failing"
RECOVERED = "channel.recovered"


@dataclass(frozen=True)
class Notices:
    """Where notices go: ``admin`` ("" = events only), from ``sender``."""

    admin: str
    sender: str
    domain: str


@dataclass(frozen=True)
class Change:
    channel: str
    event: str
    data: dict[str, Any]


def check_channels(
    session: Session,
    *,
    names: set[str],
    alert_after: float,
    now: datetime,
    notices: Notices,
) -> list[Change]:
    """Record, emit and queue what changed for the channels in ``names``."""
    changes = []
    rows = session.scalars(select(ChannelStatus).where(ChannelStatus.name.in_(sorted(names))))
    for row in rows:
        alert = session.get(ChannelAlert, row.name)
        if alert is None:
            alert = ChannelAlert(name=row.name, state="ok", changed_at=now)
            session.add(alert)
        change = _change(row, alert, alert_after, now)
        if change is None:
            continue
        emit(session, change.event, change.data, now)
        if notices.admin:
            enqueue(
                session,
                _notice(change, row, notices, now),
                mail_from="",
                rcpt_to=notices.admin,
                now=now,
                kind="alert",
            )
        changes.append(change)
    return changes


def _change(
    row: ChannelStatus, alert: ChannelAlert, alert_after: float, now: datetime
) -> Change | None:
    data: dict[str, Any] = {"channel": row.name, "kind": row.kind}
    if alert.state == "failing":
        if row.consecutive_failures:
            return None
        alert.state, alert.changed_at = "ok", now
        data["failing_since"] = _iso(alert.failing_since)
        data["recovered_at"] = _iso(row.last_success_at or now)
        return Change(row.name, RECOVERED, data)
    since = row.failing_since
    if not row.consecutive_failures or since is None:
        return None
    if (now - since).total_seconds() < alert_after:
        return None
    if alert.notified_at is not None and now - alert.notified_at < NOTICE_EVERY:
        return None
    alert.state, alert.changed_at = "failing", now
    alert.failing_since, alert.notified_at = since, now
    data.update(
        failing_since=_iso(since),
        failures=row.consecutive_failures,
        error=one_line(row.last_error, 500),
    )
    return Change(row.name, FAILING, data)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when else None


def _notice(change: Change, row: ChannelStatus, notices: Notices, now: datetime) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"emaild <{notices.sender}>"
    msg["To"] = notices.admin
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("emaild.alert", domain=notices.domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg[LOOP_HEADER] = notices.sender
    data = change.data
    if change.event == FAILING:
        msg["Subject"] = f"emaild: {row.name} is failing"
        body = (
            f"The channel {row.name} has been failing since {data['failing_since']} "
            f"({data['failures']} failures in a row).\n\nLast error:\n    {data['error']}\n\n"
            "Mail on this channel waits until it works again. See 'emaild status' on the "
            "server. You will get one more message when it recovers; while it keeps "
            "failing, no more than one of these an hour.\n"
        )
    else:
        msg["Subject"] = f"emaild: {row.name} works again"
        body = (
            f"The channel {row.name}, failing since {data['failing_since']}, works again "
            f"since {data['recovered_at']}.\n"
        )
    msg.set_content(body)
    return msg
