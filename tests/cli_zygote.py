"""``emaild ARGS`` in a fresh process that starts with emaild already imported.

Most CLI tests run ``python -m emaild ...`` as a subprocess, and every one of
them paid the interpreter's start-up and the imports of the configuration,
SQLAlchemy and the pipeline (about 2 s here): a large share of the suite's
time. The zygote is a plain Python process, started once per test worker,
that imports what the commands import and then waits on a unix socket. Each
call makes it fork: the child takes the caller's stdin, stdout and stderr
(passed over the socket), its environment, working directory and arguments,
and runs ``python -m emaild`` exactly as the interpreter would (``runpy``,
``__main__``, ``sys.exit``, interpreter shutdown). A grandchild runs the
command; its parent reports the exit status. Nothing is shared between calls
but the imported modules, which read no environment when imported.

What a forked child cannot reproduce, a real subprocess still does: calls
whose environment changes how a module behaves once imported
(``IMPORT_TIME_ENV``), and tests of start-up itself, which run their own
subprocesses.

    python tests/cli_zygote.py SOCKET   # the server (``Zygote.start`` runs it)
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Variables read when a module is imported (prometheus_client picks its value
# class from this one): a call that sets one gets a real subprocess.
IMPORT_TIME_ENV = ("PROMETHEUS_MULTIPROC_DIR", "PYTHONPATH", "PYTHONHASHSEED")
# What the commands import lazily, imported once in the zygote.
PRELOAD = (
    "emaild.cli",
    "emaild.app",
    "emaild.channels.pipe.answer",
    "emaild.store.migrations",
    "alembic.command",
    "alembic.config",
    "alembic.runtime.migration",
    "alembic.operations",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql",
    "psycopg",
)
_MAX_REQUEST = 16 << 20


# --- the server -------------------------------------------------------------------
def serve(path: str) -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    # Move what the preload made out of the collector's sight (gc.freeze's own
    # use case): otherwise every child's collections, and its interpreter
    # shutdown, walk and write to all those objects, copying each page of the
    # parent's heap (0.45 s of a 0.55 s `--version` here).
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    # Children are reaped by the kernel; each handler reaps its own command.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    parent = os.getppid()
    listener.settimeout(2)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test worker is gone: so is the zygote
                return
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _handle(conn)  # never returns in the command's process
            os._exit(0)
        conn.close()


def _handle(conn: socket.socket) -> None:
    _, fds, _flags, _addr = socket.recv_fds(conn, 1, 3)
    with conn.makefile("rb") as lines:
        request = json.loads(lines.readline(_MAX_REQUEST))
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become_command(request, fds)  # raises SystemExit: the interpreter ends normally
    for fd in fds:
        os.close(fd)
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    conn.close()


def _become_command(request: dict[str, Any], fds: list[int]) -> None:
    import runpy

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.setsid()  # its own process group: a timeout kills it and whatever it started
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["emaild", *request["args"]]
    runpy.run_module("emaild", run_name="__main__", alter_sys=True)
    raise SystemExit(0)


# --- the client ---------------------------------------------------------------------
class Zygote:
    """One zygote process; ``run`` is ``subprocess.run([python, -m, emaild, ...])``."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "zygote.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, self.path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the CLI zygote did not start (exit {self.proc.poll()})")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def run(
        self, args: list[str], *, input: bytes | None, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        if any(key in env for key in IMPORT_TIME_ENV):
            return subprocess.run(
                [sys.executable, "-m", "emaild", *args],
                input=input,
                capture_output=True,
                env=env,
                timeout=timeout,
                check=False,
            )
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            conn = self._request(args, env, [stdin_r, out_w, err_w])
        except BaseException:
            for fd in (stdin_w, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (stdin_r, out_w, err_w):
                os.close(fd)
        deadline = time.monotonic() + timeout
        pid = 0
        conn.settimeout(timeout)
        reply = conn.makefile("rb")
        try:
            try:
                pid = json.loads(reply.readline())["pid"]
            except BaseException:
                for fd in (stdin_w, out_r, err_r):
                    os.close(fd)
                raise
            stdout, stderr = _communicate(stdin_w, out_r, err_r, input or b"", deadline)
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            returncode = json.loads(reply.readline())["returncode"]
        except TimeoutError:
            if pid:
                os.killpg(pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired(["emaild", *args], timeout) from None
        finally:
            conn.close()
            reply.close()
        return subprocess.CompletedProcess(["emaild", *args], returncode, stdout, stderr)

    def popen(
        self, args: list[str], *, env: dict[str, str], stdin: int | None, stdout: int, stderr: int
    ) -> ZygoteProcess | subprocess.Popen[bytes]:
        """``subprocess.Popen([python, -m, emaild, *args], ...)`` over the given descriptors
        (``stdin`` None: /dev/null)."""
        if any(key in env for key in IMPORT_TIME_ENV):
            return subprocess.Popen(
                [sys.executable, "-m", "emaild", *args],
                env=env,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        null = os.open(os.devnull, os.O_RDONLY) if stdin is None else -1
        try:
            conn = self._request(args, env, [stdin if stdin is not None else null, stdout, stderr])
        finally:
            if null >= 0:
                os.close(null)
        return ZygoteProcess(conn, ["emaild", *args])

    def _request(self, args: list[str], env: dict[str, str], fds: list[int]) -> socket.socket:
        """Ask for a command over stdin, stdout and stderr ``fds``; the open connection."""
        request = {"args": args, "env": env, "cwd": os.getcwd()}
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            socket.send_fds(conn, [b"\0"], fds)
            conn.sendall(json.dumps(request).encode() + b"\n")
        except BaseException:
            conn.close()
            raise
        return conn


class ZygoteProcess:
    """A command the zygote forked, with what tests use of ``Popen``.

    It is not our child: its exit status arrives over the connection (a thread
    waits for it), and signals go to its pid while it runs.
    """

    def __init__(self, conn: socket.socket, args: list[str]) -> None:
        self.args = args
        self.returncode: int | None = None
        self._conn = conn
        self._reply = conn.makefile("rb")
        self.pid = int(json.loads(self._reply.readline())["pid"])
        self._done = threading.Event()
        threading.Thread(target=self._wait_status, daemon=True).start()

    def _wait_status(self) -> None:
        try:
            line = self._reply.readline()
            # No status line: the zygote's handler died with the command (killed).
            self.returncode = int(json.loads(line)["returncode"]) if line else -signal.SIGKILL
        finally:
            self._reply.close()
            self._conn.close()
            self._done.set()

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if not self._done.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_shared: Zygote | None = None
_shared_lock = threading.Lock()


def shared() -> Zygote:
    """This process's zygote, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            directory = Path(tempfile.mkdtemp(prefix="emaild-zygote-"))
            zygote = Zygote(directory)
            zygote.start()
            atexit.register(zygote.stop)
            atexit.register(shutil.rmtree, directory, True)
            _shared = zygote
        return _shared


def _communicate(
    stdin: int, stdout: int, stderr: int, data: bytes, deadline: float
) -> tuple[bytes, bytes]:
    """Feed ``data`` to ``stdin`` and read both outputs to their end (TimeoutError after
    ``deadline``); every descriptor is closed on return."""
    out: dict[int, list[bytes]] = {stdout: [], stderr: []}
    view = memoryview(data)
    os.set_blocking(stdin, False)
    selector = selectors.DefaultSelector()
    try:
        if view:
            selector.register(stdin, selectors.EVENT_WRITE)
        else:
            os.close(stdin)
            stdin = -1
        for fd in out:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            for key, _ in selector.select(left):
                fd = int(key.fd)
                if fd == stdin:
                    try:
                        view = view[os.write(fd, view[:65536]) :]
                    except BrokenPipeError:
                        view = view[:0]
                    if not view:
                        selector.unregister(fd)
                        os.close(fd)
                        stdin = -1
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    out[fd].append(chunk)
                else:
                    selector.unregister(fd)
    finally:
        selector.close()
        for fd in (stdin, stdout, stderr):
            if fd >= 0:
                os.close(fd)
    return b"".join(out[stdout]), b"".join(out[stderr])


if __name__ == "__main__":
    serve(sys.argv[1])
