"""Locate keys of a TOML document by line, for ``file:line: key: problem`` errors.

``tomllib`` gives values but not positions; this walks the text once and records
the line of every table header and ``key =`` assignment, addressed the same way
pydantic addresses a validation error (``("address", 0, "priority")``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emaild.errors import ConfigError

_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")

Loc = tuple[str | int, ...]


def _split_dotted(name: str) -> list[str]:
    return [part.strip().strip("\"'") for part in name.split(".")]


@dataclass
class TomlSource:
    """A parsed TOML file together with the line of each key."""

    path: str
    data: dict[str, Any]
    lines: dict[Loc, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> TomlSource:
        """Read and parse ``path``; a syntax error is a ``ConfigError`` with its line."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("file not found", file=str(p)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read: {exc}", file=str(p)) from None
        return cls.parse(text, str(p))

    @classmethod
    def parse(cls, text: str, path: str) -> TomlSource:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None)
            msg = str(exc)
            match = re.search(r"\(at line (\d+), column \d+\)", msg)
            if match and line is None:
                line = int(match.group(1))
            msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
            raise ConfigError(f"invalid TOML: {msg}", file=path, line=line) from None
        return cls(path=path, data=data, lines=_index_lines(text))

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line that best matches ``loc``: the key itself, else its nearest parent."""
        key: Loc = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return None

    def error(self, loc: Sequence[str | int], problem: str) -> ConfigError:
        """A ``ConfigError`` pointing at ``loc`` in this file."""
        dotted = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc)
        dotted = dotted.replace(".[", "[")
        return ConfigError(problem, file=self.path, line=self.line_of(loc), key=dotted or None)


def _within_arrays(names: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> Loc:
    """``[rule.actions]`` after the 2nd ``[[rule]]`` is ``("rule", 1, "actions")``."""
    loc: list[str | int] = []
    for i, name in enumerate(names[:-1]):
        loc.append(name)
        if names[: i + 1] in counts:
            loc.append(counts[names[: i + 1]] - 1)
    loc.append(names[-1])
    return tuple(loc)


def _index_lines(text: str) -> dict[Loc, int]:
    lines: dict[Loc, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: Loc = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ARRAY_TABLE.match(line)
        if m:
            names = tuple(_split_dotted(m.group(1)))
            index = counts.get(names, 0)
            counts[names] = index + 1
            table = (*names, index)
            lines.setdefault(table, number)
            lines.setdefault(names, number)
            continue
        m = _TABLE.match(line)
        if m:
            table = _within_arrays(tuple(_split_dotted(m.group(1))), counts)
            lines.setdefault(table, number)
            continue
        m = _KEY.match(raw)
        if m:
            lines.setdefault((*table, *_split_dotted(m.group(1))), number)
    return lines
