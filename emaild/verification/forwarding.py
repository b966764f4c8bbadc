"""``emaild address test-forwarding``: send a marked message out, wait for it to come back.

The message goes to the support address through the configured relay, like
any mail a customer sends. Whichever channel brings it back (SMTP/LMTP from
the provider's forwarding, an IMAP mailbox the daemon polls, the pipe), the
``verify`` stage recognises its token, records the arrival on the token row
and stores it without a case. This command only watches that row, so it
works against a running daemon in another process. The report names the
path (channel, hops, rewritten headers) and the delay, or, on timeout,
everything that was checked and the likely causes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.accept_from import sender_allowed
from emaild.errors import InputError, TransientError
from emaild.outbox import enqueue
from emaild.store.models import ChannelStatus, Message, QuarantineEntry, VerificationToken
from emaild.verification.admin import deliver_now, utc_now
from emaild.verification.outgoing import forwarding_test_message
from emaild.verification.tokens import FORWARDING, TEST_HEADER, find_tokens, issue, token_hash

if TYPE_CHECKING:
    from emaild.app import App

POLL_SECONDS = 0.25


@dataclass
class ForwardingReport:
    """The outcome of one forwarding test, for people (``lines``) and scripts (JSON)."""

    address: str
    relay: str
    ok: bool = False
    outbox_id: int | None = None
    relay_status: str = ""
    relay_error: str = ""
    sent_at: datetime | None = None
    arrived_at: datetime | None = None
    delay_seconds: float | None = None
    channel: str = ""
    path: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("sent_at", "arrived_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    def lines(self) -> list[str]:
        """The report as text an admin reads top to bottom."""
        if self.ok:
            out = [
                f"forwarding works: the test message to {self.address} came back "
                f"via {self.channel} within {self.delay_seconds:.2f}s",
                "path:",
                *(f"  {hop}" for hop in self.path),
            ]
            out += [f"note: {n}" for n in self.notes]
            return out
        out = [f"forwarding test for {self.address} FAILED"]
        out += ["checked:", *(f"  - {c}" for c in self.checked)]
        out += ["likely causes:", *(f"  - {c}" for c in self.causes)]
        return out


def run_forwarding_test(
    app: App,
    address: str,
    *,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> ForwardingReport:
    """Send the marked message, wait up to ``timeout`` seconds, report."""
    book = app.pipeline.addresses
    book.invalidate()
    entry = book.entry(address)
    if entry is None:
        raise InputError(
            f"no routing address {address.strip().lower()} (see 'emaild address list')"
        )
    routing = entry.routing
    if not routing.enabled:
        raise InputError(
            f"{routing.address} is disabled, so emaild refuses its mail: "
            f"'emaild address enable {routing.address}' first"
        )
    relay = f"{app.config.relay.host}:{app.config.relay.port}"
    report = ForwardingReport(address=routing.address, relay=relay)
    now = utc_now(app)
    ttl = timedelta(hours=app.config.verification.token_ttl_hours)
    domain = app.services.signer.domain_for(routing.address)

    def queue(session: Session) -> tuple[int, int]:
        token, row = issue(
            session,
            app.services.tokens,
            address=routing.address,
            purpose=FORWARDING,
            now=now,
            ttl=ttl,
        )
        message = forwarding_test_message(routing, token, now=now, domain=domain)
        item = enqueue(
            session,
            message,
            mail_from=routing.address,
            rcpt_to=routing.address,
            now=now,
            kind="fwdtest",
        )
        return row.id, item.id

    token_id, outbox_id = app.db.run(queue)
    report.outbox_id = outbox_id
    # The round trip is timed on this process's clock: a forwarder may hand the
    # message back before the relay's answer is recorded (sent_at is then later
    # than the arrival), and the app's clock can be a fixed one.
    started = monotonic()
    delivery = deliver_now(app, outbox_id)
    report.relay_status, report.relay_error = delivery.status, delivery.error
    if delivery.status != "sent":
        report.checked.append(
            f"the relay {relay} did not accept the test message "
            f"({delivery.status}, {delivery.attempts} attempt(s)): {delivery.error or 'no answer'}"
        )
        report.causes += _relay_causes(relay, delivery.status)
        return report
    report.sent_at = _sent_at(app, outbox_id) or now
    deadline = monotonic() + timeout
    while True:
        try:
            arrival = _arrival(app, token_id)
        except TransientError:
            arrival = None  # the database is busy (the daemon is writing): ask again
        if arrival is not None:
            report.delay_seconds = round(monotonic() - started, 3)
            _describe_arrival(app, report, *arrival)
            return report
        if monotonic() >= deadline:
            break
        sleep(min(POLL_SECONDS, max(0.0, deadline - monotonic())))
    _diagnose(app, report, token_id, timeout)
    return report


def _sent_at(app: App, outbox_id: int) -> datetime | None:
    from emaild.store.models import OutboxItem

    with app.db.session() as session:
        item = session.get(OutboxItem, outbox_id)
        return item.sent_at if item is not None else None


def _arrival(app: App, token_id: int) -> tuple[VerificationToken, Message | None] | None:
    with app.db.session() as session:
        token = session.get(VerificationToken, token_id)
        if token is None or token.used_at is None:
            return None
        message = session.get(Message, token.message_row_id) if token.message_row_id else None
        session.expunge_all()
        return token, message


def _describe_arrival(
    app: App, report: ForwardingReport, token: VerificationToken, message: Message | None
) -> None:
    assert token.used_at is not None
    report.ok = True
    report.arrived_at = token.used_at
    report.channel = token.used_via
    report.path.append(f"sent: relay {report.relay} accepted it (outbox {report.outbox_id})")
    if message is None:
        report.path.append(f"arrived: via {token.used_via}")
        return
    headers = [(str(k), str(v)) for k, v in (message.headers or [])]
    # Received headers are prepended, so the oldest hop is the last one.
    for value in reversed([v for k, v in headers if k.lower() == "received"]):
        report.path.append("hop: " + " ".join(value.split(";")[0].split()))
    for name in ("X-Original-To", "Delivered-To", "X-Forwarded-To", "X-Forwarded-For"):
        for value in (v for k, v in headers if k.lower() == name.lower()):
            report.path.append(f"{name}: {value}")
    envelope = f" for {', '.join(message.envelope_to)}" if message.envelope_to else ""
    sender = f" from {message.envelope_from}" if message.envelope_from else ""
    report.path.append(
        f"arrived: via {message.channel}{sender}{envelope}, stored as message "
        f"{message.id} without a case"
    )
    if not headers:
        report.notes.append(
            f"headers are not saved for {message.routing_address} (save_headers = false), "
            "so the hops cannot be shown"
        )
        return
    if not any(k.lower() == TEST_HEADER.lower() for k, _ in headers):
        report.notes.append(
            f"the {TEST_HEADER} header was removed on the way; the marker was found in "
            "the subject or body. Scripts looking for emaild's headers on forwarded "
            "mail will not find them."
        )
    sender = message.from_addr.lower()
    if sender and sender != report.address:
        report.notes.append(
            f"the From address was rewritten to {sender} on the way (forwarders "
            "that do this hide the customer's address: replies would go to the forwarder)"
        )


def _relay_causes(relay: str, status: str) -> list[str]:
    causes = [
        f"the relay {relay} is down, unreachable, or dropped the connection: check "
        "[relay] host/port (or EMAILD_SMTP_RELAY) and the relay's logs",
        "the relay refuses this sender or recipient (authentication, relaying "
        "not allowed for this host): check [relay] username/password_file and the "
        "relay's policy",
    ]
    if status == "queued":
        causes.append("it stays in the outbox and is retried; run the test again later")
    return causes


def _diagnose(app: App, report: ForwardingReport, token_id: int, timeout: float) -> None:
    config = app.config
    routing = app.pipeline.addresses.lookup(report.address)
    report.checked.append(
        f"the relay {report.relay} accepted the test message (outbox {report.outbox_id})"
    )
    listeners = [f"SMTP {a}" for a in config.smtp.listen]
    listeners += [f"LMTP {a}" for a in config.smtp.lmtp_listen]
    mailboxes = [f"IMAP {m.name} ({m.user}@{m.host})" for m in config.mailbox]
    report.checked.append(
        f"no message carrying the marker reached emaild within {timeout:g}s on any "
        f"channel ({', '.join(listeners + mailboxes) or 'none configured'})"
    )
    with app.db.session() as session:
        channels = list(session.scalars(select(ChannelStatus).order_by(ChannelStatus.name)))
        quarantined = _quarantined_copy(session, token_id)
    for row in channels:
        report.checked.append(_channel_line(row))
    if quarantined is not None:
        report.checked.append(
            f"it did arrive but was quarantined (entry {quarantined.id}, stage "
            f"{quarantined.stage}): {quarantined.error}"
        )
        report.causes.append(
            f"emaild could not process it: see 'emaild quarantine show {quarantined.id}'"
        )
        return
    via_imap = (
        f" or deliver it to the IMAP mailbox emaild polls ({mailboxes[0]})" if mailboxes else ""
    )
    report.causes.append(
        f"forwarding from {report.address} to emaild is not set up, or points "
        "elsewhere: at the mail provider, forward it to emaild's SMTP/LMTP listener "
        f"({', '.join(config.smtp.listen + config.smtp.lmtp_listen) or 'none'}){via_imap}"
    )
    report.causes.append(
        f"the provider's spam filter kept it: look in the junk/spam folder of "
        f"{report.address} and allow mail from the relay {report.relay}"
    )
    report.causes.append(
        "a forwarder rewrote it so the marker was lost (subject and body replaced, or "
        "the message wrapped as an attachment): forward as-is, not as an attachment"
    )
    if routing is not None and not sender_allowed(routing, routing.address):
        report.causes.append(
            f"accept_from of {report.address} does not allow mail from {routing.address} "
            "itself, so the listener refused the test message: add its domain to accept_from"
        )
    if not channels:
        report.causes.append(
            "no emaild channel has ever reported to this database: is the daemon running "
            "('emaild run' / 'systemctl status emaild') with the same configuration?"
        )
    else:
        latest = max((r.last_success_at for r in channels if r.last_success_at), default=None)
        seen = latest.isoformat(timespec="seconds") if latest else "never"
        report.causes.append(
            "the daemon is not running or its listener is not reachable from the "
            f"forwarding server (last message received by any channel: {seen})"
        )
    slow = [m for m in config.mailbox if m.poll_interval_seconds >= timeout and not m.idle]
    for mailbox in slow:
        report.causes.append(
            f"IMAP mailbox {mailbox.name} is polled every {mailbox.poll_interval_seconds:g}s, "
            f"longer than this test waited: rerun with --timeout "
            f"{int(mailbox.poll_interval_seconds * 2)}"
        )


def _channel_line(row: ChannelStatus) -> str:
    def ago(when: datetime | None) -> str:
        return when.isoformat(timespec="seconds") if when else "never"

    line = f"channel {row.name}: last success {ago(row.last_success_at)}"
    if row.last_failure_at:
        line += f", last failure {ago(row.last_failure_at)} ({row.last_error[:120]})"
    return line


def _quarantined_copy(session: Session, token_id: int) -> QuarantineEntry | None:
    """A quarantine entry whose headers carry this test's marker, if any."""
    token = session.get(VerificationToken, token_id)
    if token is None:
        return None
    since = token.created_at
    for entry in session.scalars(
        select(QuarantineEntry)
        .where(QuarantineEntry.created_at >= since)
        .order_by(QuarantineEntry.id)
    ):
        if any(token_hash(t) == token.token_hash for t in find_tokens([entry.headers])):
            return entry
    return None
