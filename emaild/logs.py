"""structlog setup: JSON lines when not on a terminal, readable when on one.

Under journald (stderr is the stream named by ``$JOURNAL_STREAM``) each line
starts with its syslog priority (``<3>`` for errors), which journald strips
and records, so ``journalctl -p err`` filters emaild's lines.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Fields added to every line of this process (a supervised worker: its number and pid).
_process_fields: dict[str, Any] = {}


def set_process_fields(**fields: Any) -> None:
    """Add ``fields`` to every log line from now on (``emaild run --workers``: which
    worker wrote it, since all workers share one stream)."""
    _process_fields.update(fields)


def _add_process_fields(logger: Any, method: str, event: Any) -> Any:
    for key, value in _process_fields.items():
        event.setdefault(key, value)
    return event


# sd-daemon(3) / syslog priorities by structlog method and stdlib level.
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2}


def under_journald(stream: Any, env: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM``)."""
    env = os.environ if env is None else env
    dev, _, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no real file behind it
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _with_priority(renderer: Callable[..., Any]) -> Callable[..., Any]:
    def render(logger: Any, method: str, event: Any) -> str:
        return f"<{PRIORITY.get(method, 6)}>{renderer(logger, method, event)}"

    return render


class _PriorityFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = PRIORITY.get(record.levelname.lower(), 6)
        return f"<{prio}>{super().format(record)}"


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog and stdlib logging (used by libraries) to one stream."""
    stream = stream or sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    journal = under_journald(stream)
    if journal:
        renderer = _with_priority(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_process_fields,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if not any(getattr(h, "_emaild", False) for h in root.handlers):
        handler = logging.StreamHandler(stream)
        handler._emaild = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for ours in root.handlers:
        if getattr(ours, "_emaild", False):
            fmt_cls = _PriorityFormatter if journal else logging.Formatter
            ours.setFormatter(fmt_cls("%(levelname)s %(name)s: %(message)s"))
    root.setLevel(max(LEVELS[level], logging.WARNING))
    for noisy in ("aiosmtpd", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
