"""Refusing unusable command arguments at the command (issue 18 §5).

A NUL or another control character in ``MAIL FROM``, ``RCPT TO`` or the
``HELO``/``EHLO``/``LHLO`` name, or bytes that are not UTF-8 (aiosmtpd keeps
them as lone surrogates), cannot be stored (PostgreSQL text refuses NUL and
surrogates) and name no real mailbox or host. Accepting them only to fail at
DATA with ``451`` would make the client retry forever, so they get a permanent
answer at once: ``501 5.5.4`` for a greeting, ``553 5.1.7`` for a sender and
``553 5.1.3`` for a recipient (RFC 3463).
"""

from __future__ import annotations

import functools
import re
from typing import Any

BAD_HELO = "501 5.5.4 Syntax error: control characters or invalid UTF-8 in the host name"
BAD_SENDER = "553 5.1.7 Sender address rejected: control characters or invalid UTF-8"
BAD_RECIPIENT = "553 5.1.3 Recipient address rejected: control characters or invalid UTF-8"

# C0 controls (NUL included), DEL, C1 controls, and the lone surrogates that
# surrogateescape makes of bytes that are not UTF-8. Tab is a control too: no
# address or host name holds one.
_UNUSABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def unusable(arg: str | None) -> bool:
    """True if a command argument holds characters no address or host name has."""
    return bool(arg) and _UNUSABLE.search(arg or "") is not None


_REPLIES = {
    "HELO": BAD_HELO,
    "EHLO": BAD_HELO,
    "LHLO": BAD_HELO,
    "MAIL": BAD_SENDER,
    "RCPT": BAD_RECIPIENT,
}


def guard_commands(session: Any) -> None:
    """Wrap the session's HELO/EHLO/LHLO/MAIL/RCPT so unusable arguments are refused.

    aiosmtpd dispatches through ``_smtp_methods``, built in its ``__init__``;
    wrapping the entries there (not overriding the methods) adds no command an
    SMTP or LMTP session did not have, and keeps their HELP text.
    """
    methods: dict[str, Any] = session._smtp_methods
    for command, reply in _REPLIES.items():
        if command in methods:
            methods[command] = _guarded(session, methods[command], command, reply)


def _guarded(session: Any, method: Any, command: str, reply: str) -> Any:
    @functools.wraps(method)
    async def guarded(arg: str | None) -> None:
        if unusable(arg):
            session.record.rejected.append({command.lower(): ascii(arg)[:200], "reply": reply})
            await session.push(reply)
            return
        await method(arg)
        # aiosmtpd armed the timer before the command ran; MAIL may have started
        # a transaction, which has the longer timeout (emaild.channels.smtp.timeouts).
        if command == "MAIL" and session.transport is not None:
            session._reset_timeout()

    return guarded
