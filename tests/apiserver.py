"""The daemon with its HTTP API on a loopback port, in a thread, for the API tests.

``ApiServer`` runs a real ``Daemon`` (SMTP listener, outbox, HTTP component)
and hands out tokens of each scope; tests talk to it with a real ``httpx``
client over TCP.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import httpx

from emaild.app import App
from emaild.casework.tokens import add_token
from emaild.daemon import ComponentFactory, Daemon
from emaild.http.server import HttpComponent, http_component
from emaild.outbox.component import outbox_component

API_TOML = '[relay]\nstarttls = "off"\nflush_interval_seconds = 0.2\nretry_base_seconds = 0.5\n'
LOOPBACK = {"EMAILD_HTTP_LISTEN": "127.0.0.1:0", "EMAILD_SMTP_LISTEN": "127.0.0.1:0"}


class ApiServer:
    def __init__(self, app: App, components: Sequence[ComponentFactory] = ()) -> None:
        """``components``: more to run beside the outbox and the API (IMAP, alerts...)."""
        self.app = app
        self.daemon = Daemon(
            app, env={}, components=(outbox_component, *components, http_component)
        )
        self._thread = threading.Thread(target=self._run, name="api-daemon", daemon=True)
        self._error: list[BaseException] = []
        self.tokens: dict[str, str] = {}

    def _run(self) -> None:
        try:
            asyncio.run(self.daemon.serve())
        except BaseException as exc:  # surfaced by start()/stop()
            self._error.append(exc)

    def start(self) -> ApiServer:
        self._thread.start()
        if not self.daemon.ready.wait(30):
            raise AssertionError(f"daemon not ready: {self._error}")
        [http] = [
            c for c in self.daemon.components if isinstance(c, HttpComponent) and not c.ops_only
        ]
        self.base = f"http://127.0.0.1:{http.port}"
        self.http = http
        now = self.app.pipeline.clock()
        for scope in ("read", "write", "admin"):
            self.tokens[scope] = self.app.db.run(lambda s, sc=scope: add_token(s, sc, sc, now))
        return self

    def client(self, scope: str | None = "write", **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[scope]}"} if scope else {}
        return httpx.Client(base_url=f"{self.base}/api/v1", headers=headers, timeout=30, **kwargs)

    def stop(self) -> None:
        self.daemon.request_stop()
        self._thread.join(60)
        assert not self._thread.is_alive(), "daemon did not stop"
        if self._error:
            raise self._error[0]
