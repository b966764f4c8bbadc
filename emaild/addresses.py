"""The address book: every routing address emaild accepts mail for.

Channels and stages ask it, never the config directly, so addresses managed
at run time (``emaild address``) and addresses declared in the config are
looked up the same way.

Two sources, one rule for conflicts:

- ``[[address]]`` tables in the config file. They are the source of truth for
  admins who prefer files: an address (or alias) declared there always wins,
  and a database row for the same address is ignored ("shadowed") and shown
  as such by ``emaild address list``. Config addresses count as verified:
  whoever can edit the daemon's config already controls what it accepts.
- rows of ``routing_addresses`` written by ``emaild address add``. Their
  settings are the same keys as an ``[[address]]`` table, validated by the
  same ``RoutingAddress`` model; a row that no longer validates is skipped
  (and reported), never a reason to stop routing the rest. They start
  unverified; see ``emaild.verification``.

The embedded default (``support@example.com`` when the file declares no
address) stands in only until the first address is added with the CLI.

The daemon must see changes the CLI makes from another process, so managed
rows are re-read when the cached copy is older than ``cache_seconds``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.config import Config, RoutingAddress
from emaild.errors import InputError, TransientError
from emaild.store.database import Database
from emaild.store.models import ManagedAddress

log = structlog.get_logger("emaild.addresses")

# How stale the daemon's view of CLI-managed addresses may get, in seconds.
CACHE_SECONDS = 5.0

Source = Literal["config", "database"]


@dataclass(frozen=True)
class AddressEntry:
    """A routing address with where it came from and whether it is verified."""

    routing: RoutingAddress
    source: Source
    verified_at: datetime | None = None
    created_at: datetime | None = None

    @property
    def address(self) -> str:
        return self.routing.address

    @property
    def verified(self) -> bool:
        """Config addresses are trusted; managed ones once a token came back."""
        return self.source == "config" or self.verified_at is not None


@dataclass(frozen=True)
class IgnoredRow:
    """A ``routing_addresses`` row the book does not use, and why."""

    address: str
    reason: str
    enabled: bool
    verified_at: datetime | None


@dataclass(frozen=True)
class _Snapshot:
    entries: tuple[AddressEntry, ...]
    ignored: tuple[IgnoredRow, ...]
    by_address: dict[str, AddressEntry] = field(default_factory=dict)


class AddressBook:
    """Routing addresses by address or alias: config-declared and CLI-managed."""

    def __init__(
        self,
        config: Config,
        db: Database | None = None,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.db = db
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._loaded_at = 0.0

    # --- lookups -------------------------------------------------------------------
    def lookup(self, address: str) -> RoutingAddress | None:
        """The routing address ``address`` (or one of its aliases) belongs to."""
        entry = self.entry(address)
        return entry.routing if entry is not None else None

    def entry(self, address: str) -> AddressEntry | None:
        """The entry ``address`` (or one of its aliases) belongs to, with its source."""
        return self._current().by_address.get(address.strip().lower())

    def entries(self) -> list[AddressEntry]:
        """Every routing address in use: config ones first, then managed ones by age."""
        return list(self._current().entries)

    def all(self) -> list[RoutingAddress]:
        return [e.routing for e in self._current().entries]

    def default(self) -> RoutingAddress:
        """Where mail that names no routing address goes: the first one listed."""
        return self._current().entries[0].routing

    def own_addresses(self) -> set[str]:
        """Every address and alias: mail from these is our own (loop protection)."""
        return set(self._current().by_address)

    def ignored(self) -> list[IgnoredRow]:
        """Managed rows not in use: shadowed by the config, or no longer valid."""
        return list(self._current().ignored)

    def is_verified(self, address: str) -> bool:
        entry = self.entry(address)
        return entry is not None and entry.verified

    def lookup_cached(self, address: str) -> tuple[bool, RoutingAddress | None]:
        """``(True, lookup(address))`` from the cache, or ``(False, None)`` if a
        database read is due first (then call ``lookup`` where blocking is fine)."""
        snapshot = self._snapshot
        if snapshot is None or self._clock() - self._loaded_at >= self.cache_seconds:
            return False, None
        entry = snapshot.by_address.get(address.strip().lower())
        return True, entry.routing if entry is not None else None

    def invalidate(self) -> None:
        """Forget the cached managed rows (after this process changed them)."""
        with self._lock:
            self._snapshot = None

    # --- loading ---------------------------------------------------------------------
    def _current(self) -> _Snapshot:
        now = self._clock()
        snapshot = self._snapshot
        if snapshot is not None and now - self._loaded_at < self.cache_seconds:
            return snapshot
        with self._lock:
            if self._snapshot is not None and now - self._loaded_at < self.cache_seconds:
                return self._snapshot
            try:
                rows = self._read_rows()
            except TransientError as exc:
                if self._snapshot is None:
                    raise
                # Routing on a slightly stale view beats refusing all mail.
                log.warning("addresses.reload_failed", error=str(exc))
                self._loaded_at = now
                return self._snapshot
            self._snapshot = build_snapshot(self.config, rows)
            self._loaded_at = now
            return self._snapshot

    def _read_rows(self) -> list[ManagedAddress]:
        if self.db is None:
            return []
        # Read-only: a refresh runs under self._lock, and a pipeline thread that
        # holds SQLite's write lock may be waiting for self._lock (routing, loop checks).
        with self.db.session(readonly=True) as session:
            rows = list(session.scalars(select(ManagedAddress).order_by(ManagedAddress.created_at)))
            session.expunge_all()
            return rows


def build_snapshot(config: Config, rows: list[ManagedAddress]) -> _Snapshot:
    """Merge config addresses and managed rows; the config wins every conflict."""
    entries: list[AddressEntry] = []
    by_address: dict[str, AddressEntry] = {}
    ignored: list[IgnoredRow] = []
    config_addresses = [] if config.default_address_only and rows else list(config.address)
    for routing in config_addresses:
        entry = AddressEntry(routing=routing, source="config")
        entries.append(entry)
        by_address.update(dict.fromkeys(routing.all_addresses(), entry))
    for row in rows:
        try:
            routing = managed_routing(row)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(map(str, problem["loc"]))
            reason = f"invalid settings: {where}: {problem['msg']}"
            ignored.append(IgnoredRow(row.address, reason, row.enabled, row.verified_at))
            log.error("addresses.invalid_row", address=row.address, error=reason)
            continue
        clash = [a for a in routing.all_addresses() if a in by_address]
        if clash:
            owner = by_address[clash[0]]
            reason = (
                f"shadowed: {clash[0]} is declared in the config file"
                if owner.source == "config"
                else f"conflict: {clash[0]} also belongs to {owner.address}"
            )
            ignored.append(IgnoredRow(row.address, reason, row.enabled, row.verified_at))
            continue
        entry = AddressEntry(
            routing=routing,
            source="database",
            verified_at=row.verified_at,
            created_at=row.created_at,
        )
        entries.append(entry)
        by_address.update(dict.fromkeys(routing.all_addresses(), entry))
    if not entries:
        # Every managed row was unusable: fall back to the config (embedded default).
        for routing in config.address:
            entry = AddressEntry(routing=routing, source="config")
            entries.append(entry)
            by_address.update(dict.fromkeys(routing.all_addresses(), entry))
    return _Snapshot(tuple(entries), tuple(ignored), by_address)


def managed_routing(row: ManagedAddress) -> RoutingAddress:
    """The ``RoutingAddress`` a managed row stands for (the column decides ``enabled``)."""
    settings = dict(row.settings or {})
    settings.update(address=row.address, enabled=row.enabled)
    return RoutingAddress.model_validate(settings)


# --- administration (``emaild address``) ---------------------------------------------
def settings_json(routing: RoutingAddress) -> dict[str, Any]:
    """What a managed row stores: every key but the address and ``enabled`` (columns)."""
    return routing.model_dump(mode="json", exclude={"address", "enabled"})


def validate_routing(data: dict[str, Any]) -> RoutingAddress:
    """A ``RoutingAddress`` from CLI options, or ``InputError`` naming the bad key."""
    try:
        return RoutingAddress.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"]))
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise InputError(f"{where}: {message}") from None


def _config_claims(config: Config, routing: RoutingAddress) -> str:
    """The first of ``routing``'s addresses the config file declares, or ""."""
    if config.default_address_only:
        return ""  # the embedded default gives way to managed addresses
    declared = {a for r in config.address for a in r.all_addresses()}
    return next((a for a in routing.all_addresses() if a in declared), "")


