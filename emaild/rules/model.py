"""The shapes of the rules engine: a rule, a compiled condition, a match."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emaild.rules.actions import Actions

if TYPE_CHECKING:
    from emaild.rules.facts import MessageFacts


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition: ``test`` decides, ``explain`` says why (only on a match).

    ``index`` is ``(field key, values)`` when the condition is a plain equality
    test that must hold for the whole rule to match: the engine then looks the
    rule up by value instead of testing it against every message.
    """

    text: str
    test: Callable[[MessageFacts], bool]
    explain: Callable[[MessageFacts], list[str]]
    index: tuple[str, frozenset[str]] | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rule]]`` table: name, description, condition and actions."""

    name: str
    description: str
    file: str
    line: int
    condition: Condition | None  # None: the rule matches every message
    actions: Actions
    position: int = 0  # order across all files

    @property
    def where(self) -> str:
        """``file:line`` of the rule, as the decision trace shows it."""
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Match:
    """A rule that matched, with the evidence for each condition that held."""

    rule: Rule
    because: list[str] = field(default_factory=list)
