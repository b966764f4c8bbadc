"""Message counts of short-lived processes, kept for the daemon's ``/metrics``.

``emaild ingest`` (the pipe channel) and ``emaild import`` run as processes of
their own and exit: their counters would die with them. Before exiting they
add what they counted to one small JSON file in the state directory, under an
exclusive lock, written whole and renamed into place; the daemon adds the
file's figures to its own when scraped. The file only grows like a counter
(deleting it is a counter reset, which Prometheus handles).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger("emaild.metrics")

FILE_NAME = "metrics-spool.json"
# A bound on what is kept and read: label pairs are a handful in practice.
MAX_ENTRIES = 500
MAX_BYTES = 256 * 1024
_LABEL = re.compile(r"[a-z0-9_.:-]{1,64}")


def spool_path(state_dir: Path) -> Path:
    return Path(state_dir) / FILE_NAME


def read_counts(path: Path) -> dict[tuple[str, str], float]:
    """The spooled counts by (channel, outcome); empty when there are none or the file is bad."""
    try:
        with path.open("rb") as fh:
            data = json.loads(fh.read(MAX_BYTES + 1)[:MAX_BYTES] or b"{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("metrics.spool_unreadable", path=str(path), error=str(exc))
        return {}
    out: dict[tuple[str, str], float] = {}
    if not isinstance(data, dict):
        return out
    for key, value in list(data.items())[:MAX_ENTRIES]:
        channel, _, outcome = str(key).partition("/")
        usable = isinstance(value, int | float) and value >= 0
        if usable and _LABEL.fullmatch(channel) and _LABEL.fullmatch(outcome):
            out[(channel, outcome)] = float(value)
    return out


def add_counts(path: Path, counts: dict[tuple[str, str], float]) -> None:
    """Add ``counts`` to the file (best effort: a failure is logged, never raised)."""
    counts = {k: v for k, v in counts.items() if v}
    if not counts:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            merged = read_counts(path)
            for key, value in counts.items():
                merged[key] = merged.get(key, 0.0) + value
            data = {f"{c}/{o}": v for (c, o), v in sorted(merged.items())[:MAX_ENTRIES]}
            fd, tmp = tempfile.mkstemp(prefix=".metrics-", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        finally:
            os.close(lock_fd)
    except OSError as exc:
        log.warning("metrics.spool_failed", path=str(path), error=str(exc))
