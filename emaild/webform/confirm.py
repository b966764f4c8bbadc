"""Optional: the submitter confirms their email address before the case opens.

With ``confirm_email = true`` a submission is kept raw in quarantine (reason
``confirm_email``) and, in the same transaction, a mail with a signed link is
queued to the address the form was filled with. The link
(``GET /web-to-case/NAME/confirm``) shows a button, so a mail scanner that
follows links confirms nothing; pressing it (the ``POST``) runs the submission
through the pipeline, counted against the daily cap then (over it, it waits like any capped one).
A link is good for ``verification.token_ttl_hours``; an unconfirmed
submission is never lost: ``emaild web held`` lists it, ``release`` opens it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from emaild import quarantine
from emaild.config import RoutingAddress, WebformConfig
from emaild.errors import InputError
from emaild.intake import IngestResult, Outcome
from emaild.outbox.queue import enqueue
from emaild.store.database import Database
from emaild.webform import cap

REASON = cap.CONFIRM_REASON
KIND = "webform_confirm"


def _token(secret: bytes, entry_id: int, expires: int) -> str:
    key = hmac.new(secret, b"emaild webform confirm", hashlib.sha256).digest()
    return hmac.new(key, f"{entry_id}.{expires}".encode(), hashlib.sha256).hexdigest()[:40]


def link(base_url: str, form: str, entry_id: int, expires: int, secret: bytes) -> str:
    query = urlencode(
        {"entry": entry_id, "expires": expires, "token": _token(secret, entry_id, expires)}
    )
    return f"{base_url.rstrip('/')}/web-to-case/{form}/confirm?{query}"


def valid(secret: bytes, entry_id: int, expires: int, token: str, now: datetime) -> bool:
    if expires < now.timestamp():
        return False
    return hmac.compare_digest(token, _token(secret, entry_id, expires))


def hold_and_ask(
    db: Database,
    form: WebformConfig,
    routing: RoutingAddress,
    *,
    raw: bytes,
    raw_sha256: str,
    sender: str,
    now: datetime,
    base_url: str,
    secret: bytes,
    ttl_hours: float,
) -> int:
    """Keep the submission and queue the confirmation mail, in one transaction."""
    expires = int((now + timedelta(hours=ttl_hours)).timestamp())
    held = quarantine.Held(
        channel="web",
        reason=REASON,
        stage=cap.STAGE_PREFIX + form.name,
        error=f"waiting for {sender} to confirm the submission to web form {form.name}",
        raw_sha256=raw_sha256,
        raw_size=len(raw),
        headers=quarantine.header_block(raw),
        envelope_from=sender,
        envelope_to=(form.address,),
    )

    def work(session: Session) -> int:
        entry_id = quarantine.add(session, held, now).id
        url = link(base_url, form.name, entry_id, expires, secret)
        msg = EmailMessage()
        msg["From"] = Address(display_name=routing.name, addr_spec=routing.address)
        msg["To"] = sender
        msg["Subject"] = f"Please confirm your request to {routing.name or routing.address}"
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = make_msgid("webform", routing.address.rpartition("@")[2])
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(
            "Hello,\n\nWe received a request through our web form with this address."
            " To send it to us, open this link:\n\n"
            f"{url}\n\nIf you did not fill in our form, ignore this message:"
            " nothing will happen.\n"
        )
        enqueue(session, msg, mail_from=routing.address, rcpt_to=sender, now=now, kind=KIND)
        return entry_id

    return db.run(work, attempts=3)


@dataclass(frozen=True)
class Confirmed:
    case_number: int | None  # None: waiting for the daily cap
    result: IngestResult | None


def confirm(pipeline: quarantine.Reingest, form: WebformConfig, entry_id: int) -> Confirmed:
    """Open the case of a confirmed submission (again: the same answer)."""
    db = pipeline.db
    entry = quarantine.get_entry(db, entry_id)
    if entry is None or entry.stage != cap.STAGE_PREFIX + form.name:
        raise InputError("no such submission")
    if entry.status == quarantine.RELEASED:
        case = _case_of(db, entry.message_row_id)
        return Confirmed(case, None)
    if entry.status != quarantine.HELD:
        raise InputError("this submission was discarded")
    if entry.reason != REASON:  # confirmed before, now waiting for the cap
        return Confirmed(None, None)
    now = pipeline.clock()
    if not cap.reserve(db, form.name, now, form.daily_cap):
        quarantine.set_reason(db, entry_id, cap.REASON, "confirmed; over the daily cap")
        return Confirmed(None, None)
    result = quarantine.retry(pipeline, entry_id)
    if result.outcome is Outcome.DUPLICATE:
        cap.unreserve(db, form.name, now)
    return Confirmed(result.case_number, result)


def _case_of(db: Database, message_row: int | None) -> int | None:
    from emaild.store.models import Message

    if message_row is None:
        return None
    with db.session(readonly=True) as session:
        row = session.get(Message, message_row)
        return row.case_id if row is not None else None
