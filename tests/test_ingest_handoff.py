"""``emaild ingest`` hands its message to a running daemon over STATE_DIR/ingest.sock.

Everything runs as real processes: ``emaild run`` (the daemon) and ``emaild
ingest`` (what an MTA's pipe starts; forked by the tests' CLI zygote, so the
fallback runs don't each pay the pipeline's imports). The hand-off must give
the same exit status and output as the in-process path, and fall back to it
when no daemon answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cli_zygote
import pytest

# A database the ingest process cannot reach: only the daemon can store the message.
UNREACHABLE_DB = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=2"
LIMIT = 20_000
CONFIG = f"[limits]\nmax_message_bytes = {LIMIT}\n"


def message(n: int, body: bytes = b"The printer is broken.\r\n") -> bytes:
    return (
        b"From: Kim Kunde <kim@customer.test>\r\n"
        b"To: Support <support@example.com>\r\n"
        b"Subject: printer " + str(n).encode() + b"\r\n"
        b"Message-ID: <handoff-" + str(n).encode() + b"@customer.test>\r\n"
        b"\r\n" + body
    )


class Daemon:
    """``emaild run`` in a subprocess on the test's state directory."""

    def __init__(self, env: dict[str, str], state_dir: Path) -> None:
        self.env = dict(env, EMAILD_SMTP_LISTEN="127.0.0.1:0")
        self.socket = state_dir / "ingest.sock"
        self.log = state_dir.parent / f"daemon-{id(self)}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as log:  # the child keeps its own copy of the file
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "emaild", "run"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 90
        while not self._serving():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the daemon's ingest socket never came up"
            time.sleep(0.1)
        return self

    def _serving(self) -> bool:
        import socket

        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(self.socket))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.proc.wait(60)


@pytest.fixture
def daemon_env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "emaild.toml"
    config.write_text(CONFIG)
    return dict(cli_env, EMAILD_CONFIG=str(config))


@pytest.fixture
def daemon(daemon_env: dict[str, str], state_dir: Path) -> Iterator[Daemon]:
    running = Daemon(daemon_env, state_dir).start()
    yield running
    running.stop(signal.SIGKILL)


def ingest(env: dict[str, str], raw: bytes, *args: str) -> tuple[int, str, str]:
    proc = cli_zygote.shared().run(["ingest", *args], input=raw, env=env, timeout=120)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_daemon_stores_what_ingest_hands_it(daemon: Daemon, daemon_env: dict[str, str]) -> None:
    # The ingest process itself could store nothing: its database is unreachable.
    cut_off = dict(daemon_env, EMAILD_DATABASE_URL=UNREACHABLE_DB)
    code, out, err = ingest(
        cut_off, message(1), "--to", "support@example.com", "--from", "kim@customer.test"
    )
    assert (code, err) == (0, ""), err
    number = int(out)
    shown = cli_zygote.shared().run(
        ["cases", "show", str(number), "--json"], input=None, env=daemon_env, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert b"printer 1" in shown.stdout
    # -v means this process runs the pipeline (its log is wanted): it cannot here.
    code, _, err = ingest(cut_off, message(2), "-v")
    assert code == 75, err


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_handed_off_answers_are_the_in_process_answers(
    daemon: Daemon, daemon_env: dict[str, str], tmp_path: Path
) -> None:
    """The same inputs into a state directory with a daemon and one without."""
    alone = dict(daemon_env, EMAILD_STATE_DIR=str(tmp_path / "no-daemon"))
    # Only the daemon can store what is handed to it: proof that it was.
    handing = dict(daemon_env, EMAILD_DATABASE_URL=UNREACHABLE_DB)
    cases: list[tuple[bytes, tuple[str, ...]]] = [
        (message(1), ()),
        (message(1), ()),  # a duplicate
        (message(2), ("--to", "support@example.com", "--json")),
        (message(3), ("--to", "nobody@example.com")),  # not a routing address: 75
        (b"hello\n", ()),  # not a message: 65, kept in quarantine
        (b"", ()),  # empty: 65
        (message(4, b"x" * 20 * LIMIT), ()),  # over the size limit (and any socket buffer): 65
    ]
    codes = []
    for raw, args in cases:
        handed = ingest(handing, raw, *args)
        itself = ingest(alone, raw, *args)
        assert handed == itself, (args, raw[:40])
        codes.append(handed[0])
    assert codes == [0, 0, 0, 75, 65, 65, 65]
    assert not (tmp_path / "no-daemon" / "ingest.sock").exists()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_dead_daemons_socket_falls_back_and_is_replaced(
    daemon_env: dict[str, str], state_dir: Path
) -> None:
    first = Daemon(daemon_env, state_dir).start()
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert (state_dir / "ingest.sock").is_socket()  # stale: nobody listens
    code, out, err = ingest(daemon_env, message(1))  # runs the pipeline itself
    assert (code, out.strip(), err) == (0, "1", "")
    second = Daemon(daemon_env, state_dir).start()
    try:
        cut_off = dict(daemon_env, EMAILD_DATABASE_URL=UNREACHABLE_DB)
        assert ingest(cut_off, message(2))[:2] == (0, "2\n")
    finally:
        assert second.stop() == 0
    assert not (state_dir / "ingest.sock").exists()  # removed on a clean stop
    assert os.path.exists(state_dir / "emaild.db")
