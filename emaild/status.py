"""``emaild status``: the one screen an admin reads to see whether emaild is healthy.

Everything comes from the database, so the command works the same whether
the daemon runs here, elsewhere, or not at all: routing addresses with their
verification state and held mail, each channel's last success and failure
(``channel_status``, written by the daemon), the outbox by status, webhook
subscriptions (failing or disabled ones need attention), the quarantine, and
which process holds which cluster-wide lock (``emaild.cluster``: mailboxes,
singleton jobs).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from emaild.cluster.holders import live_holders
from emaild.store.models import ChannelStatus, OutboxItem, QuarantineEntry
from emaild.webhooks.subscriptions import webhook_status

if TYPE_CHECKING:
    from emaild.app import App

OUTBOX_STATUSES = ("queued", "sent", "failed")


def gather_status(app: App) -> dict[str, Any]:
    """The status as JSON-ready data (``emaild status --json``)."""
    from emaild.verification.admin import list_addresses

    now = app.pipeline.clock()
    addresses = [
        {
            k: a[k]
            for k in (
                "address",
                "source",
                "in_use",
                "problem",
                "enabled",
                "verified",
                "verified_via",
                "held_messages",
            )
        }
        for a in list_addresses(app)
    ]
    with app.db.session() as session:
        channels = [_channel_json(row) for row in session.scalars(select(ChannelStatus))]
        outbox = {status: 0 for status in OUTBOX_STATUSES}
        for status, n in session.execute(
            select(OutboxItem.status, func.count(OutboxItem.id)).group_by(OutboxItem.status)
        ):
            outbox[str(status)] = int(n)
        oldest: datetime | None = session.scalar(
            select(func.min(OutboxItem.created_at)).where(OutboxItem.status == "queued")
        )
        last_error = session.scalars(
            select(OutboxItem.last_error)
            .where(OutboxItem.status.in_(("queued", "failed")), OutboxItem.last_error != "")
            .order_by(OutboxItem.id.desc())
            .limit(1)
        ).first()
        errors = int(
            session.scalar(
                select(func.count(QuarantineEntry.id)).where(
                    QuarantineEntry.status == "held", QuarantineEntry.reason == "error"
                )
            )
            or 0
        )
        quarantine = {
            str(status): int(n)
            for status, n in session.execute(
                select(QuarantineEntry.status, func.count(QuarantineEntry.id)).group_by(
                    QuarantineEntry.status
                )
            )
        }
        webhooks = webhook_status(session, now, app.config.webhooks.failing_after_seconds)
        holders = live_holders(session, now)
    configured = _configured_channels(app)
    seen = {c["name"] for c in channels}
    channels += [
        {
            "name": name,
            "kind": kind,
            "last_success_at": None,
            "last_failure_at": None,
            "last_error": "",
            "consecutive_failures": 0,
            "reported": False,
        }
        for name, kind in configured
        if name not in seen
    ]
    channels.sort(key=lambda c: str(c["name"]))
    data = {
        "generated_at": now.isoformat(),
        "config": app.config.source or "(built-in defaults)",
        "database": make_url(app.config.database_url).render_as_string(hide_password=True),
        "addresses": addresses,
        "channels": channels,
        "outbox": {
            **outbox,
            "oldest_queued_at": oldest.isoformat() if oldest else None,
            "last_error": last_error or "",
        },
        "quarantine": {"held": quarantine.get("held", 0), "by_status": quarantine},
        "relay": {
            "address": f"{app.config.relay.host}:{app.config.relay.port}",
            "configured": app.config.relay_configured,
        },
        "webhooks": webhooks,
        "holders": _with_idle_mailboxes(app, holders),
        "held_messages": sum(int(a["held_messages"]) for a in addresses),
        "quarantine_errors": errors,
    }
    data["attention"] = attention(data)
    return data


def attention(data: dict[str, Any]) -> list[str]:
    """What an admin must look at; empty means healthy (``emaild status`` exits 0).

    Routine outcomes are not listed: mail a rule or accept-from held, mail held
    for an unverified address, a queued auto-response still within its retries.
    """
    out = [
        f"address {a['address']}: {a['problem']}"
        for a in data["addresses"]
        if a["problem"] and a["enabled"]
    ]
    out += [
        f"channel {c['name']}: {c['consecutive_failures']} failures in a row: {c['last_error']}"
        for c in data["channels"]
        if c["consecutive_failures"]
    ]
    relay = data["relay"]
    if not relay["configured"] and data["outbox"]["queued"] and data["outbox"]["last_error"]:
        out.append(
            f"outbox: no relay configured ([relay] host), the default {relay['address']} "
            f"fails: {data['outbox']['queued']} queued"
        )
    if data["outbox"]["failed"]:
        out.append(
            f"outbox: {data['outbox']['failed']} failed (emaild outbox list --status failed)"
        )
    out += [f"webhook {w['name']}: {w['problem']}" for w in data["webhooks"] if w["problem"]]
    if data["quarantine_errors"]:
        out.append(
            f"quarantine: {data['quarantine_errors']} messages failed processing"
            " (emaild quarantine list)"
        )
    return out


def _channel_json(row: ChannelStatus) -> dict[str, Any]:
    return {
        "name": row.name,
        "kind": row.kind,
        "last_success_at": row.last_success_at.isoformat() if row.last_success_at else None,
        "last_failure_at": row.last_failure_at.isoformat() if row.last_failure_at else None,
        "last_error": row.last_error,
        "consecutive_failures": row.consecutive_failures,
        "reported": True,
    }


def _with_idle_mailboxes(app: App, holders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The live holders plus a ``holder: None`` entry for each enabled mailbox nobody holds."""
    held = {h["name"] for h in holders}
    idle = [
        {"name": f"imap:{m.name}", "holder": None, "host": None, "pid": None}
        | {"since": None, "heartbeat_at": None}
        for m in app.config.mailbox
        if m.enabled and f"imap:{m.name}" not in held
    ]
    return sorted(holders + idle, key=lambda h: str(h["name"]))


def _configured_channels(app: App) -> list[tuple[str, str]]:
    """Channels the config asks for, named as the daemon names their status rows."""
    smtp = app.config.smtp
    names = [(f"smtp:{a}", "smtp") for a in smtp.listen]
    names += [(f"lmtp:{a}", "lmtp") for a in smtp.lmtp_listen]
    names += [(f"imap:{m.name}", "imap") for m in app.config.mailbox]
    return names


def age(when: str | None, now: str) -> str:
    """``3m ago`` style text for an ISO timestamp (``never`` for None)."""
    if not when:
        return "never"
    seconds = (datetime.fromisoformat(now) - datetime.fromisoformat(when)).total_seconds()
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
