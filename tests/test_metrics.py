"""``GET /metrics`` of a running ``emaild run`` (a real subprocess) after SMTP, IMAP and
pipe traffic: every counter is checked against what the test sent, and the text is
parsed with prometheus_client's own parser. Then who may scrape, and the switch."""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiserver import API_TOML, LOOPBACK, ApiServer
from conftest import ROOT
from dovecot import Dovecot
from prometheus_client.parser import text_string_to_metric_families
from smtp_helpers import daemon_process, free_port
from sqlalchemy import func, select

from emaild.http.server import metrics_component
from emaild.observe import metrics
from emaild.store.database import Database
from emaild.store.models import Message, OutboxItem

NEW_CASE = {"from_address": "erin@customer.test", "subject": "Off", "text": "Hello."}


def mail(n: str, sender: str = "bob@customer.test") -> bytes:
    return (
        f"From: {sender}\r\nTo: support@example.com\r\nSubject: Metrics {n}\r\n"
        f"Message-ID: <metrics-{n}@customer.test>\r\n\r\nHello {n}.\r\n"
    ).encode()


def scrape(base: str, **kwargs: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed: {(sample name, sorted labels): value}."""
    response = httpx.get(f"{base}/metrics", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def messages(samples: dict[Any, float], channel: str, outcome: str) -> float:
    return value(samples, "emaild_messages_total", channel=channel, outcome=outcome)


def wait_stored(database_url: str, count: int, timeout: float = 30) -> None:
    db = Database(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with db.session() as session:
                if (session.scalar(select(func.count(Message.id))) or 0) >= count:
                    return
            assert time.monotonic() < deadline, "messages not stored in time"
            time.sleep(0.05)
    finally:
        db.dispose()


@pytest.mark.dovecot
def test_metrics_after_smtp_imap_and_pipe_traffic(
    dovecot: Dovecot, cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [mail("imap-1"), mail("imap-2")])
    config = tmp_path / "emaild.toml"
    config.write_text(
        dovecot.mailbox_toml(user, idle=False, poll_interval_seconds=300.0)
        + "[metrics]\ncache_seconds = 0.0\n",
        encoding="utf-8",
    )
    port = free_port()
    env = dict(cli_env, EMAILD_CONFIG=str(config), EMAILD_HTTP_LISTEN=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    started = time.time()
    with daemon_process(env, tmp_path) as daemon:
        wait_stored(database_url, 2)  # the start-up poll took the mailbox's two
        for raw in (mail("smtp-1"), mail("smtp-2", "carol@customer.test"), mail("smtp-1")):
            with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
                client.sendmail("bob@customer.test", ["support@example.com"], raw)
        with (
            smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client,
            pytest.raises(smtplib.SMTPRecipientsRefused),
        ):
            client.sendmail("bob@customer.test", ["nobody@example.com"], mail("x"))
        # Two handed to the daemon over its ingest socket; one run in its own
        # process (-v), whose counts reach /metrics through the spool file.
        pipes = [(mail("pipe-1", "dave@customer.test"), ()), (mail("pipe-1"), ())]
        for raw, verbose in [*pipes, (b"not a message", ("-v",))]:
            subprocess.run(
                [sys.executable, "-m", "emaild", "ingest", *verbose],
                input=raw,
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
        samples = scrape(base)
    expected = {
        ("smtp", "new_case"): 2,
        ("smtp", "duplicate"): 1,
        ("imap", "new_case"): 2,
        ("pipe", "new_case"): 1,
        ("pipe", "duplicate"): 1,
        ("pipe", "quarantined"): 1,  # kept, exit 65 (not a message)
    }
    counted = {
        (dict(labels)["channel"], dict(labels)["outcome"]): v
        for (name, labels), v in samples.items()
        if name == "emaild_messages_total" and v
    }
    assert counted == expected
    # Replies: 4 sessions (greeting, QUIT), one recipient refused.
    assert value(samples, "emaild_smtp_replies_total", kind="smtp", code="220") == 4
    assert value(samples, "emaild_smtp_replies_total", kind="smtp", code="221") == 4
    assert value(samples, "emaild_smtp_replies_total", kind="smtp", code="550") == 1
    # The stages ran for the five messages the daemon parsed: SMTP's and IMAP's
    # four and the pipe's new one (a duplicate is answered before parsing; the
    # -v pipe ran in its own process).
    assert value(samples, "emaild_stage_seconds_count", stage="parse") == 5
    assert value(samples, "emaild_stage_seconds_count", stage="persist") == 5
    assert value(samples, "emaild_ingest_seconds_count", channel="smtp") == 3
    assert value(samples, "emaild_db_commit_seconds_count") >= 4
    assert value(samples, "emaild_imap_backlog_messages", mailbox="support") == 0
    imap = {"channel": "imap:support", "kind": "imap"}
    assert value(samples, "emaild_channel_up", **imap) == 1
    success = value(samples, "emaild_channel_last_success_timestamp_seconds", **imap)
    assert started <= success <= time.time()
    assert value(samples, "emaild_database_up") == 1
    db = Database(database_url)
    try:
        with db.session() as session:
            queued = session.scalar(
                select(func.count(OutboxItem.id)).where(OutboxItem.status == "queued")
            )
            raw_bytes = session.scalar(select(func.sum(Message.raw_size)))
    finally:
        db.dispose()
    assert queued and value(samples, "emaild_outbox_messages", status="queued") == queued
    assert value(samples, "emaild_outbox_oldest_queued_age_seconds") > 0
    assert value(samples, "emaild_quarantine_held_messages", reason="unusable") == 1
    assert value(samples, "emaild_blob_bytes", kind="raw") == raw_bytes
    assert value(samples, "process_resident_memory_bytes") > 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_only_allowed_networks_scrape_without_a_token(make_api: Any) -> None:
    server = make_api('[metrics]\nallow_from = ["127.0.0.2/32"]\n')
    url = f"{server.base}/metrics"
    assert httpx.get(url).status_code == 401  # 127.0.0.1 is not allowed without a token
    token = {"Authorization": f"Bearer {server.tokens['read']}"}
    assert httpx.get(url, headers=token).status_code == 200
    from_allowed = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=from_allowed) as client:
        text = client.get(url).text
    # Every series the shipped Grafana dashboard queries is one emaild exposes.
    families = {f.name for f in text_string_to_metric_families(text)}
    dashboard = (ROOT / "contrib" / "grafana" / "emaild-dashboard.json").read_text()
    used = set(re.findall(r"\b((?:emaild|process)_[a-z_]+)", dashboard))
    assert len(used) > 15
    for name in sorted(used):
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert name in families or base in families, f"{name} is not exposed"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_listener_of_its_own(make_app: Any, relay_sink: Any) -> None:
    own = free_port()
    app = make_app(
        API_TOML + f'[metrics]\nlisten = "127.0.0.1:{own}"\n', **LOOPBACK, **relay_sink.relay_env
    )
    apart = ApiServer(app, components=(metrics_component,)).start()
    try:
        assert httpx.get(f"{apart.base}/metrics").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{own}/readyz").status_code == 200
        assert "emaild_messages_total" in httpx.get(f"http://127.0.0.1:{own}/metrics").text
    finally:
        apart.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_switched_off_metrics_answer_404_and_count_nothing(make_api: Any) -> None:
    off = make_api("[metrics]\nenabled = false\n")
    try:
        before = metrics.local_message_counts()
        with off.client() as client:
            assert client.post("/cases", json=NEW_CASE).status_code == 201
        assert metrics.local_message_counts() == before
        assert httpx.get(f"{off.base}/metrics").status_code == 404
        assert httpx.get(f"{off.base}/healthz").json() == {"status": "alive"}
    finally:
        metrics.set_enabled(True)  # the switch is the process's: leave it as found
