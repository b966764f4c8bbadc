"""Scheduled forwarding self-tests in the running daemon: a real relay, a provider
that forwards (then swallows) the marked message, the metric, and the alert."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from apiserver import API_TOML, LOOPBACK, ApiServer
from forwarder import Forwarder, smtp_to
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from emaild.alerts.component import alerts_component
from emaild.alerts.selftest import selftest_component
from emaild.app import App
from emaild.store.models import OpsEvent

ADDRESS = "support@example.com"
TOML = (
    API_TOML
    + f'[[forwarding_test]]\naddress = "{ADDRESS}"\n'
    # A round trip through relay, provider and pipeline can take over 2 s while
    # the whole suite loads the machine; 5 s keeps a working provider passing.
    + "interval_minutes = 0.01\ntimeout_seconds = 5.0\n"
    + "[alerts]\nalert_after_seconds = 0.5\ncheck_interval_seconds = 0.2\n"
)


def result(base: str, since: float) -> float | None:
    """The last self-test's success (1/0) if one finished after ``since``, else None."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            if sample.labels.get("address") == ADDRESS:
                values[sample.name] = sample.value
    if values.get("emaild_forwarding_test_last_run_timestamp_seconds", 0) <= since:
        return None
    return values["emaild_forwarding_test_success"]


def wait_result(base: str, since: float, timeout: float = 20) -> float:
    deadline = time.monotonic() + timeout
    while (found := result(base, since)) is None:
        assert time.monotonic() < deadline, "no self-test finished"
        time.sleep(0.1)
    return found


def wait_for(base: str, want: float, timeout: float = 30) -> None:
    """Waits for a self-test to report ``want``. A test under way when the
    provider changed (started before, finishing after) may still report the old
    outcome, so each such result moves ``since`` on; a provider that never gives
    ``want`` runs out the timeout."""
    deadline = time.monotonic() + timeout
    since = time.time()
    while wait_result(base, since, timeout=max(deadline - time.monotonic(), 0.1)) != want:
        since = time.time()


def failing_events(app: App) -> list[str]:
    with app.db.session() as session:
        rows = session.scalars(select(OpsEvent).where(OpsEvent.kind == "channel.failing"))
        return [str(row.data["channel"]) for row in rows]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_scheduled_self_test_is_a_metric_and_its_failure_an_alert(
    make_app: Any, relay_sink: Any
) -> None:
    app = make_app(TOML, **LOOPBACK, **relay_sink.relay_env)
    server = ApiServer(app, components=(selftest_component, alerts_component)).start()
    try:
        assert server.daemon.smtp is not None
        smtp = server.daemon.smtp.listeners[0].address
        with Forwarder(relay_sink, smtp_to(*smtp)):
            wait_for(server.base, 1)
        assert failing_events(app) == []
        # The provider now swallows the mail: the next test fails, and is alerted on.
        wait_for(server.base, 0)
        deadline = time.monotonic() + 10
        while not failing_events(app):
            assert time.monotonic() < deadline, "no channel.failing event"
            time.sleep(0.1)
        assert failing_events(app) == [f"fwdtest:{ADDRESS}"]
    finally:
        server.stop()
