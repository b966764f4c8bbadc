"""Load ``rules/*.toml`` in file-name order; refuse bad rules with ``file:line``.

Every mistake is a ``ConfigError`` rendered ``file:line: rule 'name': problem``
(unknown key, unknown field or action, bad regex, wrong type...), so
``emaild check`` exits 78 pointing at it and a SIGHUP reload keeps the old
rules. Line numbers come from ``TomlSource``; conditions written inline
(``any = [{ ... }, { ... }]``) are located element by element by a small scan
of the value text, so an error points at the condition's own line.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from emaild.errors import ConfigError
from emaild.rules.actions import parse_actions
from emaild.rules.conditions import combine, compile_group
from emaild.rules.engine import RuleSet
from emaild.rules.model import Condition, Rule
from emaild.rules.problem import Loc, RuleProblem
from emaild.tomlsource import TomlSource

RULE_KEYS = ("name", "description", "enabled", "all", "any", "actions")


def load_rules(directory: Path | None, *, templates: Collection[str] | None = None) -> RuleSet:
    """Every ``*.toml`` file in ``directory``, in file-name order (None: no rules).

    ``templates``, when given, are the auto-response template names a rule's
    ``auto_response`` may choose (a typo is then an error here, not a silent
    missing auto-response later).
    """
    if directory is None:
        return RuleSet(())
    if not directory.is_dir():
        raise ConfigError("rules directory not found", file=str(directory))
    files = sorted(p for p in directory.glob("*.toml") if not p.name.startswith("."))
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for path in files:
        text = _read(path)
        for rule in parse_rules(text, str(path), templates=templates):
            first = seen.get(rule.name)
            if first is not None:
                raise ConfigError(
                    f"duplicate rule name (first defined at {first.file}:{first.line})",
                    file=str(path),
                    line=rule.line,
                    key=f"rule {rule.name!r}",
                )
            seen[rule.name] = rule
            rules.append(rule)
    return RuleSet(tuple(rules), files=tuple(p.name for p in files))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None


def parse_rules(text: str, path: str, *, templates: Collection[str] | None = None) -> list[Rule]:
    """The enabled rules of one file (disabled ones are checked, then left out)."""
    source = TomlSource.parse(text, path)
    source.lines.update(index_inline_values(text, source.lines))
    short = Path(path).name
    for key in source.data:
        if key != "rule":
            raise ConfigError(
                f"unknown key {key!r}: a rule file holds only [[rule]] tables",
                file=path,
                line=source.line_of((key,)),
            )
    tables = source.data.get("rule", [])
    if not isinstance(tables, list):
        raise ConfigError(
            "rule must be written [[rule]]", file=path, line=source.line_of(("rule",))
        )
    rules = []
    for i, table in enumerate(tables):
        label = f"rule #{i + 1}"
        name = table.get("name") if isinstance(table, dict) else None
        if isinstance(name, str) and name.strip():
            label = f"rule {name.strip()!r}"
        try:
            rule = _rule(table, short, source.line_of(("rule", i)) or 0, templates)
        except RuleProblem as problem:
            raise ConfigError(
                problem.problem,
                file=path,
                line=source.line_of(("rule", i, *problem.loc)),
                key=label,
            ) from None
        if rule is not None:
            rules.append(rule)
    return rules


def _rule(table: Any, file: str, line: int, templates: Collection[str] | None) -> Rule | None:
    if not isinstance(table, dict):
        raise RuleProblem("must be a table")
    for key in table:
        if key not in RULE_KEYS:
            raise RuleProblem(f"unknown key {key!r} (known: {', '.join(RULE_KEYS)})", (key,))
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RuleProblem("name is required (a non-empty string)", ("name",))
    description = table.get("description")
    if not isinstance(description, str) or not description.strip():
        raise RuleProblem("description is required: say what the rule is for", ("description",))
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleProblem("enabled must be true or false", ("enabled",))
    if "actions" not in table:
        raise RuleProblem("actions is required: a rule must do something")
    parts: list[Condition] = []
    for kind in ("all", "any"):
        if kind in table:
            parts.append(compile_group(kind, table[kind], loc=(kind,)))
    condition = combine("all", parts) if parts else None
    actions = parse_actions(table["actions"])
    wanted = actions.auto_response
    if wanted and templates is not None and wanted not in templates:
        have = ", ".join(sorted(templates)) or "none"
        raise RuleProblem(
            f"no auto-response template {wanted!r} (have: {have})", ("actions", "auto_response")
        )
    if not enabled:
        return None
    return Rule(
        name=name.strip(),
        description=" ".join(description.split()),
        file=file,
        line=line,
        condition=condition,
        actions=actions,
    )


# --- line numbers inside inline arrays and tables ---------------------------------
def index_inline_values(text: str, known: dict[Loc, int]) -> dict[Loc, int]:
    """Lines of the elements of inline arrays/tables whose key line is ``known``.

    ``any = [ {field = "subject", ...}, ... ]`` gets ``(..., "any", 0)``,
    ``(..., "any", 0, "field")`` and so on, so a problem deep in a condition
    points at its own line. A scan that gets lost (it only needs to handle
    valid TOML, which tomllib already accepted) just records less.
    """
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    out: dict[Loc, int] = {}
    for loc, number in list(known.items()):
        if number < 1 or number > len(lines):
            continue
        line = lines[number - 1]
        eq = _find_equals(line)
        if eq < 0:
            continue
        scanner = _Scanner(text, starts[number - 1] + eq + 1, starts, out)
        try:
            scanner.value(loc)
        except (IndexError, ValueError):
            continue
    return out


def _find_equals(line: str) -> int:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "=":
            return i
        elif ch == "#":
            return -1
    return -1


class _Scanner:
    """Walks one TOML value, recording the line where each element starts."""

    def __init__(self, text: str, pos: int, starts: list[int], out: dict[Loc, int]) -> None:
        self.text = text
        self.pos = pos
        self.starts = starts
        self.out = out

    def line(self) -> int:
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:  # the last line start <= pos
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= self.pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def skip(self) -> None:
        t = self.text
        while self.pos < len(t):
            ch = t[self.pos]
            if ch in " \t\r\n":
                self.pos += 1
            elif ch == "#":
                end = t.find("\n", self.pos)
                self.pos = len(t) if end < 0 else end
            else:
                return

    def value(self, loc: Loc) -> None:
        self.skip()
        ch = self.text[self.pos]
        if ch == "[":
            self.pos += 1
            index = 0
            while True:
                self.skip()
                if self.text[self.pos] == "]":
                    self.pos += 1
                    return
                self.out.setdefault((*loc, index), self.line())
                self.value((*loc, index))
                self.skip()
                if self.text[self.pos] == ",":
                    self.pos += 1
                index += 1
        elif ch == "{":
            self.pos += 1
            while True:
                self.skip()
                if self.text[self.pos] == "}":
                    self.pos += 1
                    return
                line = self.line()
                keys = self.key()
                self.out.setdefault((*loc, *keys), line)
                self.skip()
                if self.text[self.pos] != "=":
                    raise ValueError("expected =")
                self.pos += 1
                self.value((*loc, *keys))
                self.skip()
                if self.text[self.pos] == ",":
                    self.pos += 1
        elif ch in "\"'":
            self.string()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}\n#":
                self.pos += 1

    def key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self.skip()
            ch = self.text[self.pos]
            if ch in "\"'":
                start = self.pos
                self.string()
                parts.append(self.text[start + 1 : self.pos - 1])
            else:
                start = self.pos
                while self.text[self.pos] not in " \t=.":
                    self.pos += 1
                parts.append(self.text[start : self.pos])
            self.skip()
            if self.text[self.pos] != ".":
                return tuple(parts)
            self.pos += 1

    def string(self) -> None:
        t = self.text
        quote = t[self.pos]
        if t.startswith(quote * 3, self.pos):
            end = t.find(quote * 3, self.pos + 3)
            if quote == '"':
                while end > 0 and _escaped(t, end):
                    end = t.find(quote * 3, end + 1)
            if end < 0:
                raise ValueError("unterminated string")
            self.pos = end + 3
            while self.pos < len(t) and t[self.pos] == quote:  # """a"""" ends later
                self.pos += 1
            return
        i = self.pos + 1
        while t[i] != quote:
            i += 2 if quote == '"' and t[i] == "\\" else 1
        self.pos = i + 1


def _escaped(text: str, pos: int) -> bool:
    backslashes = 0
    while pos - 1 - backslashes >= 0 and text[pos - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1
