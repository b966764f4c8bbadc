"""A private Postfix instance for tests, configured from the README's own lines.

``Postfix.configure(root, main_cf=..., master_cf=...)`` writes
``root/etc/main.cf`` and ``master.cf``; ``start()`` runs ``postfix -c root/etc
start``: its own config_directory, queue_directory and data_directory under
``root``, smtpd on a free high port on 127.0.0.1 only, nothing relayed outside
(default_transport is ``error:``). ``stop()`` runs ``postfix stop`` and kills
what is left of the instance by process id.

The emaild lines come from README.md ("Postfix in front of emaild") through
``readme_snippet``: the test substitutes paths and ports, nothing else, so the
README and the test cannot drift apart. The private instance adds only what
any second Postfix instance needs (its directories, its listener, a log file)
and turns off Debian's chroot column (the jail is set up by Debian's init
script for /var/spool/postfix only).

Postfix's master runs as root: the test skips without root (fails in CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "### Postfix in front of emaild"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
STOCK_MASTER_CF = (Path("/etc/postfix/master.cf"), Path("/usr/share/postfix/master.cf.dist"))
HOST = "127.0.0.1"


def available() -> str:
    """Why a private Postfix cannot run here, or '' when it can."""
    if not os.access(POSTFIX, os.X_OK):
        return "postfix is not installed (Debian: postfix; scripts/test installs it as root)"
    if os.geteuid() != 0:
        return "Postfix's master must run as root (CI runs the suite as root)"
    if not any(p.is_file() for p in STOCK_MASTER_CF):
        return "no stock master.cf from Debian's postfix package"
    return ""


# --- the README's lines ----------------------------------------------------------
def _section() -> list[str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(SECTION)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "### "))),
        len(lines),
    )
    return lines[start + 1 : end]


def readme_snippet(header: str, nth: int | None = None) -> list[str]:
    """The README lines under the code comment ``# HEADER`` up to the block's blank line.

    Indented code (4 spaces) is unindented once; continuation lines keep their
    own indentation, which master.cf needs. ``nth`` picks one of several
    blocks with the same header; without it the header must be unique.
    """
    lines = _section()
    found = [i for i, line in enumerate(lines) if line.strip() == f"# {header}"]
    if (nth is None and len(found) != 1) or (nth is not None and len(found) <= nth):
        raise AssertionError(f"README {SECTION!r}: {len(found)} code lines '# {header}'")
    snippet: list[str] = []
    for line in lines[found[nth or 0] + 1 :]:
        if not line.startswith("    ") or line.strip().startswith("# /"):
            break
        snippet.append(line[4:])
    return snippet


def readme_command(*prefix: str, run_as: str = "") -> list[str]:
    """The README's shell line starting with ``prefix`` (after ``sudo``), as argv.

    ``run_as`` picks the line run with ``sudo -u RUN_AS``, else one run as
    root. Tests run as root: ``sudo`` is dropped and ``sudo -u USER`` becomes
    ``runuser -u USER --`` (sudo itself may not be installed).
    """
    for line in _section():
        words = shlex.split(line.strip(), comments=True) if line.startswith("    ") else []
        user = ""
        if words[:2] == ["sudo", "-u"]:
            user, words = words[2], words[3:]
        elif words[:1] == ["sudo"]:
            words = words[1:]
        if user == run_as and tuple(words[: len(prefix)]) == prefix:
            return ["runuser", "-u", user, "--", *words] if user else words
    raise AssertionError(f"README {SECTION!r}: no command line {' '.join(prefix)}")


def substitute(lines: list[str], replacements: dict[str, str]) -> list[str]:
    """``lines`` with each README path or port replaced by the test's own."""
    out = []
    for line in lines:
        for old, new in replacements.items():
            line = line.replace(old, new)
        out.append(line)
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _private_master_cf(smtpd_port: int) -> list[str]:
    """Debian's stock master.cf: smtpd on ``127.0.0.1:PORT``, no chroot, no way out.

    The outbound SMTP services (``smtp``, ``relay``) run error(8): whatever a
    wrong configuration would send elsewhere fails here, with no DNS lookup
    and no connection.
    """
    stock = next(p for p in STOCK_MASTER_CF if p.is_file())
    out = []
    for line in stock.read_text().splitlines():
        fields = line.split()
        if line[:1].isalnum() and len(fields) >= 8:
            if fields[:2] == ["smtp", "inet"]:
                fields[0] = f"{HOST}:{smtpd_port}"
            if fields[0] in ("smtp", "relay") and fields[1] == "unix":
                fields[7:] = ["error"]
            if fields[4] == "y":
                fields[4] = "n"
            line = " ".join(fields)
        out.append(line)
    return out


# --- the instance --------------------------------------------------------------
@dataclass
class Delivery:
    """One recipient's outcome in Postfix's log: status sent/deferred/bounced and why."""

    queue_id: str
    recipient: str
    status: str
    dsn: str
    line: str


