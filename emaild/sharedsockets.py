"""Listening sockets bound once and shared by the worker processes of ``emaild run``.

With ``--workers N`` the supervisor binds every listener the configuration
names (SMTP, LMTP, the HTTP API, the metrics port), or takes systemd's
sockets (socket activation), and passes them to each worker it starts: the
file descriptors stay open across ``exec`` (``pass_fds``) and
``EMAILD_LISTEN_FDS`` names them (``FD=NAME`` pairs joined by ``:``, the names
being ``FileDescriptorName=`` values: ``smtp``, ``lmtp``, ``http``,
``metrics``). The worker turns them back into the ``InheritedSocket`` list the
daemon already serves systemd's sockets from, so a worker takes exactly the
socket-activation path. The kernel hands each new connection to one of the
processes waiting in ``accept`` on the shared socket.
"""

from __future__ import annotations

import socket
from collections.abc import MutableMapping, Sequence

from emaild.channels.smtp.channel import parse_listen
from emaild.config import Config
from emaild.errors import ConfigError
from emaild.systemd import InheritedSocket

ENV_VAR = "EMAILD_LISTEN_FDS"
# The accept queue shared by all workers (the kernel caps it at somaxconn).
BACKLOG = 1024


def bind(address: str, key: str) -> socket.socket:
    """A listening TCP socket on ``HOST:PORT`` (``ConfigError`` when it cannot be had)."""
    host, port = parse_listen(address, key)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc.strerror}", key=key) from None


def bind_listeners(config: Config, inherited: Sequence[InheritedSocket]) -> list[InheritedSocket]:
    """The sockets the workers serve: systemd's when it passed any, else the configured ones.

    Raises ``ConfigError`` (exit 78) for an address that cannot be bound, having
    closed what was bound before it.
    """
    if inherited:
        return list(inherited)
    wanted = [("smtp", a, "smtp.listen") for a in config.smtp.listen]
    wanted += [("lmtp", a, "smtp.lmtp_listen") for a in config.smtp.lmtp_listen]
    if config.http.listen:
        wanted.append(("http", config.http.listen, "http.listen"))
    if config.metrics.listen:
        wanted.append(("metrics", config.metrics.listen, "metrics.listen"))
    bound: list[InheritedSocket] = []
    try:
        for name, address, key in wanted:
            bound.append(InheritedSocket(name=name, sock=bind(address, key)))
    except ConfigError:
        close_all(bound)
        raise
    return bound


def close_all(sockets: Sequence[InheritedSocket]) -> None:
    for inherited in sockets:
        inherited.sock.close()


def handoff(sockets: Sequence[InheritedSocket]) -> tuple[str, tuple[int, ...]]:
    """``EMAILD_LISTEN_FDS``'s value and the descriptors to pass to a worker."""
    fds = tuple(s.sock.fileno() for s in sockets)
    return ":".join(f"{fd}={s.name}" for fd, s in zip(fds, sockets, strict=True)), fds


def worker_sockets(env: MutableMapping[str, str]) -> list[InheritedSocket]:
    """The sockets a supervisor passed to this worker (empty when it is none).

    The variable is removed, like ``listen_fds`` does with systemd's, so a
    process this one starts does not take the sockets for its own.
    """
    value = env.pop(ENV_VAR, "")
    sockets = []
    for pair in filter(None, value.split(":")):
        fd, _, name = pair.partition("=")
        if not fd.isdigit():
            raise ConfigError(f"bad descriptor in {value!r}", key=ENV_VAR)
        sock = socket.socket(fileno=int(fd))
        sock.set_inheritable(False)
        sock.setblocking(False)
        sockets.append(InheritedSocket(name=name or "smtp", sock=sock))
    return sockets
