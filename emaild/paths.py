"""Where emaild keeps its state by default; standard library only (the
``emaild ingest`` hand-off client reads it before any heavy import)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# The daemon's hand-off socket for ``emaild ingest``, in the state directory.
INGEST_SOCKET = "ingest.sock"


def resolve_state_dir(configured: str, base: Path, env: Mapping[str, str]) -> str:
    """The state directory: ``EMAILD_STATE_DIR``, else ``[storage] state_dir``
    (relative to ``base``, the config file's directory), else the default."""
    if env.get("EMAILD_STATE_DIR"):
        return env["EMAILD_STATE_DIR"]
    if configured:
        return configured if Path(configured).is_absolute() else str((base / configured).resolve())
    return default_state_dir(env)


def default_state_dir(env: Mapping[str, str]) -> str:
    """systemd's StateDirectory, else the XDG state directory."""
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    home = env.get("HOME") or str(Path.home())
    base = env.get("XDG_STATE_HOME") or str(Path(home) / ".local" / "state")
    return str(Path(base) / "emaild")
