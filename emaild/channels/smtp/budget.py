"""A budget for message bytes held in memory (issue 18 §4).

A message being received costs almost no memory: DATA goes to a spool file
as it arrives (``data.py``). It is held in memory from the moment a worker
loads it for the pipeline until the pipeline is done with it: the raw bytes
once, plus what parsing adds (a bounded amount whatever the message's shape:
attachments are decoded in chunks straight to the blob store, and text
bodies reach the parser cut to a budget). So that is
what ``limits.data_bytes_in_flight`` bounds: before a received message goes
to a worker it reserves its size plus ``WORKING_SET``, and the reservation is
returned when the worker finishes with it (not when the client is answered: a message whose
pipeline timed out is still in memory).

A message that does not fit waits, in arrival order, on disk and holding no
worker, for earlier messages to finish; the wait counts against
``limits.pipeline_timeout_seconds``, after which the client gets ``451
4.3.2`` and retries later. One reservation is always admitted when nothing
else is in memory, so a budget below the largest message still lets mail
through.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

TOO_MUCH_IN_FLIGHT = "451 4.3.2 Too much mail in transit; try again later"
# What the pipeline holds of a message besides its raw bytes, whatever its
# shape: attachments are decoded in 1 MiB chunks to the blob store and text
# bodies reach the parser cut to 512 KiB (``mime/spool.py``), so this is the
# parsed skeleton, the kept text and what is derived from it, and file
# buffers. Measured over the raw bytes for 34 MiB through a warm ``emaild
# run`` (tests/test_smtp_memory.py, bench/bench_data_budget.py): 5.4 MiB with
# one base64 attachment, 4.4 MiB for a quoted-printable text/plain body,
# 8.4 MiB for an HTML body (its text is derived from the kept HTML); in a
# fresh process that has parsed little before (less freed memory to reuse):
# 5.4 (quoted-printable), 6.5 (base64 text), 8.8 (8-bit text), 12.1 MiB
# (HTML). The first HTML body after start also imports the HTML renderer
# (lxml, about 8 MiB, once): that is the daemon's idle size, not a message's.
WORKING_SET = 12 * 1024 * 1024


def cost(size: int) -> int:
    """What a message of ``size`` raw bytes reserves of the budget."""
    return size + WORKING_SET


class DataBudget:
    """Bytes of messages loaded (or about to be) for the pipeline; FIFO waiters.

    Used on the event loop only (workers release through ``call_soon_threadsafe``).
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.high_water = 0
        self._waiters: collections.deque[tuple[int, int, asyncio.Future[None]]] = (
            collections.deque()
        )

    @property
    def waiting(self) -> int:
        """Messages waiting for room now."""
        return sum(1 for _, _, future in self._waiters if not future.done())

    async def acquire(self, size: int, budget: int) -> None:
        """Reserve ``size`` bytes of ``budget``, waiting behind earlier waiters if needed."""
        if not self._waiters and self._fits(size, budget):
            self._take(size)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, budget, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(size)  # granted just as the caller gave up
            else:
                future.cancel()
                with contextlib.suppress(ValueError):  # _wake may have dropped it
                    self._waiters.remove(entry)
                self._wake()  # a large waiter at the head may have held back smaller ones
            raise

    def release(self, size: int) -> None:
        self.in_flight -= size
        self._wake()

    def _fits(self, size: int, budget: int) -> bool:
        return self.in_flight == 0 or self.in_flight + size <= budget

    def _take(self, size: int) -> None:
        self.in_flight += size
        self.high_water = max(self.high_water, self.in_flight)

    def _wake(self) -> None:
        while self._waiters:
            size, budget, future = self._waiters[0]
            if future.done():  # cancelled: its owner removes it
                self._waiters.popleft()
                continue
            if not self._fits(size, budget):
                return
            self._waiters.popleft()
            self._take(size)
            future.set_result(None)
