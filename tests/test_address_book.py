"""The address book: config and managed addresses merged, config wins, short cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from emaild.addresses import AddressBook, add_managed, validate_routing
from emaild.app import App
from emaild.errors import InputError
from emaild.store.models import ManagedAddress

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

CONFIG = """
[[address]]
address = "support@example.com"
name = "Example Support"
aliases = ["help@example.com"]
"""


def add(app: App, address: str, **settings: Any) -> None:
    routing = validate_routing({"address": address, **settings})
    app.db.run(lambda s: add_managed(s, app.config, routing, NOW))
    app.pipeline.addresses.invalidate()


@pytest.fixture
def file_app(make_app: Any) -> Any:
    app = make_app(CONFIG)
    yield app
    app.close()


def test_managed_address_is_found_by_address_and_alias_with_its_defaults(file_app: App) -> None:
    add(file_app, "Billing@Acme.test", aliases=["invoices@acme.test"], priority="High")
    book = file_app.pipeline.addresses
    entry = book.entry("invoices@ACME.test")
    assert entry is not None
    assert entry.address == "billing@acme.test"
    assert entry.source == "database"
    assert entry.routing.priority == "High"
    assert not entry.verified
    # Config addresses come first and count as verified.
    assert [e.address for e in book.entries()] == ["support@example.com", "billing@acme.test"]
    assert book.is_verified("help@example.com")
    assert book.default().address == "support@example.com"
    assert {"billing@acme.test", "invoices@acme.test", "help@example.com"} <= (book.own_addresses())


def test_config_wins_a_conflict_and_the_row_is_reported_as_shadowed(file_app: App) -> None:
    with pytest.raises(InputError, match=r"declared in .*edit the file"):
        add(file_app, "help@example.com")
    # A row written before the file declared the address (or by hand) is shadowed.
    file_app.db.run(
        lambda s: s.add(
            ManagedAddress(
                address="help@example.com",
                settings={"priority": "Urgent"},
                enabled=True,
                created_at=NOW,
            )
        )
    )
    book = file_app.pipeline.addresses
    book.invalidate()
    entry = book.entry("help@example.com")
    assert entry is not None and entry.source == "config"
    assert entry.routing.priority == "Medium"
    [ignored] = book.ignored()
    assert ignored.address == "help@example.com"
    assert "shadowed" in ignored.reason


def test_a_row_with_invalid_settings_is_skipped_not_fatal(file_app: App) -> None:
    add(file_app, "ok@acme.test")
    file_app.db.run(
        lambda s: s.add(
            ManagedAddress(
                address="broken@acme.test",
                settings={"priority": "Whenever"},
                enabled=True,
                created_at=NOW,
            )
        )
    )
    book = file_app.pipeline.addresses
    book.invalidate()
    assert book.lookup("ok@acme.test") is not None
    assert book.lookup("broken@acme.test") is None
    [ignored] = book.ignored()
    assert ignored.reason.startswith("invalid settings: priority")


def test_embedded_default_gives_way_to_the_first_managed_address(app: App) -> None:
    book = app.pipeline.addresses
    assert app.config.default_address_only
    assert book.default().address == "support@example.com"
    add(app, "help@acme.test")
    assert book.lookup("support@example.com") is None
    assert book.default().address == "help@acme.test"
    # ... and the embedded default's own address may be managed like any other.
    add(app, "support@example.com", name="Ours now")
    entry = book.entry("support@example.com")
    assert entry is not None and entry.source == "database"


def test_changes_by_another_process_show_after_the_cache_expires(file_app: App) -> None:
    ticks = [0.0]
    book = AddressBook(file_app.config, file_app.db, cache_seconds=5.0, clock=lambda: ticks[0])
    assert book.lookup("late@acme.test") is None
    add(file_app, "late@acme.test")  # through another book: "another process"
    ticks[0] = 4.9
    assert book.lookup("late@acme.test") is None, "served from the cache"
    ticks[0] = 5.1
    assert book.lookup("late@acme.test") is not None


def test_disabled_state_comes_from_the_column(file_app: App) -> None:
    from emaild.addresses import set_enabled

    add(file_app, "help@acme.test")
    file_app.db.run(lambda s: set_enabled(s, file_app.config, "help@acme.test", False))
    book = file_app.pipeline.addresses
    book.invalidate()
    routing = book.lookup("help@acme.test")
    assert routing is not None and routing.enabled is False
    with pytest.raises(InputError, match="declared in"):
        file_app.db.run(lambda s: set_enabled(s, file_app.config, "support@example.com", False))


def test_an_alias_cannot_belong_to_two_managed_addresses(file_app: App) -> None:
    add(file_app, "a@acme.test", aliases=["shared@acme.test"])
    with pytest.raises(InputError, match=r"shared@acme\.test already belongs to a@acme\.test"):
        add(file_app, "b@acme.test", aliases=["shared@acme.test"])
    with pytest.raises(InputError, match="already exists"):
        add(file_app, "A@acme.test")


def test_lookup_cached_answers_without_io_only_while_the_cache_is_fresh(file_app: App) -> None:
    ticks = [100.0]
    book = AddressBook(file_app.config, file_app.db, cache_seconds=5.0, clock=lambda: ticks[0])
    assert book.lookup_cached("help@example.com") == (False, None)  # never read yet
    routing = book.lookup("support@example.com")
    assert routing is not None
    assert book.lookup_cached("HELP@example.com") == (True, routing)
    assert book.lookup_cached("nobody@example.com") == (True, None)
    ticks[0] += 5.0  # stale: the SMTP listener must ask ``lookup`` in a thread
    assert book.lookup_cached("support@example.com") == (False, None)
