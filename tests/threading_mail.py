"""Building the mail the threading tests exchange: customer messages and emaild's replies.

Outgoing mail is built with the threading API (signed Message-ID, subject and
body tokens from ``services.signer``) and queued with the real outbox
``enqueue``, exactly as auto-responses are; so what a reply can refer to is
what emaild really records.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select

from emaild.app import App
from emaild.correlation.tokens import CaseSigner
from emaild.outbox.queue import enqueue
from emaild.pipeline import Envelope, IngestResult
from emaild.store.models import Case, CaseParticipant, Message

SUPPORT = "support@example.com"


def mail(
    *,
    mid: str,
    frm: str = "alice@customer.test",
    to: str = SUPPORT,
    cc: Iterable[str] = (),
    subject: str = "Printer on fire",
    body: str = "It is on fire.",
    in_reply_to: str = "",
    references: Iterable[str] = (),
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A plain-text message as a mail client would send it (CRLF, RFC 5322)."""
    lines = [f"From: {frm}", f"To: {to}"]
    cc = list(cc)
    if cc:
        lines.append(f"Cc: {', '.join(cc)}")
    lines += [f"Subject: {subject}", f"Message-ID: {mid}", "Date: Mon, 3 Jun 2024 10:00:00 +0000"]
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    refs = list(references)
    if refs:
        lines.append(f"References: {' '.join(refs)}")
    lines += [f"{k}: {v}" for k, v in headers]
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", ""]
    return ("\r\n".join(lines) + "\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


def ingest(app: App, raw: bytes) -> IngestResult:
    return app.pipeline.ingest(raw, Envelope(channel="test"))


def signer(app: App) -> CaseSigner:
    found = app.pipeline.services.signer
    assert isinstance(found, CaseSigner)
    return found


def send(
    app: App,
    case_id: int,
    *,
    to: str = "alice@customer.test",
    subject: str = "Printer on fire",
    in_reply_to: str = "",
    body: str = "Thank you, we are looking into it.",
    message_id: str | None = None,
) -> EmailMessage:
    """Queue an outgoing message for ``case_id`` the way emaild sends mail; returns it."""
    s = signer(app)
    msg = EmailMessage()
    msg["From"] = f"Example Support <{SUPPORT}>"
    msg["To"] = to
    msg["Subject"] = s.mark_subject(f"Re: {subject}", case_id)
    msg["Message-ID"] = message_id or s.message_id(case_id)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg["Auto-Submitted"] = "auto-replied"
    token = s.body_token(case_id)
    msg.set_content(body + (f"\n\n{token}\n" if token else "\n"))
    with app.db.session() as session, session.begin():
        enqueue(
            session,
            msg,
            mail_from=SUPPORT,
            rcpt_to=to,
            now=datetime.now(UTC),
            kind="autoresponse",
            case_id=case_id,
        )
    return msg


def quote(text: str, who: str = "Example Support <support@example.com>") -> str:
    """``text`` quoted the way most clients quote under a reply."""
    quoted = "\n".join(f"> {line}" if line else ">" for line in text.strip().splitlines())
    return f"On Mon, 3 Jun 2024 at 10:00, {who} wrote:\n{quoted}"


def thread_index(root: bytes, children: int = 0) -> str:
    """An Outlook Thread-Index: a 22-byte conversation root plus 5-byte child blocks."""
    return base64.b64encode(root + bytes(5) * children).decode()


def trace(app: App, message_row: int | None) -> list[dict[str, Any]]:
    """The correlate entries of a stored message's decision trace."""
    assert message_row is not None
    with app.db.session() as s:
        row = s.get(Message, message_row)
        assert row is not None
        return [d for d in row.decision_trace if d["stage"] == "correlate"]


def via(app: App, result: IngestResult) -> str:
    """Which matching step put the message on its case ("" for a new case)."""
    threaded = [d for d in trace(app, result.message_row_id) if d["decision"] == "threaded"]
    return str(threaded[0]["via"]) if threaded else ""


def case_row(app: App, number: int | None) -> Case:
    assert number is not None
    with app.db.session() as s:
        case = s.get(Case, number)
        assert case is not None
        return case


def close_case(app: App, number: int | None, closed_at: datetime | None = None) -> None:
    assert number is not None
    with app.db.session() as s, s.begin():
        case = s.get(Case, number)
        assert case is not None
        case.status = "closed"
        case.closed_at = closed_at or datetime.now(UTC)


def participants(app: App, number: int) -> set[str]:
    with app.db.session() as s:
        return set(
            s.scalars(select(CaseParticipant.address).where(CaseParticipant.case_id == number))
        )