@dataclass
class Postfix:
    root: Path
    port: int = 0
    config_dir: Path = field(init=False)
    log_path: Path = field(init=False)
    master_pid: int = 0

    def __post_init__(self) -> None:
        self.config_dir = self.root / "etc"
        self.log_path = self.root / "maillog"

    @classmethod
    def configure(cls, root: Path, *, main_cf: list[str], master_cf: list[str]) -> Postfix:
        """Write the configuration under ``root``; ``start()`` starts it.

        ``main_cf`` lines follow the instance's own; ``master_cf`` lines are
        appended to the stock master.cf.
        """
        server = cls(root)
        server.port = free_port()
        queue, data = root / "queue", root / "data"
        for directory in (server.config_dir, queue, data):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postfix")
        own = [
            "# A private test instance (tests/postfix_server.py); emaild's lines follow.",
            "compatibility_level = 3.6",
            f"queue_directory = {queue}",
            f"data_directory = {data}",
            f"maillog_file_prefixes = {root}",
            f"maillog_file = {server.log_path}",
            f"inet_interfaces = {HOST}",
            "inet_protocols = ipv4",
            "myhostname = mx.postfix.test",
            "mydestination =",
            # No trusted network: the test's client is an outside sender.
            "mynetworks =",
            "alias_maps =",
            "alias_database =",
            # Nothing leaves this machine: mail for other domains (bounces included)
            # fails at once. The relayed support domain's addresses are all in
            # the transport map; others are refused at RCPT by the recipient map.
            "relayhost =",
            "default_transport = error:5.7.1 test instance: no outside relay",
            "",
        ]
        (server.config_dir / "main.cf").write_text("\n".join([*own, *main_cf]) + "\n")
        master = _private_master_cf(server.port)
        (server.config_dir / "master.cf").write_text("\n".join([*master, *master_cf]) + "\n")
        return server

    def start(self) -> None:
        """``postfix check`` without a warning (it names misspelt parameters too),
        ``postfix start``, then wait for smtpd.

        ``RuntimeError`` when Postfix rejects the configuration or does not start.
        """
        checked = self.command(POSTFIX, "check")
        if checked.returncode != 0 or "warning" in checked.stderr:
            raise RuntimeError(f"postfix check: {checked.stderr.strip()}")
        started = self.command(POSTFIX, "start")
        if started.returncode != 0:
            raise RuntimeError(f"postfix start: {started.stderr.strip()}\n{self.log()}")
        pid_file = self.root / "queue" / "pid" / "master.pid"
        self.master_pid = int(pid_file.read_text().split()[0])
        self._wait_listening(20.0)

    def command(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``program -c CONFIG_DIR ARGS`` (postfix, postqueue, postconf...)."""
        return subprocess.run(
            [program, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    @property
    def env(self) -> dict[str, str]:
        """Environment for Postfix tools run by others (postmap): this instance's config."""
        return {"MAIL_CONFIG": str(self.config_dir)}

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1) as s:
                if s.recv(256).startswith(b"220"):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"postfix smtpd not answering on {HOST}:{self.port}\n{self.log()}")

    def stop(self) -> None:
        """``postfix stop``, then SIGKILL whatever of the instance is still running."""
        if not self.master_pid:
            return
        pids = [self.master_pid, *self._descendants(self.master_pid)]
        self.command(POSTFIX, "stop")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.master_pid = 0

    @staticmethod
    def _descendants(parent: int) -> list[int]:
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                after_name = stat.read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(after_name[1]), []).append(int(stat.parent.name))
        found, todo = [], [parent]
        while todo and len(found) < 10_000:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    # --- mail in, outcome out ----------------------------------------------------
    def send(
        self, sender: str, recipients: list[str], message: bytes
    ) -> tuple[str, dict[str, str]]:
        """Submit over SMTP like an outside MTA: (queue id, {refused recipient: reply})."""
        refused: dict[str, str] = {}
        with smtplib.SMTP(HOST, self.port, timeout=30) as client:
            client.ehlo("mta.customer.test")
            code, reply = client.mail(sender)
            assert code == 250, reply
            for rcpt in recipients:
                code, reply = client.rcpt(rcpt)
                if code != 250:
                    refused[rcpt] = f"{code} {reply.decode()}"
            if len(refused) == len(recipients):
                return "", refused
            code, reply = client.data(message)
            assert code == 250, reply
        queued = re.search(rb"queued as ([0-9A-Za-z]+)", reply)
        assert queued, reply
        return queued.group(1).decode(), refused

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def deliveries(self, queue_id: str) -> list[Delivery]:
        pattern = re.compile(
            rf" {re.escape(queue_id)}: to=<([^>]*)>,.* dsn=([0-9.]+), status=(\w+)"
        )
        found = []
        for line in self.log().splitlines():
            match = pattern.search(line)
            if match:
                found.append(Delivery(queue_id, match[1], match[3], match[2], line))
        return found

    def wait_delivery(self, queue_id: str, count: int = 1, timeout: float = 20) -> list[Delivery]:
        """The first ``count`` delivery outcomes logged for ``queue_id`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.deliveries(queue_id)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no delivery of {queue_id} logged in {timeout}s:\n{self.log()}")

    def queue(self) -> list[dict[str, object]]:
        """``postqueue -j``: the messages still in Postfix's queue."""
        listed = self.command(POSTQUEUE, "-j")
        assert listed.returncode == 0, listed.stderr
        return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]

    def wait_queued(self, queue_id: str, queue_name: str, timeout: float = 20) -> None:
        """Wait until ``queue_id`` sits in ``queue_name`` (bounded): the delivery
        agent logs its outcome before the queue manager moves the file."""
        deadline = time.monotonic() + timeout
        while True:
            where = [(m["queue_id"], m["queue_name"]) for m in self.queue()]
            if (queue_id, queue_name) in where:
                return
            assert time.monotonic() < deadline, f"{queue_id} not in {queue_name}: {where}"
            time.sleep(0.1)

    def flush(self) -> None:
        """``postqueue -f``: retry the deferred mail now."""
        flushed = self.command(POSTQUEUE, "-f")
        assert flushed.returncode == 0, flushed.stderr


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
