"""Run the real emaild SMTP/LMTP listener for an ``App`` inside a test.

    from smtp_helpers import smtp_listener

    def test_something(app):
        with smtp_listener(app) as (host, port):
            with smtplib.SMTP(host, port) as client:
                client.sendmail("a@b.test", ["support@example.com"], raw)

The listener runs on its own event loop in a background thread, bound to an
ephemeral loopback port, with the same ``SmtpChannel`` the daemon uses (limits,
RCPT checks, pipeline through a bounded worker pool). Channel health is
flushed to ``channel_status`` when the block ends.

``daemon_process(env, tmp_path)`` runs the whole daemon (``emaild run``) as a
subprocess instead, ready when it sends sd_notify ``READY=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import cli_zygote

from emaild.app import App
from emaild.channels.smtp import SmtpChannel


class RunningListener:
    """A listener on a background loop; ``address`` is (host, port)."""

    def __init__(self, app: App, kind: Literal["smtp", "lmtp"]) -> None:
        self.app = app
        self.kind = kind
        self.loop = asyncio.new_event_loop()
        self.executor = ThreadPoolExecutor(
            max_workers=app.config.limits.workers, thread_name_prefix="test-worker"
        )
        self.channel: SmtpChannel | None = None
        self.address: tuple[str, int] = ("", 0)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"test-{kind}", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.channel = SmtpChannel(self.app, self.executor)
        listener = await self.channel.listen(self.kind, "127.0.0.1:0")
        self.address = listener.address

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("listener did not start")
        if self._error is not None:
            self._thread.join(10)
            self.executor.shutdown(wait=True)
            if self.channel is not None:
                self.channel.shutdown()
            self.loop.close()
            raise self._error

    def stop(self, deadline: float = 5.0) -> None:
        """Drain like the daemon does on SIGTERM, then flush channel health."""
        if self.channel is not None:
            channel = self.channel
            future = asyncio.run_coroutine_threadsafe(channel.drain(deadline), self.loop)
            future.result(deadline + 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.executor.shutdown(wait=True)
        if self.channel is not None:
            self.channel.flush_health()
            self.channel.shutdown()
        self.loop.close()


@contextmanager
def smtp_listener(app: App, *, lmtp: bool = False) -> Iterator[tuple[str, int]]:
    """Serve SMTP (or LMTP with ``lmtp=True``) for ``app``; yields (host, port)."""
    running = RunningListener(app, "lmtp" if lmtp else "smtp")
    running.start()
    try:
        yield running.address
    finally:
        running.stop()


@contextmanager
def running_listener(app: App, *, lmtp: bool = False) -> Iterator[RunningListener]:
    """Like ``smtp_listener`` but yields the ``RunningListener`` (channel, counters)."""
    running = RunningListener(app, "lmtp" if lmtp else "smtp")
    running.start()
    try:
        yield running
    finally:
        running.stop()


# --- ``emaild run`` as a real subprocess -------------------------------------------------
def free_port() -> int:
    """A loopback port nobody listens on right now (for subprocess daemons)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DaemonProcess:
    """``python -m emaild run`` with a notify socket, like systemd starts it.

    Readiness is the real sd_notify ``READY=1`` datagram, not a sleep. Logs go
    to ``log_path``; ``notifications`` keeps every datagram received.
    """

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        *,
        args: Sequence[str] = (),
        stdin: int | None = None,
        wrapper: Sequence[str] = (),
        run_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.run_args = list(run_args)
        self.smtp_port = free_port()
        self.lmtp_port = free_port()
        self.log_path = workdir / f"emaild-{self.smtp_port}.log"
        # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
        self._notify_dir = Path(tempfile.mkdtemp(prefix="emaild-"))
        self.notify_path = self._notify_dir / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notifications: list[dict[str, str]] = []
        self.env = dict(env)
        self.env.setdefault("EMAILD_SMTP_LISTEN", f"127.0.0.1:{self.smtp_port}")
        self.env.setdefault("EMAILD_LMTP_LISTEN", f"127.0.0.1:{self.lmtp_port}")
        self.env["NOTIFY_SOCKET"] = str(self.notify_path)
        self.args = list(args)
        self.stdin = stdin
        self.wrapper = list(wrapper)
        self.proc: subprocess.Popen[bytes] | cli_zygote.ZygoteProcess | None = None

    def start(self, timeout: float = 60) -> dict[str, str]:
        """Start and wait for ``READY=1``; returns that notification."""
        with self.log_path.open("ab") as log_file:
            command = [*self.args, "run", *self.run_args]
            if self.wrapper:
                self.proc = subprocess.Popen(
                    [*self.wrapper, sys.executable, "-m", "emaild", *command],
                    env=self.env,
                    stdin=self.stdin if self.stdin is not None else subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                )
            else:  # forked from the tests' zygote: a fresh process without the imports
                self.proc = cli_zygote.shared().popen(
                    command,
                    env=self.env,
                    stdin=self.stdin,
                    stdout=log_file.fileno(),
                    stderr=log_file.fileno(),
                )
        return self.wait_for("READY", timeout)

    def wait_for(self, key: str, timeout: float = 30) -> dict[str, str]:
        """The next notification carrying ``key`` (e.g. READY, STOPPING, WATCHDOG)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc is not None and self.proc.poll() is not None):
                raise AssertionError(f"no {key}= from emaild; log:\n{self.log()}")
            self.notify.settimeout(min(remaining, 0.5))
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.notifications.append(fields)
            if key in fields:
                return fields

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        """Parsed JSON log events called ``name``."""
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found

    def stop(self) -> None:
        """Kill if still running (test cleanup); close the notify socket."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()
        shutil.rmtree(self._notify_dir, ignore_errors=True)


@contextmanager
def daemon_process(env: dict[str, str], workdir: Path, **kwargs: Any) -> Iterator[DaemonProcess]:
    """Start ``emaild run`` and wait until it is ready; killed at the end if still up."""
    daemon = DaemonProcess(env, workdir, **kwargs)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
