"""A throwaway Dovecot IMAP server for tests: its own config, users and Maildirs in a tmp dir.

``Dovecot.start(root)`` writes a minimal config under ``root`` and runs
``dovecot -F`` (foreground, so the test process owns it and a crashed test run
leaves nothing behind) listening on 127.0.0.1 only:

- ``port``: plain IMAP with STARTTLS offered (a self-signed certificate is
  generated when ``openssl`` is installed; ``ca_file`` then names it),
- ``tls_port``: implicit TLS (IMAPS), when the certificate exists, else 0.

Each user has a passwd-file of its own (``users/NAME``; Dovecot notices a
changed file only once a second, a new file at once), so a session-scoped
server can hand every test a fresh, empty user with ``new_user()``.
The password doubles as the user's XOAUTH2 token: Dovecot's
OAuth2 mechanisms check the bearer token against the passdb like a password,
which lets tests run real XOAUTH2 logins without an identity provider.

Used by the ``dovecot`` fixture in ``tests/conftest.py``; also handy to start
by hand: ``python tests/dovecot.py`` prints host, port and a user.
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from imapclient import IMAPClient

# EMAILD_DOVECOT names the binary (and lets one check that a missing one fails in CI).
DOVECOT = os.environ.get("EMAILD_DOVECOT") or shutil.which("dovecot") or "/usr/sbin/dovecot"
HOST = "127.0.0.1"


def available() -> bool:
    """True when a dovecot binary is installed."""
    return os.access(DOVECOT, os.X_OK)


def free_port() -> int:
    """A port nobody listens on right now (Dovecot cannot bind port 0 and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ImapUser:
    """A test account: ``password`` is also accepted as its XOAUTH2 token."""

    name: str
    password: str
    home: Path

    @property
    def maildir(self) -> Path:
        return self.home / "Maildir"


class Dovecot:
    """One running Dovecot instance; stop it with ``stop()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = HOST
        self.port = 0
        self.tls_port = 0
        self.ca_file = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.passwd_dir = root / "users"
        self.log = root / "dovecot.log"
        self.users: dict[str, ImapUser] = {}

    # --- lifecycle ------------------------------------------------------
    @classmethod
    def start(cls, root: Path, *, attempts: int = 5) -> Dovecot:
        """Configure and start Dovecot under ``root``; retries if a picked port was taken."""
        server = cls(root)
        root.mkdir(parents=True, exist_ok=True)
        # Dovecot's unprivileged processes (as root: dovecot, dovenull) must traverse it.
        root.chmod(0o755)
        server._make_certificate()
        server.passwd_dir.mkdir(exist_ok=True)
        server.passwd_dir.chmod(0o755)
        last = ""
        for _ in range(attempts):
            server.port = free_port()
            server.tls_port = free_port() if server.ca_file else 0
            server._write_config()
            server.proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            if server._wait_ready(10.0):
                return server
            last = server._stop_process()
        raise RuntimeError(f"dovecot did not start: {last}\n{server.log_tail()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        self._stop_process()

    def _stop_process(self) -> str:
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        return err.strip()

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(256).startswith(b"* OK"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Dovecot's log (for failure messages)."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-lines:])

    # --- users and mail -------------------------------------------------
    def new_user(self, prefix: str = "u") -> ImapUser:
        """A fresh account with an empty INBOX."""
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        password = uuid.uuid4().hex
        home = self.root / "home" / name
        home.mkdir(parents=True)
        _, _, _, uid, gid = self._accounts()
        if os.getuid() == 0:
            os.chown(home, uid, gid)
        user = ImapUser(name, password, home)
        entry = self.passwd_dir / name
        entry.write_text(f"{name}:{{PLAIN}}{password}::::{home}::\n", encoding="utf-8")
        entry.chmod(0o644)
        self.users[name] = user
        return user

    def mailbox_toml(
        self, user: ImapUser, *, password_file: str = "", **keys: str | bool | float
    ) -> str:
        """A ``[[mailbox]]`` table named "support" for ``user`` on this server.

        The password goes inline unless ``password_file`` names a file; ``keys``
        add or override settings (``idle=False``, ``poll_interval_seconds=300.0``).
        """
        settings: dict[str, str | bool | float] = {
            "name": "support",
            "host": self.host,
            "port": self.port,
            "tls": "plain",
            "user": user.name,
        }
        if password_file:
            settings["password_file"] = password_file
        else:
            settings["password"] = user.password
        settings.update(keys)
        lines = ["[[mailbox]]"]
        for key, value in settings.items():
            if isinstance(value, bool):
                rendered = "true" if value else "false"
            elif isinstance(value, str):
                rendered = json.dumps(value)  # a TOML basic string for these values
            else:
                rendered = repr(value)
            lines.append(f"{key} = {rendered}")
        return "\n".join(lines) + "\n"

    def client(self, user: ImapUser, *, timeout: float = 30.0) -> IMAPClient:
        """A logged-in plain-IMAP client for ``user`` (the caller logs out)."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        client.login(user.name, user.password)
        return client

    def append(
        self,
        user: ImapUser,
        messages: list[bytes],
        folder: str = "INBOX",
        flags: tuple[str, ...] = (),
    ) -> None:
        """APPEND ``messages`` to ``folder`` (created if missing) over IMAP."""
        client = self.client(user)
        try:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            if len(messages) > 1 and client.has_capability("MULTIAPPEND"):
                for start in range(0, len(messages), 200):
                    chunk = messages[start : start + 200]
                    client.multiappend(folder, [{"msg": m, "flags": flags} for m in chunk])
            else:
                for msg in messages:
                    client.append(folder, msg, flags=flags)
        finally:
            client.logout()

    # --- config ---------------------------------------------------------
    def _make_certificate(self) -> None:
        openssl = shutil.which("openssl")
        if not openssl:
            return
        cert, key = self.root / "cert.pem", self.root / "key.pem"
        done = subprocess.run(
            [
                *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"),
                *("-keyout", str(key), "-out", str(cert)),
            ],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            key.chmod(0o600)
            self.ca_file = str(cert)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this server's self-signed certificate."""
        return ssl.create_default_context(cafile=self.ca_file)

    def _accounts(self) -> tuple[str, str, str, int, int]:
        """(login user, internal user, internal group, mail uid, mail gid).

        As root, Dovecot refuses to run login processes or mail access as root,
        so the Debian package's unprivileged users take over; otherwise every
        service runs as the invoking user.
        """
        if os.getuid() != 0:
            me, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
            return me, me, group, os.getuid(), os.getgid()
        internal = pwd.getpwnam("dovecot")
        login = pwd.getpwnam("dovenull")
        group = grp.getgrgid(internal.pw_gid).gr_name
        return login.pw_name, internal.pw_name, group, internal.pw_uid, internal.pw_gid

    def _write_config(self) -> None:
        login_user, user, group, uid, gid = self._accounts()
        root = self.root
        for sub in ("run", "state", "home"):
            (root / sub).mkdir(exist_ok=True)
        tls = "no"
        tls_settings = ""
        imaps = ""
        if self.ca_file:
            tls = "yes"
            tls_settings = f"ssl_cert = <{root / 'cert.pem'}\nssl_key = <{root / 'key.pem'}\n"
            imaps = (
                f"  inet_listener imaps {{\n    address = {HOST}\n"
                f"    port = {self.tls_port}\n    ssl = yes\n  }}\n"
            )
        text = f"""# Generated by tests/dovecot.py; throwaway.
base_dir = {root / "run"}
state_dir = {root / "state"}
log_path = {self.log}
protocols = imap
listen = {HOST}
ssl = {tls}
{tls_settings}disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_cache_size = 0
auth_failure_delay = 0
hostname = localhost

default_internal_user = {user}
default_internal_group = {group}
default_login_user = {login_user}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_privileged_group =
imap_idle_notify_interval = 2 mins
mail_max_userip_connections = 200
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_dir}/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.passwd_dir}/%u
  default_fields = uid={uid} gid={gid}
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
{imaps}  process_min_avail = 0
  service_count = 0
  client_limit = 200
}}
service anvil {{
  chroot =
  # No auth penalty (a growing delay after failed logins from one IP): tests
  # fail logins on purpose, and all come from 127.0.0.1.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
}}
service pop3-login {{
  chroot =
}}
"""
        (root / "dovecot.conf").write_text(text, encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover - manual use
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = Dovecot.start(Path(tmp))
        account = server.new_user()
        print(
            f"imap://{account.name}@{server.host}:{server.port}/INBOX password={account.password}"
        )
        print("Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.stop()
