"""``emaild run --workers N``: one supervisor process, N worker daemons on shared sockets.

One Python process is one core for the pipeline. The supervisor (the process
systemd starts, its main PID) binds the listeners once (``emaild.sharedsockets``)
and starts N workers, each ``emaild run --workers 1``, the ordinary
``emaild.daemon.Daemon``, serving the inherited sockets. The workers are
started with ``exec`` (a fresh interpreter), not a bare ``fork``: nothing of the
supervisor (database engine, structlog, prometheus_client's mode) is shared.

The supervisor is a small synchronous loop with no threads and no event loop.
It talks to its workers with the sd_notify protocol (``emaild.systemd``): each
worker's ``NOTIFY_SOCKET`` is the supervisor's own datagram socket, whose
``SO_PASSCRED`` tells which worker sent a line. So:

- ``READY=1`` goes to systemd once every worker has said ``READY=1``;
- a worker pings ``WATCHDOG=1``; one silent for ``WORKER_WATCHDOG_SECONDS`` after
  it was ready is stuck and gets SIGKILL; the supervisor pings systemd itself;
- a worker that dies is replaced (``supervisor.worker_exited`` logs its exit
  status or signal): after a short pause, doubling for each worker that died
  again before it was ready, up to ``MAX_BACKOFF_SECONDS``, so a crash loop
  does not spin the CPU. A worker that dies before the first all-ready moment
  stops the start: the supervisor exits with its status (78 for a config error);
- SIGTERM/SIGINT: forwarded; workers drain (``daemon.shutdown_deadline_seconds``),
  stragglers are killed after the deadline and a margin, then exit 0. A second
  signal is forwarded too (workers then exit at once);
- SIGHUP: forwarded; each worker reloads its configuration; ``READY=1`` again
  once all have answered (with the first failure's status if one failed).

A worker gets SIGTERM if the supervisor itself dies (``die_with_supervisor``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import structlog

from emaild.errors import EX_OK
from emaild.sharedsockets import ENV_VAR, handoff
from emaild.systemd import InheritedSocket, Notifier

log = structlog.get_logger("emaild.supervisor")

# First pause before replacing a worker, doubled per death before readiness.
BASE_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
# Workers ping every half of this; one silent for the whole of it is stuck.
WORKER_WATCHDOG_SECONDS = 60.0
# After the shutdown deadline, how long workers may take to stop their components.
STOP_MARGIN_SECONDS = 10.0
TICK_SECONDS = 0.5
PR_SET_PDEATHSIG = 1


@dataclass
class Worker:
    """One worker slot: the process in it now and what the supervisor knows of it."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready: bool = False
    reloading: bool = False
    last_ping: float = 0.0
    status: str = ""
    # Deaths before READY in a row: the backoff grows with them.
    early_deaths: int = 0
    restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


