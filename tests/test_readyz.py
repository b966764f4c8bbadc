"""``/healthz`` and ``/readyz`` of the running daemon, with the database taken away for real:
a PostgreSQL reached through a TCP proxy the test stops and restarts, and a SQLite
database locked by another connection (what the daemon then cannot write to)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiserver import API_TOML, LOOPBACK, ApiServer
from sqlalchemy.engine import make_url
from tcpproxy import TcpProxy


def wait_ready(client: httpx.Client, status: int, timeout: float = 20.0) -> dict[str, Any]:
    """Poll /readyz until it answers ``status``; its body."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == status:
            return dict(response.json())
        assert time.monotonic() < deadline, f"/readyz stays {response.status_code}: {response.text}"
        time.sleep(0.2)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_readyz_follows_a_postgresql_outage_through_a_proxy(
    database_url: str, make_app: Any, relay_sink: Any
) -> None:
    real = make_url(database_url)
    proxy = TcpProxy(real.port or 5432).start()
    url = real.set(host="127.0.0.1", port=proxy.port)
    env = {**LOOPBACK, **relay_sink.relay_env, "EMAILD_DATABASE_URL": url.render_as_string(False)}
    server = ApiServer(make_app(API_TOML, **env)).start()
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            assert client.get("/healthz").json() == {"status": "alive"}
            assert wait_ready(client, 200) == {"status": "ready", "problems": []}
            proxy.stop()
            down = wait_ready(client, 503)
            assert any(p.startswith("database") for p in down["problems"]), down
            assert client.get("/healthz").status_code == 200  # alive all along
            proxy.start()
            assert wait_ready(client, 200)["problems"] == []
    finally:
        server.stop()
        proxy.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_readyz_is_503_while_another_process_holds_the_sqlite_write_lock(
    make_api: Any, database_url: str
) -> None:
    server = make_api("[storage]\nbusy_timeout_seconds = 5.0\n")
    path = Path(make_url(database_url).database or "")
    with httpx.Client(base_url=server.base, timeout=30) as client:
        wait_ready(client, 200)
        # Another process's writer (sqlite3 here, in the test) holds the lock:
        # emaild can take no mail, so it is not ready.
        holder = sqlite3.connect(path, timeout=1, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            body = wait_ready(client, 503)
            assert body["problems"] == ["database: no answer within 3s"], body
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert wait_ready(client, 200)["problems"] == []
