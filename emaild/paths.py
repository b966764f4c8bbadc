"""Where emaild keeps its state by default; standard library only (the
``emaild ingest`` hand-off client reads it before any heavy import)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# The daemon's hand-off socket for ``emaild ingest``, in the state directory.
INGEST_SOCKET = "ingest.sock"


def default_state_dir(env: Mapping[str, str]) -> str:
    """systemd's StateDirectory, else the XDG state directory."""
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    home = env.get("HOME") or str(Path.home())
    base = env.get("XDG_STATE_HOME") or str(Path(home) / ".local" / "state")
    return str(Path(base) / "emaild")
