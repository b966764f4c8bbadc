"""Deliver due outbox items through the relay: claim, send, record, one by one.

For each item: claim it (a committed compare-and-set), send it over one
shared relay session, then record the outcome in a new transaction:

- relay accepted: ``sent``; the message is stored on its case as an outbound
  ``Message`` (raw bytes in the blob store) so the case shows what the
  customer got and replies to it thread by Message-ID;
- 4xx, or the relay unavailable: attempts + 1 and the next try waits
  ``retry_base_seconds * 2**attempts`` (at most ``retry_max_seconds``); after
  ``max_attempts`` the item is ``failed``;
- 5xx: ``failed`` at once; if the refusal was about the recipient, the
  recipient goes into ``suppressed_recipients`` and gets no more auto-responses.

When the relay cannot be reached the run stops after the first item: the rest
stay queued untouched and go out on a later run, once it is back.

A sent item is never sent again. The one window where a message can go out
twice is a crash between the relay's 250 and our commit of ``sent``: the
claim then lapses and a later run re-sends it, with the same Message-ID, so
the recipient's mail client shows it once.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.casework import events
from emaild.channels.health import ChannelHealth
from emaild.clock import utcnow
from emaild.outbox import queue
from emaild.outbox.relay import DeliveryFailed, RelaySession, RelayUnavailable
from emaild.store.models import Message

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.outbox")

# Ids fetched per query; a run walks the queue in id order, each item once.
BATCH = 200


@dataclass
class DeliveryReport:
    """What one delivery run did."""

    sent: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: int = 0  # claimed by another process first
    sender_refused: int = 0  # 5xx to MAIL FROM: the relay refuses us, not a recipient
    relay_error: str = ""

    @property
    def attempted(self) -> int:
        return len(self.sent) + len(self.deferred) + len(self.failed)

    def summary(self) -> str:
        text = f"sent {len(self.sent)}, deferred {len(self.deferred)}, failed {len(self.failed)}"
        return text + (f" (relay: {self.relay_error})" if self.relay_error else "")


def worker_name() -> str:
    """Who holds a claim: host, process and a random part (two runs in one process differ)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# Default relays already reported as unavailable by this process (see _deliver_one).
_SAID_NO_RELAY: set[tuple[str, int]] = set()


def retry_delay(attempts_before: int, base: float, ceiling: float) -> float:
    """Seconds to wait after the ``attempts_before + 1``-th failed attempt."""
    return float(min(ceiling, base * (2 ** min(attempts_before, 32))))


def deliver_due(
    app: App,
    *,
    ignore_schedule: bool = False,
    limit: int | None = None,
    clock: Callable[[], datetime] = utcnow,
    health: ChannelHealth | None = None,
) -> DeliveryReport:
    """Send every queued item whose time has come (every queued item with
    ``ignore_schedule``), each at most once in this run; at most ``limit`` items.

    ``health`` (the daemon's) records the relay as a channel: unavailable or
    refusing our sender is a failure, a message accepted a success.
    """
    relay = app.config.relay
    report = DeliveryReport()
    worker = worker_name()
    lease = max(300.0, relay.timeout_seconds * 10)
    # Our EHLO name: the listener's configured hostname, else smtplib's FQDN lookup.
    session = RelaySession(relay, local_hostname=app.config.smtp.hostname or None)
    cursor, budget = 0, limit
    try:
        while budget is None or budget > 0:
            batch = min(BATCH, budget) if budget is not None else BATCH
            ids = app.db.run(
                partial(
                    queue.due_ids,
                    now=clock(),
                    ignore_schedule=ignore_schedule,
                    limit=batch,
                    after_id=cursor,
                )
            )
            if not ids:
                break
            for item_id in ids:
                cursor = item_id
                if budget is not None:
                    budget -= 1
                claim = partial(_claim, item_id=item_id, worker=worker, now=clock(), lease=lease)
                item = app.db.run(claim)
                if item is None:
                    report.skipped += 1  # another process got there first
                    continue
                before = (len(report.sent), report.sender_refused)
                delivered = _deliver_one(app, session, item, worker, report, clock)
                if health is not None:
                    _record_health(health, report, before, delivered)
                if not delivered:
                    return report  # the relay is unavailable: the rest wait for a later run
    finally:
        session.close()
        if report.attempted:
            log.info(
                "outbox.run",
                sent=len(report.sent),
                deferred=len(report.deferred),
                failed=len(report.failed),
                relay_error=report.relay_error,
            )
    return report


def _record_health(
    health: ChannelHealth, report: DeliveryReport, before: tuple[int, int], delivered: bool
) -> None:
    if len(report.sent) > before[0]:
        health.success()
    elif not delivered or report.sender_refused > before[1]:
        health.failure(report.relay_error)


def _claim(
    session: Session, *, item_id: int, worker: str, now: datetime, lease: float
) -> queue.Claimed | None:
    if not queue.claim(session, item_id, worker, now, lease):
        return None
    return queue.load_claimed(session, item_id)


