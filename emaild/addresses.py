"""The address book: every routing address emaild accepts mail for.

Channels and stages ask it, never the config directly, so addresses managed
at run time (``emaild address``) and addresses declared in the config are
looked up the same way.
"""

from __future__ import annotations

from emaild.config import Config, RoutingAddress
from emaild.store.database import Database


class AddressBook:
    """Routing addresses by address or alias."""

    def __init__(self, config: Config, db: Database | None = None) -> None:
        self.config = config
        self.db = db

    def lookup(self, address: str) -> RoutingAddress | None:
        """The routing address ``address`` (or one of its aliases) belongs to."""
        return self.config.routing_address(address)

    def all(self) -> list[RoutingAddress]:
        return list(self.config.address)

    def default(self) -> RoutingAddress:
        return self.config.default_address

    def own_addresses(self) -> set[str]:
        """Every address and alias: mail from these is our own (loop protection)."""
        return {a for r in self.all() for a in r.all_addresses()}
