"""A real rspamd (Debian's package) for the tests, on loopback ports with its own config dir.

Debian's ``/etc/rspamd/rspamd.conf`` is used as shipped; everything local to
the test (ports, log, database and run directories, GTUBE on, DNS pointed at
a closed loopback port so nothing leaves the machine) comes from a private
``LOCAL_CONFDIR`` and ``--var`` overrides. As root, rspamd drops to nobody.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def rspamd(workdir: Path) -> Iterator[str]:
    """Start rspamd; yields its normal worker's URL; stops it (its process group) after."""
    binary = shutil.which("rspamd")
    assert binary is not None, "rspamd is not installed (.ci/run installs it)"
    local = workdir / "local"
    for sub in ("local/local.d", "local/override.d", "db", "run", "log"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("db", "run", "log"):
        (workdir / sub).chmod(0o777)  # the workers run as nobody when started as root
    port = free_port()
    (local / "override.d/worker-normal.inc").write_text(
        f'bind_socket = "127.0.0.1:{port}";\ncount = 1;\n'
    )
    for worker in ("controller", "proxy"):
        (local / f"override.d/worker-{worker}.inc").write_text("count = 0;\n")
    (local / "override.d/logging.inc").write_text(
        f'type = "file";\nfilename = "{workdir}/log/rspamd.log";\nlevel = "error";\n'
    )
    # rspamd compiles its URL matcher from every public suffix at start-up: 14 s
    # here, each time. The tests' mail only uses these.
    tlds = workdir / "tlds.dat"
    tlds.write_text("com\nnet\norg\ntest\nexample\ninvalid\n")
    (local / "local.d/options.inc").write_text(
        "enable_test_patterns = true;\n"
        f'url_tld = "{tlds}";\n'
        'dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }\n'
    )
    command = [binary, "-f", "-c", "/etc/rspamd/rspamd.conf"]
    if os.geteuid() == 0:
        command += ["-i", "-u", "nobody", "-g", "nogroup"]
    for name, value in (
        ("LOCAL_CONFDIR", local),
        ("DBDIR", workdir / "db"),
        ("RUNDIR", workdir / "run"),
        ("LOGDIR", workdir / "log"),
    ):
        command.append(f"--var={name}={value}")
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=1) as reply:
                    if reply.read().strip() == b"pong":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "log/rspamd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rspamd did not start (exit {proc.poll()}): {log}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
