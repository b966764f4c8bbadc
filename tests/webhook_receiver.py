"""A real webhook receiver on loopback for the webhook tests, and a daemon to feed it.

``Receiver`` is a threaded HTTP server on 127.0.0.1 (ephemeral port) that
verifies every request's signature with the ``standardwebhooks`` library and
answers as the test scripts it: ``receiver.plan(lambda request: ...)`` or a
fixed ``receiver.answer = "ok"``. Answers:

- an int (200, 500, 410, 302, ...): that status;
- ``"stall"``: read the request, then say nothing for ``stall_seconds``;
- ``"close"``: read the request, then close the connection without a word;
- ``("slow", seconds, status)``: wait, then answer ``status``.

Every request is kept (``received``), with its verification result.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from emaild.app import App
from emaild.daemon import Daemon

MAX_BODY = 1024 * 1024
LOOPBACK = {"EMAILD_HTTP_LISTEN": "", "EMAILD_SMTP_LISTEN": "127.0.0.1:0"}


def make_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a sender killed mid-request (the crash test) is expected


def status_of(answer: Any) -> int:
    """The HTTP status an answer sends (0: none, the connection stalled or closed)."""
    if isinstance(answer, tuple):
        return int(answer[2])
    return answer if isinstance(answer, int) else 0


@dataclass
class Request:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str
    answer: Any

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")


class Receiver:
    def __init__(self, secret: str | None = None, *, stall_seconds: float = 5.0) -> None:
        self.secret = secret or make_secret()
        self.webhook = Webhook(self.secret)
        self.stall_seconds = stall_seconds
        self.answer: Any = 200
        self._plan: Callable[[Request], Any] | None = None
        self.received: list[Request] = []
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                receiver._handle(self)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def plan(self, decide: Callable[[Request], Any]) -> None:
        """Answer each request with ``decide(request)`` (called under no lock)."""
        self._plan = decide

    def secret_file(self, directory: Path, name: str = "hook.secret") -> Path:
        path = directory / name
        path.write_text(self.secret + "\n")
        return path

    # --- what arrived ---------------------------------------------------------------
    def wait_for(
        self, predicate: Callable[[list[Request]], bool], timeout: float = 20.0
    ) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not predicate(list(self.received)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [(r.json.get("type"), r.answer) for r in self.received]
                    raise AssertionError(f"receiver: condition not met in {timeout}s; got {got}")
                self._arrived.wait(min(remaining, 0.2))
            return list(self.received)

    def delivered(self) -> list[Request]:
        """Requests answered 2xx (what the receiver accepted), in arrival order."""
        with self._lock:
            return [r for r in self.received if 200 <= status_of(r.answer) < 300]

    def wait_delivered(self, n: int, timeout: float = 20.0) -> list[Request]:
        self.wait_for(lambda _: len(self.delivered()) >= n, timeout)
        return self.delivered()

    # --- the handler ------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(min(length, MAX_BODY))
        if len(body) < length:
            # The sender died mid-request (the crash test): nothing arrived.
            handler.close_connection = True
            return
        headers = {k.lower(): v for k, v in handler.headers.items()}
        verified, error = True, ""
        try:
            self.webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            verified, error = False, str(exc)
        request = Request(time.monotonic(), handler.path, headers, body, verified, error, None)
        answer = self._plan(request) if self._plan is not None else self.answer
        request.answer = answer
        with self._arrived:
            self.received.append(request)
            self._arrived.notify_all()
        if answer == "close":
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            return
        if answer == "stall":
            time.sleep(self.stall_seconds)
            handler.close_connection = True
            return
        status = answer
        if isinstance(answer, tuple):
            _, delay, status = answer
            time.sleep(delay)
        handler.send_response(int(status))
        if 300 <= int(status) < 400:
            handler.send_header("location", self.url + "/elsewhere")
        handler.send_header("content-length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")


@contextlib.contextmanager
def receiver(**kwargs: Any) -> Iterator[Receiver]:
    r = Receiver(**kwargs).start()
    try:
        yield r
    finally:
        r.stop()


class DaemonThread:
    """A real ``Daemon`` (SMTP on an ephemeral loopback port) in a thread."""

    def __init__(self, app: App, components: tuple[Any, ...]) -> None:
        self.app = app
        self.daemon = Daemon(app, env={}, components=components)
        self._thread = threading.Thread(target=self._run, name="webhook-daemon", daemon=True)
        self._error: list[BaseException] = []

    def _run(self) -> None:
        try:
            asyncio.run(self.daemon.serve())
        except BaseException as exc:
            self._error.append(exc)

    def start(self) -> DaemonThread:
        self._thread.start()
        if not self.daemon.ready.wait(30):
            raise AssertionError(f"daemon not ready: {self._error}")
        return self

    def stop(self) -> None:
        self.daemon.request_stop()
        self._thread.join(60)
        assert not self._thread.is_alive(), "daemon did not stop"
        if self._error:
            raise self._error[0]


@contextlib.contextmanager
def running(app: App, *components: Any) -> Iterator[DaemonThread]:
    from emaild.webhooks.component import webhook_component

    thread = DaemonThread(app, components or (webhook_component,)).start()
    try:
        yield thread
    finally:
        thread.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def hook_toml(url: str, secret_file: Path, *, extra: str = "", **settings: Any) -> str:
    """A ``[[webhook]]`` named "test" and fast ``[webhooks]`` settings (overridable)."""
    fast: dict[str, Any] = {
        "retry_base_seconds": 0.2,
        "retry_max_seconds": 1.0,
        "retry_jitter": 0.0,
        "poll_interval_seconds": 0.05,
        "timeout_seconds": 1.0,
        **settings,
    }
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fast.items())
    return (
        f'[[webhook]]\nname = "test"\nurl = "{url}"\nsecret_file = "{secret_file}"\n{extra}\n'
        f"[webhooks]\n{table}"
    )
