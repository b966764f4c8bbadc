"""The CLI tests' forked ``emaild`` (tests/cli_zygote.py) behaves as ``python -m emaild``.

Every ``run_cli`` call goes through it, so it must give what a subprocess
gives: the same output, exit code and usage text, its own environment and
working directory per call, stdin of any size, and a kill on timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_zygote import Zygote


def real(args: list[str], env: dict[str, str], input: bytes | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "emaild", *args],
        input=input,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["no-such-command"],
        ["check", "--config", "/nonexistent/emaild.toml"],
        ["address", "list", "--json"],
    ],
)
def test_a_forked_call_answers_as_a_subprocess(
    cli_zygote: Zygote, cli_env: dict[str, str], args: list[str]
) -> None:
    expected = real(args, cli_env)
    got = cli_zygote.run(args, input=None, env=cli_env, timeout=60)
    assert (got.returncode, got.stdout, got.stderr) == (
        expected.returncode,
        expected.stdout,
        expected.stderr,
    )


def test_each_call_has_its_own_environment_and_directory(
    cli_zygote: Zygote, cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in cli_env.items() if k not in ("EMAILD_STATE_DIR", "EMAILD_DATABASE_URL")}
    other = tmp_path / "other-state"
    first = cli_zygote.run(
        ["address", "list", "--json"],
        input=None,
        env=dict(env, EMAILD_STATE_DIR=str(other)),
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert (other / "emaild.db").exists()
    # The next call does not see the first one's variable, and runs in this
    # test's directory: its relative --config is found there.
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "relative.toml"
    config.write_text('[storage]\nstate_dir = "from-relative-config"\n')
    second = cli_zygote.run(
        ["address", "list", "--config", "relative.toml"], input=None, env=env, timeout=60
    )
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "from-relative-config" / "emaild.db").exists()


def test_large_stdin_reaches_the_command(cli_zygote: Zygote, cli_env: dict[str, str]) -> None:
    # More than any pipe buffer, all of it one header line: kept in quarantine.
    data = b"x" * (3 << 20)
    got = cli_zygote.run(["ingest"], input=data, env=cli_env, timeout=60)
    assert got.returncode == 0, got.stderr
    assert b"header block of 3145728 bytes" in got.stderr


def test_a_call_over_its_timeout_is_killed(cli_zygote: Zygote, cli_env: dict[str, str]) -> None:
    # An IMAP server that accepts and never greets: the poll waits on it.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        url = f"imap://user@127.0.0.1:{port}/INBOX?tls=plain"
        env = dict(cli_env, EMAILD_IMAP_PASSWORD="secret")
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            cli_zygote.run(["poll", "--once", url], input=None, env=env, timeout=3)
        assert time.monotonic() - started < 10
        server.settimeout(5)
        conn, _ = server.accept()  # the poll did connect
        with conn:
            conn.settimeout(5)
            assert conn.recv(1024) == b""  # and the killed process's socket is closed


def test_a_started_command_can_be_polled_signalled_and_waited_for(
    cli_zygote: Zygote, cli_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        url = f"imap://user@127.0.0.1:{port}/INBOX?tls=plain"
        env = dict(cli_env, EMAILD_IMAP_PASSWORD="secret")
        with (tmp_path / "out").open("wb") as out:
            proc = cli_zygote.popen(
                ["poll", "--once", url],
                env=env,
                stdin=None,
                stdout=out.fileno(),
                stderr=out.fileno(),
            )
        server.settimeout(10)
        conn, _ = server.accept()  # it runs, and waits for a greeting that never comes
        with conn:
            assert proc.poll() is None
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(0.2)
            assert proc.pid != os.getpid()
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
            assert proc.poll() == -signal.SIGKILL
            conn.settimeout(5)
            assert conn.recv(1024) == b""
