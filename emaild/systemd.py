"""systemd integration without extra dependencies: sd_notify and socket activation.

Both protocols are small and stable (sd_notify(3), sd_listen_fds(3)):

- notify: datagrams of ``KEY=VALUE`` lines sent to the AF_UNIX socket named in
  ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace);
- socket activation: systemd passes listening sockets as file descriptors
  ``3 .. 3+LISTEN_FDS-1`` to the process whose pid is ``LISTEN_PID``, named by
  ``LISTEN_FDNAMES`` (``FileDescriptorName=`` in the ``.socket`` unit).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import structlog

log = structlog.get_logger("emaild.systemd")

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify messages; does nothing when not started by systemd.

    A failure to send is logged once and otherwise ignored: notification is a
    courtesy to the service manager and must never stop mail intake.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_seconds = _watchdog_seconds(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening (``NOTIFY_SOCKET`` is set)."""
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; True when it was sent."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never wait: a receiver that stopped reading (a full queue) must not
            # stall the sender's event loop; the next message says it again.
            self._sock.sendto(payload, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify.failed", error=str(exc), socket=repr(self.address))
                self._warned = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """The service is up: listeners are bound (``READY=1``)."""
        return self.notify("READY=1", *((_status(status),) if status else ()))

    def status(self, status: str) -> bool:
        """A one-line summary shown by ``systemctl status``."""
        return self.notify(_status(status))

    def reloading(self) -> bool:
        """A reload started; ``ready()`` ends it (systemd >= 253 tracks this)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> bool:
        """Shutdown started (``STOPPING=1``)."""
        return self.notify("STOPPING=1", *((_status(status),) if status else ()))

    def watchdog(self) -> bool:
        """Keep-alive ping (``WATCHDOG=1``); due every ``watchdog_seconds / 2``."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    # STATUS= is one line; a newline would start a new KEY=VALUE assignment.
    return "STATUS=" + " ".join(text.split())


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of the "@".
        return b"\0" + value[1:].encode("utf-8")
    if value.startswith("/"):
        return value
    # vsock and other address families are not used by the service managers we
    # target; ignoring them is safer than guessing.
    log.warning("sd_notify.unsupported_socket", socket=value)
    return None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. our parent shell)
    return int(usec) / 1_000_000


@dataclass(frozen=True)
class InheritedSocket:
    """A listening socket passed in by systemd, with its ``FileDescriptorName=``."""

    name: str
    sock: socket.socket

    @property
    def label(self) -> str:
        """``host:port`` of the socket, for logs and channel status."""
        address = self.sock.getsockname()
        if isinstance(address, tuple):
            host = address[0]
            return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
        return str(address)


def listen_fds(env: MutableMapping[str, str] | None = None) -> list[InheritedSocket]:
    """Sockets passed by systemd socket activation (empty when there are none).

    Like ``sd_listen_fds(unset_environment=1)``: the variables are removed so
    child processes do not believe the sockets are theirs.
    """
    env = os.environ if env is None else env
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    names = env.get("LISTEN_FDNAMES", "")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if not count.isdigit() or int(count) == 0 or pid != str(os.getpid()):
        return []
    labels = names.split(":") if names else []
    sockets = []
    for index in range(int(count)):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        name = labels[index] if index < len(labels) else "unknown"
        sockets.append(InheritedSocket(name=name, sock=sock))
    return sockets
