"""What the SMTP/LMTP listeners answer: RFC 5321 code + RFC 3463 enhanced status."""

from __future__ import annotations

from emaild.pipeline import IngestResult, Outcome

RCPT_OK = "250 2.1.5 Ok"
UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: not a routing address here"
SENDER_NOT_ALLOWED = "550 5.7.1 Sender not accepted for this address"
DISABLED_TEMPFAIL = "450 4.2.1 Mailbox temporarily disabled; try again later"
DISABLED_REJECT = "550 5.2.1 Mailbox disabled; not accepting messages"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
TEMPFAIL = "451 4.3.0 Temporary failure storing the message; try again later"
TEMPFAIL_TIMEOUT = "451 4.3.0 Timed out storing the message; try again later"
TEMPFAIL_INTERNAL = "451 4.3.0 Internal error; try again later"
BUSY = "451 4.3.2 Too busy; try again later"
TOO_MANY_CONNECTIONS = "421 4.3.2 Too many connections; try again later"
TOO_MANY_FROM_YOU = "421 4.7.0 Too many connections from your address; try again later"
TOO_FAST_FROM_YOU = "421 4.7.0 Too many connections from your address per minute; try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down; try again later"
UNUSABLE = "554 5.6.0 Message unusable: {detail}"
REJECTED = "550 5.7.1 Message rejected: {detail}"

# aiosmtpd's own fixed replies, given enhanced status codes (RFC 3463) so that
# MTAs log a precise reason (contract 5).
_ENHANCED = {
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
}


def enhanced(reply: str) -> str:
    """``reply`` with an enhanced status code if it is one of aiosmtpd's fixed replies."""
    return _ENHANCED.get(reply, reply)


def stored_reply(result: IngestResult) -> str:
    """The ``250`` line for a stored outcome (the case number helps support staff)."""
    o = result.outcome
    if o is Outcome.NEW_CASE:
        return f"250 2.0.0 Ok: new case {result.case_number}"
    if o is Outcome.APPENDED:
        return f"250 2.0.0 Ok: added to case {result.case_number}"
    if o is Outcome.DUPLICATE:
        return "250 2.0.0 Ok: already stored"
    if o is Outcome.QUARANTINED:
        return f"250 2.0.0 Ok: stored in quarantine as entry {result.quarantine_id}"
    return f"250 2.0.0 Ok: stored ({o.value})"