@dataclass
class Supervisor:
    """Runs ``count`` workers on ``sockets`` until stopped; ``run`` returns the exit status."""

    count: int
    sockets: Sequence[InheritedSocket]
    # The worker's command line (``emaild ... run --workers 1``).
    command: Sequence[str]
    shutdown_deadline: float
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    notifier: Notifier = field(default_factory=Notifier)
    # Extra variables for the workers (e.g. the metrics directory).
    worker_env: Mapping[str, str] = field(default_factory=dict)
    # Called after a worker exits with its pid (e.g. to mark its metrics dead).
    on_exit: Callable[[int], None] = lambda pid: None
    # A ready worker silent for this long is stuck (it pings every half of it).
    worker_watchdog: float = WORKER_WATCHDOG_SECONDS
    workers: list[Worker] = field(init=False)
    _stopping: int = field(default=0, init=False)
    _all_ready_once: bool = field(default=False, init=False)
    _reload_pending: bool = field(default=False, init=False)
    _signals: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.workers = [Worker(i) for i in range(1, self.count + 1)]
        self._notify_name = f"@emaild-supervisor-{os.getpid()}-{secrets.token_hex(6)}"
        self._inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._inbox.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._inbox.bind(b"\0" + self._notify_name[1:].encode())
        self._inbox.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)

    # --- the loop -----------------------------------------------------------------
    def run(self) -> int:
        """Start the workers, supervise them, stop them; the process exit status."""
        handlers = self._install_signals()
        try:
            for worker in self.workers:
                self._start(worker)
            status = self._loop()
        finally:
            self._kill_all()
            self._restore_signals(handlers)
            self._inbox.close()
            self._wake_r.close()
            self._wake_w.close()
        self.notifier.close()
        return status

    def _loop(self) -> int:
        next_ping = 0.0
        stop_by = 0.0
        while True:
            for signum in self._take_signals():
                if signum == signal.SIGHUP:
                    self._reload()
                elif signum != signal.SIGCHLD:
                    stop_by = self._stop(signum) or stop_by
            failed = self._reap()
            if failed is not None:
                return failed
            now = time.monotonic()
            if self._stopping:
                if not self._live():
                    log.info("supervisor.stopped", workers=self.count)
                    return EX_OK
                if now >= stop_by:
                    for worker in self._live():
                        log.warning("supervisor.worker_killed", worker=worker.index, pid=worker.pid)
                        self._signal(worker, signal.SIGKILL)
                    stop_by = now + 5.0
            else:
                self._restart_due(now)
                self._check_watchdogs(now)
            if self.notifier.watchdog_seconds and now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + self.notifier.watchdog_seconds / 2
            readable, _, _ = select.select([self._inbox, self._wake_r], [], [], TICK_SECONDS)
            if self._inbox in readable:
                self._read_notifications()
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)

    # --- workers ------------------------------------------------------------------
    def _start(self, worker: Worker) -> None:
        value, fds = handoff(self.sockets)
        env = dict(self.env)
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS"):
            env.pop(key, None)
        env.update(self.worker_env)
        env.update(
            {
                ENV_VAR: value,
                "NOTIFY_SOCKET": self._notify_name,
                "WATCHDOG_USEC": str(int(self.worker_watchdog * 1_000_000)),
                "EMAILD_WORKER": str(worker.index),
                "EMAILD_SUPERVISOR_PID": str(os.getpid()),
            }
        )
        worker.proc = subprocess.Popen(
            list(self.command),
            env=env,
            pass_fds=fds,
            # Its own process group: a terminal's Ctrl-C reaches the supervisor
            # only, which forwards one SIGTERM (two would mean "exit at once").
            start_new_session=True,
        )
        worker.started = worker.last_ping = time.monotonic()
        worker.ready = worker.reloading = False
        worker.restart_at = None
        worker.status = "starting"
        log.info("supervisor.worker_started", worker=worker.index, pid=worker.pid)

    def _reap(self) -> int | None:
        """Collect workers that exited; the exit status when the start failed."""
        for worker in self.workers:
            if worker.proc is None or worker.proc.poll() is None:
                continue
            code, pid = worker.proc.returncode, worker.proc.pid
            worker.proc = None
            self.on_exit(pid)
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
            uptime = round(time.monotonic() - worker.started, 1)
            if self._stopping:
                log.info("supervisor.worker_stopped", worker=worker.index, pid=pid, status=how)
                continue
            if not self._all_ready_once:
                log.error(
                    "supervisor.worker_failed_to_start", worker=worker.index, pid=pid, status=how
                )
                self._stop(signal.SIGTERM, quiet=True)
                self._wait_all(self.shutdown_deadline + STOP_MARGIN_SECONDS)
                return code if code > 0 else 70
            worker.early_deaths = 0 if worker.ready else worker.early_deaths + 1
            delay = min(MAX_BACKOFF_SECONDS, BASE_BACKOFF_SECONDS * 2**worker.early_deaths)
            worker.restart_at = time.monotonic() + delay
            worker.ready = worker.reloading = False
            log.warning(
                "supervisor.worker_exited",
                worker=worker.index,
                pid=pid,
                status=how,
                uptime_seconds=uptime,
                restart_in_seconds=delay,
            )
            self.notifier.status(self.summary())
            self._finish_reload()  # a reload does not wait for a worker that died
        return None

    def _restart_due(self, now: float) -> None:
        for worker in self.workers:
            if worker.proc is None and worker.restart_at is not None and now >= worker.restart_at:
                self._start(worker)

    def _check_watchdogs(self, now: float) -> None:
        for worker in self._live():
            if worker.ready and now - worker.last_ping > self.worker_watchdog:
                log.error("supervisor.worker_hung", worker=worker.index, pid=worker.pid)
                worker.last_ping = now  # one SIGKILL; the reaper replaces it
                self._signal(worker, signal.SIGKILL)

    def _live(self) -> list[Worker]:
        return [w for w in self.workers if w.proc is not None]

    def _signal(self, worker: Worker, signum: int) -> None:
        if worker.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signum)

    def _wait_all(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for worker in self._live():
            assert worker.proc is not None
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            self.on_exit(worker.proc.pid)
            worker.proc = None

    def _kill_all(self) -> None:
        """Whatever is still running when the supervisor leaves (an error) goes with it."""
        for worker in self._live():
            self._signal(worker, signal.SIGKILL)
        self._wait_all(5.0)

    # --- signals ------------------------------------------------------------------
    def _install_signals(self) -> dict[int, object]:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self._signals.append(signum)

        old: dict[int, object] = {}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            old[signum] = signal.signal(signum, on_signal)
        old[-1] = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        return old

    def _restore_signals(self, old: dict[int, object]) -> None:
        wakeup = old.pop(-1)
        signal.set_wakeup_fd(wakeup if isinstance(wakeup, int) else -1)
        for signum, handler in old.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _take_signals(self) -> list[int]:
        taken, self._signals[:] = list(self._signals), []
        return taken

    def _stop(self, signum: int, *, quiet: bool = False) -> float:
        """Forward a stop signal; the moment stragglers are killed (0 when unchanged)."""
        self._stopping += 1
        name = signal.Signals(signum).name
        if not quiet:
            log.info("supervisor.stopping", signal=name, workers=len(self._live()))
        if self._stopping == 1:
            self.notifier.stopping("draining workers")
        for worker in self._live():
            self._signal(worker, signal.SIGTERM)
        if self._stopping == 1:
            return time.monotonic() + self.shutdown_deadline + STOP_MARGIN_SECONDS
        return time.monotonic() + 5.0  # the second signal: workers exit at once

    def _reload(self) -> None:
        if self._stopping:
            return
        log.info("supervisor.reloading", workers=len(self._live()))
        self.notifier.reloading()
        self._reload_pending = True
        for worker in self._live():
            if worker.ready:
                worker.reloading = True
                self._signal(worker, signal.SIGHUP)
        self._finish_reload()

    def _finish_reload(self) -> None:
        if self._reload_pending and not any(w.reloading for w in self._live()):
            self._reload_pending = False
            failed = [w.status for w in self.workers if "reload failed" in w.status]
            self.notifier.ready(failed[0] if failed else self.summary())

    # --- notifications from workers ----------------------------------------------
    def _read_notifications(self) -> None:
        creds_size = struct.calcsize("3i")
        while True:
            try:
                data, ancillary, _flags, _addr = self._inbox.recvmsg(
                    4096, socket.CMSG_SPACE(creds_size)
                )
            except BlockingIOError:
                return
            pid = _sender_pid(ancillary, creds_size)
            worker = next((w for w in self._live() if w.pid == pid), None)
            if worker is None:
                continue  # not one of ours (or one already reaped)
            lines = data.decode("utf-8", "replace").splitlines()
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            self._on_notification(worker, fields)

    def _on_notification(self, worker: Worker, fields: dict[str, str]) -> None:
        worker.last_ping = time.monotonic()
        if "STATUS" in fields:
            worker.status = fields["STATUS"]
        if fields.get("READY") == "1":
            first = not worker.ready
            worker.ready, worker.reloading = True, False
            worker.early_deaths = 0
            if first:
                log.info("supervisor.worker_ready", worker=worker.index, pid=worker.pid)
            if not self._all_ready_once and all(w.ready for w in self.workers):
                self._all_ready_once = True
                self.notifier.ready(self.summary())
                log.info("supervisor.ready", workers=self.count, pids=self.pids())
            elif first and self._all_ready_once:
                self.notifier.status(self.summary())
            self._finish_reload()

    # --- reporting ----------------------------------------------------------------
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid is not None]

    def summary(self) -> str:
        """One line for ``systemctl status``: how many workers serve, then a worker's own."""
        ready = [w for w in self.workers if w.ready]
        line = f"{len(ready)}/{self.count} workers ready (pids {', '.join(map(str, self.pids()))})"
        return f"{line}; {ready[0].status}" if ready and ready[0].status else line


def _sender_pid(ancillary: list[tuple[int, int, bytes]], size: int) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= size:
            pid, _uid, _gid = struct.unpack("3i", data[:size])
            return int(pid)
    return None


def die_with_supervisor(env: Mapping[str, str]) -> None:
    """In a worker, first thing: get SIGTERM when the supervisor dies (Linux's
    ``PR_SET_PDEATHSIG``), so no worker outlives it; exit if it is gone already."""
    parent = env.get("EMAILD_SUPERVISOR_PID", "")
    if not parent.isdigit():
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):  # it died before prctl took effect
        sys.exit(1)


def worker_command(config_path: Path | None, log_level: str | None) -> list[str]:
    """``emaild [--config PATH] run --workers 1`` with this interpreter."""
    command = [sys.executable, "-m", "emaild"]
    if config_path:
        command += ["--config", str(Path(config_path).resolve())]
    command += ["run", "--workers", "1"]
    if log_level:
        command += ["--log-level", log_level]
    return command
