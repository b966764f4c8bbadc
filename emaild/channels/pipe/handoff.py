"""``emaild ingest``'s hand-off: give the message to a running daemon and exit
with its answer.

A running ``emaild run`` listens on ``STATE_DIR/ingest.sock`` (``listener``).
Handing the message to it spares the pipe process the config, database and
pipeline imports and setup, most of what one ``emaild ingest`` costs. The
daemon runs the same ``answer.ingest_pipe`` as the process would, so the exit
status, output and stored result are the same either way.

The protocol, one message per connection:

- client: one line of JSON ``{"to": ..., "from": ..., "size": N}``, then N bytes;
- daemon: one line of JSON ``{"exit": ..., "stdout": ..., "stderr": ..., "result": ...}``,
  sent once the outcome is committed.

No daemon (no socket, a stale socket, no permission to connect) means
``None``: the caller runs the pipeline itself. Once connected, trouble before
the answer arrives is exit 75: the daemon may or may not have stored the
message, and the MTA's retry is then stored once (a duplicate) or for the
first time. Standard library only, and nothing heavy: this runs before the
rest of emaild is imported.
"""

from __future__ import annotations

import json
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emaild.errors import EX_TEMPFAIL
from emaild.paths import INGEST_SOCKET, resolve_state_dir

CONNECT_TIMEOUT = 2.0
# The pipeline may wait on the database's write lock; the MTA's pipe has its own limit.
ANSWER_TIMEOUT = 300.0
MAX_ANSWER_BYTES = 1 << 20


@dataclass(frozen=True)
class HandedOff:
    """The daemon's answer, as ``emaild ingest`` prints it and exits with."""

    exit_code: int
    stdout: str
    stderr: str
    result: dict[str, Any] | None = None


def daemon_socket(config_path: str | None, env: Mapping[str, str]) -> Path | None:
    """Where the daemon of this config listens, as ``load_config`` resolves the
    state directory (``EMAILD_STATE_DIR``, then ``[storage] state_dir`` relative
    to the config file, then the default); None if the config cannot be read
    (the in-process path then reports it properly)."""
    chosen = config_path or env.get("EMAILD_CONFIG")
    configured, base = "", Path.cwd()
    if chosen and not env.get("EMAILD_STATE_DIR"):
        path = Path(chosen)
        try:
            with path.open("rb") as f:
                storage = tomllib.load(f).get("storage", {})
        except (OSError, tomllib.TOMLDecodeError):
            return None
        configured = storage.get("state_dir", "") if isinstance(storage, dict) else ""
        if not isinstance(configured, str):
            return None
        base = path.resolve().parent
    return Path(resolve_state_dir(configured, base, env)) / INGEST_SOCKET


def hand_off(
    raw: bytes,
    *,
    to: str,
    mail_from: str,
    path: Path,
    timeout: float = ANSWER_TIMEOUT,
) -> HandedOff | None:
    """The daemon's answer for ``raw``; None when no daemon listens at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(str(path))
        except OSError:  # none running, a stale socket, or not ours to use
            return None
        sock.settimeout(timeout)
        try:
            header = {"to": to, "from": mail_from, "size": len(raw)}
            try:
                sock.sendall(json.dumps(header).encode() + b"\n")
                sock.sendall(raw)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                # The daemon may answer and close once it has what it needs (an
                # empty message); its answer is then already waiting to be read.
                pass
            answer = _read_answer(sock)
        except (OSError, ValueError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            return HandedOff(
                EX_TEMPFAIL, "", f"emaild: temporary failure, try again: daemon hand-off: {why}"
            )
        return answer
    finally:
        sock.close()


def _read_answer(sock: socket.socket) -> HandedOff:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("the daemon closed the connection without an answer")
        buffer += chunk
        if len(buffer) > MAX_ANSWER_BYTES:
            raise ValueError("the daemon's answer is too long")
    data = json.loads(bytes(buffer).split(b"\n", 1)[0])
    if not isinstance(data, dict) or not isinstance(data.get("exit"), int):
        raise ValueError("the daemon's answer is not understood")
    result = data.get("result")
    return HandedOff(
        int(data["exit"]),
        str(data.get("stdout", "")),
        str(data.get("stderr", "")),
        result if isinstance(result, dict) else None,
    )
