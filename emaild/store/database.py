"""Engine, sessions and schema migration for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from emaild.errors import ConfigError, TransientError
from emaild.observe import metrics
from emaild.store.group import GroupCommit
from emaild.store.migrations import SCHEMA_HEAD

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
T = TypeVar("T")
# Execution option marking a connection whose transactions only read.
READ_ONLY = "emaild_read_only"


class Database:
    """An engine plus a session factory, with the schema brought up to date."""

    def __init__(self, url: str, *, busy_timeout: float = 30.0, pool_size: int = 8) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.writers = WriterQueue()
        self.engine = make_engine(
            url, busy_timeout=busy_timeout, pool_size=pool_size, writers=self.writers
        )
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Sessions that only read: on SQLite their BEGIN is deferred (see make_engine),
        # so they read the WAL snapshot at once instead of queueing behind writers.
        self._reader = self.engine.execution_options(**{READ_ONLY: True})
        self.group = GroupCommit(self) if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration (cheap when current)."""
        with translate_errors():
            if current_revision(self.engine) == SCHEMA_HEAD:
                return
            upgrade(self.engine)

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session whose database errors surface as ``TransientError``.

        ``readonly`` sessions never take SQLite's write lock: use them for
        lookups that may run while another thread holds it (a reader that
        waits for the writer while the writer waits for it would deadlock
        until the busy timeout). Not for writes: one there would have to
        upgrade its snapshot and could fail as busy.
        """
        bind = {"bind": self._reader} if readonly else {}
        with translate_errors(), self.sessions(**bind) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A Core connection for a quick lookup: no ORM session, never the write lock.

        What ``session(readonly=True)`` gives, without building a session for one
        query (a message's duplicate check before parsing, say).
        """
        with translate_errors(), self._reader.connect() as conn:
            yield conn

    def run(self, work: Callable[[Session], T], *, attempts: int = 1) -> T:
        """Run ``work`` in one transaction, committed on success (``transact``), retried.

        Going through ``transact`` puts these writers (outbox, IMAP cursor, channel
        health, admin commands) in the same SQLite writer queue as the pipeline,
        instead of racing it through SQLite's sleep-and-poll busy handler.
        """
        for attempt in range(attempts):
            try:
                return self.transact(work)
            except TransientError:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def transact(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a transaction; return once it is durably committed.

        On SQLite, calls made from several threads at once share one
        transaction and one commit, each in its own SAVEPOINT
        (``emaild.store.group``): a call whose ``work`` raises rolls back only
        its own writes and gets its exception. On PostgreSQL, which commits
        concurrent transactions in parallel, each call has its own. Outages
        raise ``TransientError``; ``work`` must not open a write transaction.
        """
        if self.group is not None:
            return self.group.run(work)
        with self.session() as session:
            session.begin()
            try:
                value = work(session)
                session.flush()
                started = time.perf_counter()
                session.commit()
            except BaseException:
                session.rollback()
                raise
            metrics.commit(time.perf_counter() - started)
            return value

    @contextmanager
    def serial_writes(self) -> Iterator[None]:
        """Hold this process's SQLite write turn (first come, first served).

        SQLite has one writer at a time, and its busy handler makes waiters
        sleep and poll: under load some writers keep losing the race until the
        busy timeout, and the sender gets 451 for no reason. Queueing this
        process's writers here hands the lock over directly instead. A no-op
        on PostgreSQL, which locks rows, not the database.
        """
        if not self.is_sqlite:
            yield
            return
        if not self.writers.acquire(self.busy_timeout):
            raise TransientError(f"database busy: no write turn within {self.busy_timeout}s")
        try:
            yield
        finally:
            self.writers.release()

    def dispose(self) -> None:
        self.engine.dispose()


class WriterQueue:
    """A FIFO lock: ``release`` hands it to the longest waiter, no barging."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Event] = deque()
        self._owner = threading.local()

    def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the turn; False if it did not come."""
        with self._mutex:
            if not self._held:
                self._held = True
                self._owner.holds = True
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        if not turn.wait(timeout):
            with self._mutex:
                if not turn.is_set():
                    self._waiters.remove(turn)
                    return False
        self._owner.holds = True
        return True

    def release(self) -> None:
        self._owner.holds = False
        self._owner.writing = False
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()  # stays held: handed over
            else:
                self._held = False

    def held_here(self) -> bool:
        """True if the calling thread holds the turn."""
        return bool(getattr(self._owner, "holds", False))

    def mark_writing(self) -> None:
        """The turn holder's write transaction has begun (until ``release``)."""
        self._owner.writing = True

    def writing_here(self) -> bool:
        """True if the calling thread already has its write transaction open."""
        return bool(getattr(self._owner, "writing", False))


def make_engine(
    url: str,
    *,
    busy_timeout: float = 30.0,
    pool_size: int = 8,
    writers: WriterQueue | None = None,
) -> Engine:
    """An engine tuned for the backend: WAL and busy timeout on SQLite."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise ConfigError(f"invalid database URL: {exc}", key="storage.database_url") from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it (its -wal and -shm files take the
            # database file's mode), not 0644 under the usual umask.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
        kwargs["pool_size"] = pool_size
    elif parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", ""):
            raise ConfigError(
                "use the psycopg 3 driver: postgresql+psycopg://...", key="storage.database_url"
            )
        parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs["connect_args"] = {"connect_timeout": 5}
        kwargs["pool_size"] = pool_size
        kwargs["pool_pre_ping"] = True
    else:
        raise ConfigError(
            f"unsupported database {parsed.get_backend_name()!r} "
            "(use sqlite:///PATH or postgresql+psycopg://...)",
            key="storage.database_url",
        )
    try:
        engine = create_engine(parsed, **kwargs)
    except ImportError as exc:
        raise ConfigError(f"database driver missing: {exc}", key="storage.database_url") from None
    if engine.dialect.name == "sqlite":
        timeout_ms = int(busy_timeout * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin: we
            # need BEGIN IMMEDIATE so writers queue on the lock, not deadlock.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={timeout_ms}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")  # a snapshot read: never waits for a writer
                return
            if writers is not None and writers.writing_here():
                # A second transaction in a thread that is already writing (e.g.
                # an address-book refresh inside the pipeline's transaction) can
                # only read: a deferred BEGIN reads the WAL snapshot at once
                # instead of waiting out the busy timeout on our own lock.
                conn.exec_driver_sql("BEGIN")
                return
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            if writers is not None and writers.held_here():
                writers.mark_writing()

    return engine


@contextmanager
def translate_errors() -> Iterator[None]:
    """Database outages and lock timeouts become ``TransientError`` (retry later)."""
    try:
        yield
    except OperationalError as exc:
        raise TransientError(f"database unavailable: {_short(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise TransientError(f"database connection lost: {_short(exc)}") from exc
        raise
    except SQLAlchemyError:
        raise


def _short(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        return str(row[0]) if row else None


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)
