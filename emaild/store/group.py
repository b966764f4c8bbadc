"""Group commit: the writes of several threads in one SQLite transaction.

SQLite has one writer at a time, and every commit ends in an fsync of the
WAL. Under load the pipeline's threads queue for the write turn, and each
spends more time waiting for it (and for the lock hand-off) than writing.
``GroupCommit.run`` queues a unit of work instead: the first thread to find
no leader becomes the leader, opens ONE transaction, runs every queued unit
in its own SAVEPOINT, commits once (one fsync), and wakes the others, each
with its own result. Then it hands the lead to the next waiting thread.

What stays true for each unit, as if it ran alone:

- ``run`` returns only after the unit's writes are durably committed
  (contract 1: accepted means stored); if the commit fails, every unit of
  the batch gets the error and nothing of it is stored.
- A unit that raises has its SAVEPOINT rolled back: only its own writes go,
  the others of the batch are committed (contract 3: one bad message never
  stalls the rest), and ``run`` re-raises its exception.
- A batch of one unit runs without a SAVEPOINT: its transaction is its own.
- Units run one after another, in arrival order, each seeing the writes of
  those before it (as consecutive transactions would), and share no ORM
  state: the session is emptied between units.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from emaild.errors import TransientError
from emaild.observe import metrics

T = TypeVar("T")
# A bound on one transaction's size; the pipeline's worker pool bounds it anyway.
MAX_BATCH = 64


class _Unit(Generic[T]):
    """One caller's work, its outcome, and the event its thread waits on."""

    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        self.value: T | None = None
        self.error: BaseException | None = None
        self.done = False
        self.lead = False  # handed the lead while waiting
        self.wake = threading.Event()

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class Writer(Protocol):
    """What group commit needs of the database (``Database`` is one)."""

    sessions: sessionmaker[Session]

    def serial_writes(self) -> AbstractContextManager[None]:
        """Hold the process-wide write turn."""
        ...


class GroupCommit:
    """Runs units of work from many threads in shared, savepointed transactions."""

    def __init__(self, db: Writer, *, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self._mutex = threading.Lock()
        self._queue: deque[_Unit[Any]] = deque()
        self._leading = False
        self._here = threading.local()
        # Figures for benches and tests: transactions committed, units in them.
        self.batches = 0
        self.units = 0

    def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in a transaction; return once it is durably committed."""
        if getattr(self._here, "leading", False):
            # A unit that asks for another transaction would wait for itself.
            raise RuntimeError("GroupCommit.run called from inside a unit of work")
        unit = _Unit(work)
        with self._mutex:
            self._queue.append(unit)
            lead = not self._leading
            self._leading = True
        if not lead:
            unit.wake.wait()
            if unit.done:
                return unit.outcome()
        # This thread leads until its own unit is committed (its unit is at the
        # head of the queue, so that is one batch), then hands the lead over.
        try:
            while not unit.done:
                self._commit()
        finally:
            with self._mutex:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake.set()
                else:
                    self._leading = False
        return unit.outcome()

    @property
    def waiting(self) -> int:
        """Units queued and not yet taken into a transaction."""
        return len(self._queue)

    def _commit(self) -> None:
        """Take the write turn, then every unit queued by then, and commit them."""
        batch: list[_Unit[Any]] = []
        self._here.leading = True
        try:
            with self.db.serial_writes():
                with self._mutex:
                    count = min(len(self._queue), self.max_batch)
                    batch = [self._queue.popleft() for _ in range(count)]
                self._transaction(batch)
            self.batches += 1
            self.units += len(batch)
        except BaseException as exc:
            if not batch:  # no write turn: everyone queued would wait as long
                with self._mutex:
                    batch = list(self._queue)
                    self._queue.clear()
            # Nothing of the batch is stored: every unit not failed on its own
            # gets this error (TransientError for an outage: the sender retries).
            for unit in batch:
                if unit.error is None:
                    unit.error = _as_transient(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._here.leading = False
            for unit in batch:
                unit.done = True
                unit.wake.set()

    def _transaction(self, batch: list[_Unit[Any]]) -> None:
        session = self.db.sessions()
        try:
            session.begin()
            if len(batch) == 1:
                if not self._alone(batch[0], session):
                    return  # it failed: its transaction is rolled back, nothing to commit
            else:
                self._savepointed(batch, session)
            started = time.perf_counter()
            session.commit()
            metrics.commit(time.perf_counter() - started)
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @staticmethod
    def _savepointed(batch: list[_Unit[Any]], session: Session) -> None:
        """Run each unit in its own SAVEPOINT: a failing one loses only its own writes."""
        for unit in batch:
            savepoint = session.begin_nested()
            try:
                unit.value = unit.work(session)
                session.flush()
                savepoint.commit()
            except Exception as exc:
                # Rolling back to the savepoint fails if the error ended the
                # whole transaction (SQLite does on I/O errors, a full disk):
                # then the batch fails as a whole, in ``_transaction``.
                savepoint.rollback()
                unit.error = exc
            finally:
                session.expunge_all()

    @staticmethod
    def _alone(unit: _Unit[Any], session: Session) -> bool:
        """Run a batch's only unit without a SAVEPOINT; False if it failed (rolled back).

        The transaction holds nothing else, so rolling it back undoes exactly
        what a SAVEPOINT would: two statements fewer for every uncontended write.
        """
        try:
            unit.value = unit.work(session)
            session.flush()
        except Exception as exc:
            session.rollback()
            unit.error = exc
            return False
        finally:
            session.expunge_all()
        return True


def _as_transient(exc: BaseException) -> BaseException:
    if isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return TransientError(f"database unavailable: {exc}")
    return exc
