"""DATA received into a spool file as it arrives, never whole in memory (issue 18 §4).

aiosmtpd's ``smtp_DATA`` keeps every line of a message as a ``bytearray`` and
then joins them: about 2.8x the message in memory before the pipeline even
starts. The session's DATA command is replaced here (in aiosmtpd's
``_smtp_methods``, as ``guard.py`` does for other commands, so HELP is kept) by
one that reads the transfer in blocks of at most about twice
``smtp.max_line_length``, undoes dot-stuffing (RFC 5321 4.5.2) and appends
the content to a ``Spool`` in the blob store's ``tmp/``: a transfer in progress
holds only those blocks in memory, whatever its size. Its limits are
aiosmtpd's, counted the same way: more than the message size limit
(``limits.max_message_bytes``, or twice the ``SIZE=`` declared at ``MAIL``
plus 64 KiB) gets ``552 5.3.4`` and a line longer than
``smtp.max_line_length`` (with its CRLF) ``500 5.5.2``, both after the final
dot, the rest of the transfer being read and thrown away.

The complete message is handed to the DATA hook as a ``SpooledMessage``;
from the moment the channel hands it to a worker (``handed_over``), the worker
owns the spool: it loads it (the one copy of the message in memory), publishes
it as the raw blob and runs the pipeline. Otherwise the command deletes it.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

from emaild.channels.smtp.replies import TEMPFAIL
from emaild.errors import TransientError
from emaild.store.blobs import Spool

# A client is held to about the SIZE it declared: SIZE is its count before
# dot-stuffing and line-end repair (smtplib turns bare LF into CRLF), so twice
# it plus a margin (a client claiming SIZE=1 cannot send 35 MiB).
SIZE_MARGIN = 64 * 1024
TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"  # aiosmtpd's words; enhanced on push
TOO_MUCH = "552 Error: Too much mail data"
_END = b".\r\n"


@dataclass
class SpooledMessage:
    """A message received whole into ``spool``, on its way to the pipeline."""

    spool: Spool
    size: int
    # Set by the channel: waiting for the DATA budget, admitted to it, and
    # handed to a worker (which then owns the spool).
    waiting_for_budget: bool = False
    admitted: bool = False
    handed_over: bool = False


class DotReader:
    """The DATA byte stream, block by block: end, dot-stuffing, size and line limits.

    Sans I/O: ``feed`` takes consecutive blocks of the transfer (without the
    final ``.\\r\\n``) and returns their content; ``ends`` tells whether a block
    read up to ``.\\r\\n`` ends the transfer (the dot starts a line). Once a
    limit is broken ``refusal`` is set and nothing more is returned.
    """

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.size_limit = size_limit
        self.line_limit = line_limit
        self.size = 0  # raw bytes, as aiosmtpd counts them (dot-stuffed, CRLFs)
        self.refusal = ""
        self._tail = b"\r\n"  # the last two bytes fed: the transfer starts a line
        self._line = 0  # bytes of the line not yet ended by CRLF

    def ends(self, block: bytes) -> bool:
        """True if ``block`` (read up to ``.\\r\\n``) is the last: its dot starts a line."""
        if not block.endswith(_END):
            return False
        before = (self._tail + block[:-3])[-2:]
        return before == b"\r\n"

    def feed(self, block: bytes) -> bytes:
        """The content of ``block`` (dot-stuffing undone); ``b""`` once refused."""
        if not block:
            return b""
        self.size += len(block)
        if not self.refusal and self.size_limit and self.size > self.size_limit:
            self.refusal = TOO_MUCH
        if not self.refusal:
            self._measure(block)
        at_line_start = self._tail == b"\r\n"
        cr_pending = self._tail.endswith(b"\r")
        self._tail = (self._tail + block[-2:])[-2:]
        if self.refusal:
            return b""
        if at_line_start and block.startswith(b"."):
            block = block[1:]
        elif cr_pending and block.startswith(b"\n."):
            block = b"\n" + block[2:]
        return block.replace(b"\r\n.", b"\r\n")

    def _measure(self, block: bytes) -> None:
        """Track line lengths across blocks; a line over the limit (with CRLF) is refused."""
        if self._tail.endswith(b"\r") and block.startswith(b"\n"):
            self._ended(self._line + 1)  # the CRLF straddles two blocks
            self._line = 0
            block = block[1:]
        parts = block.split(b"\r\n")
        if len(parts) == 1:
            self._line += len(block)
        else:
            self._ended(self._line + len(parts[0]) + 2)
            if len(parts) > 2:
                self._ended(max(map(len, parts[1:-1])) + 2)
            self._line = len(parts[-1])
        if self._line > self.line_limit:  # over the limit before its CRLF even arrives
            self._ended(self._line)

    def _ended(self, length: int) -> None:
        if length > self.line_limit and not self.refusal:
            self.refusal = TOO_LONG


async def receive(reader: asyncio.StreamReader, dots: DotReader, spool: Spool) -> bool:
    """Read the transfer up to its final dot into ``spool`` (the content only).

    False if the connection ended first (aiosmtpd normally cancels the
    command then instead).

    A block ends at the next ``.\\r\\n`` or, if none is in the reader's buffer
    within its limit, just before where one could start: the reader never
    holds more than about twice its limit, and never reads past the end of
    the transfer (a pipelining client's next command stays in the buffer).
    """
    while True:
        try:
            block = await reader.readuntil(_END)
        except asyncio.LimitOverrunError as exc:
            block = await reader.read(exc.consumed)
        except asyncio.IncompleteReadError:
            return False
        if dots.ends(block):
            content = dots.feed(block[:-3])
            if content:
                spool.write(content)
            return True
        content = dots.feed(block)
        if content:
            spool.write(content)


def declared_size(mail_options: list[str]) -> int:
    """The ``SIZE=`` of MAIL FROM, 0 if none (aiosmtpd checked it is digits)."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


def install_data(session: Any) -> None:
    """Replace the session's DATA command by ``data_command`` (HELP text kept)."""
    methods: dict[str, Any] = session._smtp_methods
    original = methods["DATA"]

    @functools.wraps(original)
    async def data(arg: str | None) -> None:
        await data_command(session, arg)

    methods["DATA"] = data


async def data_command(session: Any, arg: str | None) -> None:
    """aiosmtpd's DATA with the transfer spooled to disk (see the module docstring)."""
    if await session.check_helo_needed():
        return
    if await session.check_auth_needed("DATA"):
        return
    envelope = session.envelope
    if not envelope.rcpt_tos:
        await session.push("503 Error: need RCPT command")
        return
    if arg:
        await session.push("501 Syntax: DATA")
        return
    channel = session.listener.channel
    limits = channel.config().limits
    declared = declared_size(envelope.mail_options)
    size_limit = limits.max_message_bytes
    if declared:
        size_limit = min(size_limit, 2 * declared + SIZE_MARGIN)
    try:
        spool = channel.new_spool()
    except TransientError as exc:
        session.listener.health.failure(str(exc))
        await session.push(TEMPFAIL)
        return
    message: SpooledMessage | None = None
    try:
        await session.push("354 End data with <CR><LF>.<CR><LF>")
        dots = DotReader(size_limit, session.line_length_limit)
        try:
            complete = await receive(session._reader, dots, spool)
        except asyncio.CancelledError:
            session._writer.close()  # the connection went away during DATA
            raise
        if not complete:
            session._writer.close()
            return
        if dots.refusal:
            spool.discard()  # before the reply: nothing of it is left once answered
            session.record.rejected.append({"data": str(dots.size), "reply": dots.refusal})
            session._set_post_data_state()
            await session.push(dots.refusal)
            return
        message = SpooledMessage(spool, spool.size)
        session.spooled = message
        status = await session._call_handler_hook("DATA")
        session._set_post_data_state()
        await session.push(status)
    finally:
        session.spooled = None
        if message is None or not message.handed_over:
            spool.discard()
