"""Webhook delivery that does not wait for the poll and reuses its connection.

A delivery committed by this process wakes the component at once (the poll is
set to a minute here, so only the wake can deliver in time), and POSTs to one
receiver go over one kept-alive connection instead of one connection each.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from mailbuilder import build_mail
from webhook_receiver import LOOPBACK, hook_toml, receiver, running

from emaild.intake import Envelope


def ingest(app: Any, n: int) -> None:
    raw = build_mail(subject=f"Question {n}", message_id=f"<speed{n}@customer.test>")
    assert app.pipeline.ingest(raw, Envelope(channel="pipe")).case_number is not None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # timing, not storage
def test_a_commit_wakes_delivery_and_posts_share_one_connection(
    make_app: Any, tmp_path: Path
) -> None:
    with receiver() as hook:
        accepted: list[Any] = []
        accept = hook.server.process_request

        def counting(request: Any, client_address: Any) -> None:
            accepted.append(client_address)
            accept(request, client_address)

        hook.server.process_request = counting  # type: ignore[method-assign]
        toml = hook_toml(hook.url, hook.secret_file(tmp_path), poll_interval_seconds=60.0)
        app = make_app(toml, **LOOPBACK)
        with running(app):
            ingest(app, 1)
            hook.wait_delivered(2, timeout=5.0)
            time.sleep(0.3)  # the component is idle now, waiting out its minute
            started = time.monotonic()
            ingest(app, 2)
            got = hook.wait_delivered(4, timeout=5.0)
            took = time.monotonic() - started
    assert [r.json["type"] for r in got] == ["case.created", "message.received"] * 2
    assert took < 5.0
    assert len(accepted) == 1, accepted  # four POSTs, one connection