def _deliver_one(
    app: App,
    session: RelaySession,
    item: queue.Claimed,
    worker: str,
    report: DeliveryReport,
    clock: Callable[[], datetime],
) -> bool:
    """Send one claimed item and record the outcome; False if the relay is unavailable."""
    bound = log.bind(outbox=item.id, to=item.rcpt_to, case=item.case_id, kind=item.kind)
    try:
        reply = session.send(item.mail_from, item.rcpt_to, item.raw)
    except RelayUnavailable as exc:
        report.relay_error = str(exc)
        _temporary(app, item, worker, str(exc), report, clock)
        relay = app.config.relay
        if app.config.relay_configured:
            bound.warning("outbox.relay_unavailable", error=str(exc), attempts=item.attempts + 1)
        elif (relay.host, relay.port) not in _SAID_NO_RELAY:
            # Once per process, not per retry: a fresh install without an MTA.
            _SAID_NO_RELAY.add((relay.host, relay.port))
            log.warning(
                "outbox.no_relay",
                error=str(exc),
                hint=f"no relay configured ([relay] host, port); the default "
                f"{relay.host}:{relay.port} is unavailable; outgoing mail waits",
            )
        return False
    except DeliveryFailed as exc:
        if exc.permanent and exc.stage == "mail":
            report.relay_error = f"relay refuses our sender: {exc}"
            report.sender_refused += 1
        if exc.permanent:
            _permanent(app, item, worker, exc, report, clock)
            bound.warning("outbox.failed", error=str(exc), suppressed=exc.recipient_fault)
        else:
            _temporary(app, item, worker, str(exc), report, clock)
            bound.info("outbox.deferred", error=str(exc), attempts=item.attempts + 1)
        return True
    raw_sha, _ = app.blobs.put(item.raw)

    def record(s: Session) -> None:
        now = clock()
        queue.mark_sent(s, item.id, now)
        stored = store_outbound(app, s, item, raw_sha, now)
        if stored is not None and item.case_id is not None:
            # The case's history (and its webhooks): what went to whom, once sent.
            sent = {"message": stored.id, "to": item.rcpt_to, "outbox_kind": item.kind}
            events.record(s, item.case_id, "message.sent", events.MAIL, now, **sent)

    app.db.run(record, attempts=3)
    report.sent.append(item.id)
    bound.info("outbox.sent", reply=reply, attempts=item.attempts + 1)
    return True


def _temporary(
    app: App,
    item: queue.Claimed,
    worker: str,
    error: str,
    report: DeliveryReport,
    clock: Callable[[], datetime],
) -> None:
    relay = app.config.relay
    if item.attempts + 1 >= relay.max_attempts:
        message = f"gave up after {item.attempts + 1} attempts: {error}"
        app.db.run(lambda s: queue.mark_failed(s, item.id, worker, clock(), message))
        report.failed.append(item.id)
        return
    delay = retry_delay(item.attempts, relay.retry_base_seconds, relay.retry_max_seconds)
    app.db.run(lambda s: queue.mark_retry(s, item.id, worker, clock(), error, delay))
    report.deferred.append(item.id)


def _permanent(
    app: App,
    item: queue.Claimed,
    worker: str,
    failure: DeliveryFailed,
    report: DeliveryReport,
    clock: Callable[[], datetime],
) -> None:
    def record(s: Session) -> None:
        now = clock()
        queue.mark_failed(s, item.id, worker, now, str(failure))
        if failure.recipient_fault:
            queue.suppress(s, item.rcpt_to, f"relay refused delivery: {failure}", now)

    app.db.run(record)
    report.failed.append(item.id)


def store_outbound(
    app: App, session: Session, item: queue.Claimed, raw_sha: str, now: datetime
) -> Message | None:
    """Keep a sent message on its case as an outbound ``Message`` (once)."""
    from emaild.mime.parse import parse_message

    if item.case_id is None:
        return None
    key = f"mid:{item.message_id}" if item.message_id else f"sha256:{raw_sha}"
    existing = session.scalars(select(Message).where(Message.dedup_key == key)).first()
    if existing is not None:
        return existing
    limits = app.config.limits
    parsed = parse_message(
        item.raw, spool_threshold=limits.spool_part_bytes, sink=app.blobs, raw_sha256=raw_sha
    )
    message = Message(
        case_id=item.case_id,
        direction="out",
        state="stored",
        dedup_key=key,
        message_id=parsed.message_id,
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        from_addr=parsed.from_addr,
        from_name=parsed.from_.name if parsed.from_ else "",
        reply_to=parsed.reply_to.addr if parsed.reply_to else "",
        to=[str(a) for a in parsed.to],
        cc=[str(a) for a in parsed.cc],
        subject=parsed.subject,
        text=parsed.text,
        html=parsed.html,
        new_text=parsed.text,
        headers=[list(h) for h in parsed.headers],
        raw_sha256=raw_sha,
        raw_size=len(item.raw),
        channel="outbox",
        envelope_from=item.mail_from,
        envelope_to=[item.rcpt_to],
        routing_address=item.mail_from,
        is_auto=True,
        date=parsed.date,
        received_at=now,
        decision_trace=[{"stage": "outbox", "decision": "sent", "outbox": item.id}],
    )
    session.add(message)
    session.flush()
    return message
