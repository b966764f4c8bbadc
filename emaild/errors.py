"""The error hierarchy every part of emaild raises.

The channel that received a message maps these to its protocol:
``ConfigError`` -> exit 78 (EX_CONFIG), ``TransientError`` -> SMTP 451 / exit 75
(EX_TEMPFAIL), ``InputError`` -> SMTP 5xx / exit 65 (EX_DATAERR).
"""

from __future__ import annotations

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78


class EmaildError(Exception):
    """Base class for every error emaild raises on purpose."""

    exit_code = EX_SOFTWARE


class ConfigError(EmaildError):
    """The operator must fix something (config, rules, templates)."""

    exit_code = EX_CONFIG

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.line = line
        self.key = key
        super().__init__(self.render())

    def render(self) -> str:
        """``file:line: key: problem``, leaving out whatever is unknown."""
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.problem}"


class TransientError(EmaildError):
    """Try again later: storage unavailable, timeout, lock contention."""

    exit_code = EX_TEMPFAIL


class InputError(EmaildError):
    """The input itself is unusable (empty, not a message, too large)."""

    exit_code = EX_DATAERR


def too_large(size: int, limit: int) -> InputError:
    """A message over ``limits.max_message_bytes``: the same words on every channel."""
    return InputError(f"message is {size} bytes, over the {limit} byte limit")