def add_managed(
    session: Session, config: Config, routing: RoutingAddress, now: datetime
) -> ManagedAddress:
    """Store a new managed address, unverified; ``InputError`` on any clash."""
    clash = _config_claims(config, routing)
    if clash:
        where = config.source or "the config file"
        raise InputError(
            f"{clash} is declared in {where}; the config wins, so edit the file instead"
        )
    if session.get(ManagedAddress, routing.address) is not None:
        raise InputError(f"{routing.address} already exists (see 'emaild address show')")
    wanted = set(routing.all_addresses())
    for other in session.scalars(select(ManagedAddress)):
        taken = wanted & {other.address, *(other.settings or {}).get("aliases", [])}
        if taken:
            raise InputError(f"{sorted(taken)[0]} already belongs to {other.address}")
    row = ManagedAddress(
        address=routing.address,
        settings=settings_json(routing),
        enabled=routing.enabled,
        verified_at=None,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def managed_row(session: Session, config: Config, address: str) -> ManagedAddress:
    """The managed row for ``address`` (or an alias), or ``InputError`` saying why not."""
    wanted = address.strip().lower()
    row = session.get(ManagedAddress, wanted)
    if row is None:
        for other in session.scalars(select(ManagedAddress)):
            if wanted in (other.settings or {}).get("aliases", []):
                row = other
                break
    if row is not None:
        return row
    if not config.default_address_only and config.routing_address(wanted) is not None:
        where = config.source or "the config file"
        raise InputError(f"{wanted} is declared in {where}; change it there")
    raise InputError(f"no managed routing address {wanted} (see 'emaild address list')")


def set_enabled(session: Session, config: Config, address: str, enabled: bool) -> ManagedAddress:
    """Enable or disable a managed address (a disabled one accepts no mail)."""
    row = managed_row(session, config, address)
    row.enabled = enabled
    return row
