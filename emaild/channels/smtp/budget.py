"""A budget for DATA bytes in flight (issue 18 §4, partly).

aiosmtpd holds a message being received in memory (about 2.8x its size at
the end of DATA: one bytearray per line, then the joined copy), and the
pipeline holds it until stored. So the number of bytes that may be in
flight at once is bounded by ``limits.data_bytes_in_flight``: at the DATA
command a session reserves its declared ``SIZE`` (RFC 1870; the transfer is
then held to twice that plus 64 KiB) or, without one, ``limits.max_message_bytes``; if the
reservation does not fit, the client gets ``451 4.3.2`` before sending a
byte and retries later. The reservation is returned when the message's
reply has been sent. One reservation is always admitted when nothing else is
in flight, so a budget below the largest message still lets mail through.

Not done: spooling DATA to disk as it arrives (one 34 MiB message still
costs about 2.8x its size while it is received).
"""

from __future__ import annotations

import functools
from typing import Any

TOO_MUCH_IN_FLIGHT = "451 4.3.2 Too much mail in transit; try again later"
SIZE_MARGIN = 64 * 1024
# What a transfer without SIZE reserves. MTAs declare SIZE when it is
# advertised (Postfix, Exim, Sendmail do); a client that does not is counted
# at this nominal size, so the budget is exact only for declared transfers.
NO_SIZE_RESERVE = 1024 * 1024


class DataBudget:
    """Bytes reserved by DATA transfers and messages not yet answered."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.high_water = 0

    def reserve(self, size: int, budget: int) -> bool:
        if self.in_flight and self.in_flight + size > budget:
            return False
        self.in_flight += size
        self.high_water = max(self.high_water, self.in_flight)
        return True

    def release(self, size: int) -> None:
        self.in_flight -= size


def declared_size(mail_options: list[str]) -> int:
    """The ``SIZE=`` of MAIL FROM, 0 if none (aiosmtpd checked it is digits)."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


def guard_data(session: Any) -> None:
    """Wrap the session's DATA so it runs only within the budget."""
    methods: dict[str, Any] = session._smtp_methods
    original = methods["DATA"]

    @functools.wraps(original)
    async def data(arg: str | None) -> None:
        envelope = session.envelope
        if envelope is None or not envelope.rcpt_tos or arg:
            await original(arg)  # aiosmtpd's own errors (503, 501); nothing is received
            return
        channel = session.listener.channel
        limits = channel.config().limits
        declared = declared_size(envelope.mail_options)
        size = min(declared, limits.max_message_bytes) if declared else NO_SIZE_RESERVE
        if not channel.data_budget.reserve(size, limits.data_bytes_in_flight):
            session.record.rejected.append({"data": str(size), "reply": TOO_MUCH_IN_FLIGHT})
            await session.push(TOO_MUCH_IN_FLIGHT)
            return
        # Held to about what it declared: a client claiming SIZE=1 cannot send
        # 35 MiB against a 1-byte reservation (552 5.3.4, as for any oversize
        # message). SIZE is the client's count before dot-stuffing and line-end
        # fixing (smtplib turns bare LF into CRLF), so twice it plus a margin.
        held = (
            min(limits.max_message_bytes, 2 * declared + SIZE_MARGIN)
            if declared
            else limits.max_message_bytes
        )
        session.data_size_limit = held
        session.data_reserved = size
        try:
            await original(arg)
        finally:
            session.data_size_limit = limits.max_message_bytes
            settle(session)

    methods["DATA"] = data


def settle(session: Any) -> None:
    """Return the session's reservation (idempotent): the message has its answer.

    Called by the DATA hook before the reply is sent, so a client that reads
    the reply and sends the next DATA finds the budget already freed.
    """
    reserved = getattr(session, "data_reserved", 0)
    if reserved:
        session.data_reserved = 0
        session.listener.channel.data_budget.release(reserved)
