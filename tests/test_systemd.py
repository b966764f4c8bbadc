"""systemd integration: unit files, sd_notify over real datagram sockets, watchdog
pings and socket activation of a real ``emaild run``."""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, require
from smtp_helpers import daemon_process

from emaild.systemd import Notifier, listen_fds


@pytest.mark.parametrize("unit", ["emaild.service", "emaild.socket", "emaild-http.socket"])
def test_units_pass_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze is not installed")
    assert analyze is not None
    # Documentation=man:emaild(1) must resolve: the generated page, where man finds it.
    man1 = tmp_path / "man" / "man1"
    man1.mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "emaild.1", man1 / "emaild.1")
    done = subprocess.run(
        [analyze, "verify", str(ROOT / "systemd" / unit)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MANPATH": str(tmp_path / "man")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "emaild" not in done.stderr  # verify prints warnings without failing


def test_service_unit_has_the_promised_settings() -> None:
    text = (ROOT / "systemd" / "emaild.service").read_text()
    settings = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert settings["Type"] == "notify"
    assert settings["RestartPreventExitStatus"] == "78"
    assert settings["Restart"] == "on-failure"
    assert settings["WatchdogSec"]
    assert settings["DynamicUser"] == "yes" and settings["StateDirectory"] == "emaild"
    assert settings["ProtectSystem"] == "strict"
    assert settings["CapabilityBoundingSet"] == ""
    assert settings["NoNewPrivileges"] == "yes" and settings["PrivateTmp"] == "yes"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"


def receive(sock: socket.socket) -> str:
    sock.settimeout(5)
    return sock.recv(4096).decode()


def test_notify_sends_datagrams_to_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.enabled
        assert notifier.ready("listening on\nsmtp 127.0.0.1:25")
        assert receive(server) == "READY=1\nSTATUS=listening on smtp 127.0.0.1:25"
        assert notifier.watchdog()
        assert receive(server) == "WATCHDOG=1"
        assert notifier.reloading()
        reloading = receive(server).splitlines()
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert notifier.stopping()
        assert receive(server) == "STOPPING=1"
        notifier.close()


def test_notify_supports_the_abstract_namespace() -> None:
    name = f"emaild-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(b"\0" + name.encode())
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.status("ok")
        assert receive(server) == "STATUS=ok"
        notifier.close()


def test_notify_without_a_manager_or_with_a_dead_socket_is_harmless(tmp_path: Path) -> None:
    assert not Notifier({}).enabled
    assert Notifier({}).ready() is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.ready() is False  # logged once, never raised
    gone.close()


def test_watchdog_interval_is_only_for_this_process() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_seconds == 30.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_seconds == 2.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_seconds is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_seconds is None


def test_listen_fds_ignores_sockets_meant_for_another_process() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "smtp"}
    assert listen_fds(env) == []
    assert env == {}  # unset, like sd_listen_fds(1), so children do not inherit them


def test_daemon_pings_the_watchdog_and_reports_status(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "WATCHDOG_USEC": "400000"}
    with daemon_process(env, tmp_path) as daemon:
        ready = daemon.notifications[-1]
        assert ready["READY"] == "1"
        assert f"smtp 127.0.0.1:{daemon.smtp_port}" in ready["STATUS"]
        assert f"lmtp 127.0.0.1:{daemon.lmtp_port}" in ready["STATUS"]
        for _ in range(3):
            assert daemon.wait_for("WATCHDOG", timeout=5)["WATCHDOG"] == "1"
        daemon.signal(signal.SIGTERM)
        daemon.wait_for("STOPPING")
        assert daemon.wait() == 0


# sd_listen_fds(3) as systemd does it: the socket on fd 3, LISTEN_PID = the
# daemon's own pid (the shell execs, keeping its pid), names in LISTEN_FDNAMES.
ACTIVATE = 'exec 3<&0 0</dev/null; export LISTEN_PID=$$; exec "$@"'


@pytest.mark.parametrize("fdname", ["smtp", "lmtp"])
def test_socket_activation_serves_the_inherited_socket(
    cli_env: dict[str, str], tmp_path: Path, fdname: str
) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        env = {**cli_env, "LISTEN_FDS": "1", "LISTEN_FDNAMES": fdname}
        with daemon_process(
            env, tmp_path, stdin=listening.fileno(), wrapper=["/bin/sh", "-c", ACTIVATE, "sh"]
        ) as daemon:
            assert f"{fdname} 127.0.0.1:{port}" in daemon.notifications[-1]["STATUS"]
            # The configured addresses are not used while systemd provides sockets.
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", daemon.smtp_port), timeout=5).close()
            raw = (
                b"From: a@customer.test\r\nTo: support@example.com\r\nSubject: activated\r\n"
                b"Message-ID: <activated-" + fdname.encode() + b"@customer.test>\r\n\r\nhi\r\n"
            )
            client_class = smtplib.LMTP if fdname == "lmtp" else smtplib.SMTP
            with client_class("127.0.0.1", port) as client:
                assert client.sendmail("a@customer.test", ["support@example.com"], raw) == {}
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
