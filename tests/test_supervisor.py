"""``emaild run --workers N``: a supervisor and N worker processes on shared listeners,
as real subprocesses on PostgreSQL (SQLite is refused)."""

from __future__ import annotations

import contextlib
import random
import signal
import smtplib
import socket
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from smtp_helpers import DaemonProcess, daemon_process, free_port
from sqlalchemy import select

from emaild.store.database import Database
from emaild.store.models import Message

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SENDER = "alice@customer.test"


def message(tag: str) -> bytes:
    return (
        f"From: Alice <{SENDER}>\r\nTo: support@example.com\r\nSubject: Load {tag}\r\n"
        f"Message-ID: <{tag}@customer.test>\r\n\r\nHello {tag}.\r\n"
    ).encode()


def children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc, as ps does)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(text.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def ready_workers(daemon: DaemonProcess) -> set[int]:
    """Worker pids that said READY and have not exited, from the supervisor's log."""
    ready = {e["pid"] for e in daemon.events("supervisor.worker_ready")}
    gone = {e["pid"] for e in daemon.events("supervisor.worker_exited")}
    return ready - gone


def serving(pids: set[int], least: int) -> list[int]:
    return sorted(pids) if len(pids) >= least else []


def wait_until(condition: Any, timeout: float, what: str, daemon: DaemonProcess) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; log tail:\n{daemon.log()[-3000:]}")


def stored_counts(database_url: str) -> Counter[str]:
    db = Database(database_url)
    try:
        with db.session() as s:
            rows = s.execute(select(Message.message_id, Message.case_id)).all()
    finally:
        db.dispose()
    assert all(case_id is not None for _, case_id in rows)
    return Counter(message_id for message_id, _ in rows)


class Load:
    """Client threads sending unique messages until stopped; a failed one is retried
    (as an MTA would: the same Message-ID), so a kill can cause no loss and no copy."""

    def __init__(self, port: int, threads: int) -> None:
        self.port = port
        self.accepted: list[str] = []
        self.failures = 0
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(threads)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def client(self, n: int) -> None:
        for i in range(10_000):  # bounded; stopped long before
            tag = f"load-{n}-{i}"
            for _attempt in range(20):
                if self.send(tag):
                    self.accepted.append(f"<{tag}@customer.test>")
                    break
                self.failures += 1
                time.sleep(0.05)
            if self.stop.is_set():
                return

    def send(self, tag: str) -> bool:
        """True when DATA got 250 (what happens at QUIT after it does not matter)."""
        try:
            client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        except (OSError, smtplib.SMTPException):
            return False
        try:
            return client.sendmail(SENDER, ["support@example.com"], message(tag)) == {}
        except (OSError, smtplib.SMTPException):
            return False
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()
            client.close()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive()


@pytest.mark.slow
@on_postgresql
def test_killed_workers_are_replaced_and_every_250_has_exactly_one_case(
    cli_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    workers, kills = 3, 10
    started = time.monotonic()
    rng = random.Random(16)
    with daemon_process(cli_env, tmp_path, run_args=["--workers", str(workers)]) as daemon:
        assert daemon.proc is not None
        supervisor = daemon.proc.pid
        first = ready_workers(daemon)
        assert len(first) == workers and first == children(supervisor)
        assert f"{workers}/{workers} workers ready" in daemon.notifications[-1]["STATUS"]
        load = Load(daemon.smtp_port, threads=4)
        load.start()
        killed: list[int] = []
        try:
            for _ in range(kills):
                # Keep one worker serving while another restarts; kill at a random moment.
                ready = wait_until(
                    lambda: serving(ready_workers(daemon) - set(killed), 2), 60, "workers", daemon
                )
                time.sleep(rng.uniform(0.05, 1.0))
                victim = rng.choice(ready)
                daemon.proc.send_signal(0)  # the supervisor is still there
                signal_worker(victim)
                killed.append(victim)
            # The last victim counts as ready until the supervisor logs its exit.
            wait_until(
                lambda: len(ready_workers(daemon) - set(killed)) == workers,
                60,
                "all workers back",
                daemon,
            )
        finally:
            load.finish()
        served_by = {e["pid"] for e in daemon.events("ingest.stored")}
        now = ready_workers(daemon)
        assert now == children(supervisor) and len(now) == workers
        assert not now & set(killed)
        exits = daemon.events("supervisor.worker_exited")
        assert {e["pid"] for e in exits} == set(killed)
        assert all(e["status"] == "signal SIGKILL" for e in exits)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    # Every worker that lived took mail: the load spread over the processes.
    assert len(served_by) > workers
    counts = stored_counts(database_url)
    assert len(load.accepted) > 50
    assert all(counts[m] == 1 for m in load.accepted), "a 250 without exactly one stored copy"
    assert max(counts.values()) == 1  # nothing stored twice, retried or not
    assert time.monotonic() - started < 120


def signal_worker(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGKILL)


@on_sqlite
def test_sqlite_with_several_workers_exits_78_with_one_line(run_cli: Any) -> None:
    done = run_cli("run", "--workers", "2", env={"EMAILD_SMTP_LISTEN": "127.0.0.1:0"})
    assert done.returncode == 78
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "SQLite allows one writer process" in lines[0]
    assert "PostgreSQL" in lines[0] and "--workers 1" in lines[0]


@on_postgresql
def test_sigterm_drains_all_workers_and_sighup_reloads_each(
    cli_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    config = tmp_path / "emaild.toml"
    config.write_text('[[address]]\naddress = "support@example.com"\n')
    http_port = free_port()
    env = {**cli_env, "EMAILD_HTTP_LISTEN": f"127.0.0.1:{http_port}"}
    with daemon_process(
        env, tmp_path, args=["--config", str(config)], run_args=["--workers", "2"]
    ) as daemon:
        assert daemon.proc is not None
        pids = ready_workers(daemon)
        assert len(pids) == 2 and pids == children(daemon.proc.pid)
        config.write_text(
            '[[address]]\naddress = "support@example.com"\n'
            '[[address]]\naddress = "sales@example.com"\n'
        )
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_for("RELOADING")["RELOADING"] == "1"
        assert "2/2 workers ready" in daemon.wait_for("READY")["STATUS"]
        assert {e["pid"] for e in daemon.events("daemon.reloaded")} == pids
        # Whichever worker takes the connection knows the new address; go on
        # until both workers have stored mail (bounded).
        sent = 0
        while sent < 8 or len({e["pid"] for e in daemon.events("ingest.stored")}) < 2:
            assert sent < 60, "the kernel gave every connection to one worker"
            with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as client:
                assert client.sendmail(SENDER, ["sales@example.com"], message(f"hup-{sent}")) == {}
            sent += 1
        # /metrics counts the messages of all workers, whichever worker answers.
        for _ in range(6):
            assert smtp_messages(http_port) == sent
        # A message in the middle of DATA when SIGTERM comes still completes.
        client = smtplib.SMTP("127.0.0.1", daemon.smtp_port)
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("support@example.com")
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(b"Subject: drain\r\nMessage-ID: <drain@customer.test>\r\n\r\nhalf ")
        time.sleep(0.2)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_for("STOPPING")["STOPPING"] == "1"
        time.sleep(0.5)
        client.send(b"the rest\r\n.\r\n")
        assert client.getreply()[0] == 250
        client.close()
        assert daemon.wait(60) == 0
        stopped = {e["pid"]: e["status"] for e in daemon.events("supervisor.worker_stopped")}
        assert stopped == {pid: "exit 0" for pid in pids}
        assert {e["pid"] for e in daemon.events("daemon.stopped")} == pids
    counts = stored_counts(database_url)
    assert counts["<drain@customer.test>"] == 1
    assert all(counts[f"<hup-{n}@customer.test>"] == 1 for n in range(sent))


def smtp_messages(port: int) -> float:
    """``emaild_messages_total`` of the smtp channel, all outcomes, from one scrape."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('emaild_messages_total{channel="smtp"')
    )


CRASHING_WORKER = r"""
import sys, time
from pathlib import Path
from emaild.systemd import Notifier

started = Path(sys.argv[1])
if not started.exists():  # the first one comes up, then dies
    started.write_text("up")
    Notifier().ready("up")
    time.sleep(0.3)
    sys.exit(3)
sys.exit(4)  # every replacement dies before it is ready
"""

SUPERVISOR = r"""
import sys
from emaild import logs
from emaild.supervisor import Supervisor

logs.configure("info", "json")
command = [sys.executable, sys.argv[1], sys.argv[2]]
supervisor = Supervisor(
    count=1, sockets=[], command=command, shutdown_deadline=2, worker_watchdog=2.0
)
sys.exit(supervisor.run())
"""

# Ready, then stuck: no watchdog ping ever (a blocked event loop).
STUCK_WORKER = r"""
import sys, time
from emaild.systemd import Notifier

Notifier().ready("up")
time.sleep(120)
"""


def run_supervisor(tmp_path: Path, worker_code: str) -> tuple[Any, DaemonProcess]:
    """The supervisor of ``SUPERVISOR`` over one ``worker_code`` worker; its log reader."""
    import subprocess
    import sys

    worker = tmp_path / "worker.py"
    worker.write_text(worker_code)
    log = tmp_path / "supervisor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, str(worker), str(tmp_path / "started")],
            stdout=out,
            stderr=out,
        )
    reader = DaemonProcess.__new__(DaemonProcess)
    reader.log_path = log
    return proc, reader


def test_a_crash_loop_backs_off_and_the_supervisor_still_stops_cleanly(tmp_path: Path) -> None:
    proc, daemon = run_supervisor(tmp_path, CRASHING_WORKER)
    try:
        exits = wait_until(
            lambda: (e := daemon.events("supervisor.worker_exited")) and len(e) >= 4 and e,
            60,
            "four exits",
            daemon,
        )
        assert [e["status"] for e in exits[:4]] == ["exit 3", "exit 4", "exit 4", "exit 4"]
        # Ready once, then died: a short pause; dying before ready doubles it.
        assert [e["restart_in_seconds"] for e in exits[:4]] == [0.5, 1.0, 2.0, 4.0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    starts = daemon.events("supervisor.worker_started")
    assert len(starts) <= len(daemon.events("supervisor.worker_exited")) + 1


def test_a_worker_that_stops_pinging_is_killed_and_replaced(tmp_path: Path) -> None:
    proc, daemon = run_supervisor(tmp_path, STUCK_WORKER)
    try:
        [hung, *_] = wait_until(
            lambda: daemon.events("supervisor.worker_hung"), 30, "a hung worker", daemon
        )
        first = daemon.events("supervisor.worker_started")[0]["pid"]
        assert hung["pid"] == first
        exited = wait_until(
            lambda: daemon.events("supervisor.worker_exited"), 10, "its exit", daemon
        )
        assert exited[0]["pid"] == first and exited[0]["status"] == "signal SIGKILL"
        wait_until(
            lambda: len(daemon.events("supervisor.worker_ready")) >= 2, 30, "a new one", daemon
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# sd_listen_fds(3) as systemd does it (tests/test_systemd.py): the socket on fd 3.
ACTIVATE = 'exec 3<&0 0</dev/null; export LISTEN_PID=$$; exec "$@"'


@on_postgresql
def test_workers_serve_the_socket_systemd_passes(
    cli_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        env = {**cli_env, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "smtp"}
        with daemon_process(
            env,
            tmp_path,
            stdin=listening.fileno(),
            wrapper=["/bin/sh", "-c", ACTIVATE, "sh"],
            run_args=["--workers", "2"],
        ) as daemon:
            assert "2/2 workers ready" in daemon.notifications[-1]["STATUS"]
            assert f"smtp 127.0.0.1:{port}" in daemon.notifications[-1]["STATUS"]
            # The configured address is not bound: systemd's socket is the one.
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", daemon.smtp_port), timeout=5).close()
            listening.close()  # only the workers hold it now
            for n in range(4):
                with smtplib.SMTP("127.0.0.1", port) as client:
                    raw = message(f"sa-{n}")
                    assert client.sendmail(SENDER, ["support@example.com"], raw) == {}
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
    counts = stored_counts(database_url)
    assert all(counts[f"<sa-{n}@customer.test>"] == 1 for n in range(4))


HOLDING_WRITER = r"""
import sys, time
from pathlib import Path
from emaild.store.blobs import FileBlobStore

spool = FileBlobStore(Path(sys.argv[1])).spool()
spool.write(b"a message being received by another worker")
print(spool.path, flush=True)
time.sleep(60)
"""


def test_a_starting_worker_keeps_the_spool_files_another_live_worker_writes(
    tmp_path: Path,
) -> None:
    """What a worker's start-up cleanup (``remove_stale_temp``) leaves: files that a
    live process holds (its flock), across processes; a dead one's go."""
    import subprocess
    import sys

    from emaild.store.blobs import FileBlobStore

    blobs = tmp_path / "blobs"
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLDING_WRITER, str(blobs)], stdout=subprocess.PIPE
    )
    try:
        assert writer.stdout is not None
        held = Path(writer.stdout.readline().decode().strip())
        assert held.exists()
        assert FileBlobStore(blobs).remove_stale_temp() == 0
        assert held.exists()
        writer.kill()
        writer.wait(10)
        assert FileBlobStore(blobs).remove_stale_temp() == 1
        assert not held.exists()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
