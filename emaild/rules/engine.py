"""Evaluate a rule set against one message: which rules match, in order, and the result.

Rules are evaluated in file-name order, then in their order within a file.
A later rule overrides a field an earlier one set; ``stop``, ``quarantine``
and ``drop`` end processing. To keep 1,000 rules cheap, a rule that requires
an equality on an address-like field (``from_domain in [...]``,
``routing_address equals ...``) is filed under those values and only tested
when the message has one of them; every other rule is tested in turn.
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emaild.rules.fields import CaseFields
from emaild.rules.model import Match, Rule

if TYPE_CHECKING:
    from emaild.rules.facts import MessageFacts

FIELD_ACTIONS = ("priority", "origin", "owner", "category", "auto_response")


@dataclass
class RulesOutcome:
    """What the matching rules decided, with who decided each thing."""

    fields: CaseFields
    matches: list[Match]
    # field name -> the rule that last set it (absent: the routing default stands)
    set_by: dict[str, str] = field(default_factory=dict)
    # per match, the fields it changed: {"priority": ["Medium", "High"]}
    changes: list[dict[str, list[Any]]] = field(default_factory=list)
    disposition: str = ""  # "", "quarantine" or "drop"
    disposition_reason: str = ""
    disposition_rule: str = ""
    if_new_case: str = ""  # "", "drop" or "quarantine": instead of opening a new case
    if_new_case_reason: str = ""
    if_new_case_rule: str = ""
    stopped_by: str = ""
    tested: int = 0  # rules whose conditions were evaluated (the index skips the rest)
    timeouts: list[str] = field(default_factory=list)  # regex searches cut off (no match)

    @property
    def matched(self) -> list[str]:
        """Names of the rules that matched, in order."""
        return [m.rule.name for m in self.matches]


class RuleSet:
    """The loaded rules, in order, with an index on required equality conditions."""

    def __init__(
        self, rules: tuple[Rule, ...], *, files: tuple[str, ...] = (), index: bool = True
    ) -> None:
        """``index=False`` tests every rule against every message (the bench compares)."""
        self.rules = tuple(dataclasses.replace(r, position=i) for i, r in enumerate(rules))
        self.files = files
        self._by_value: dict[str, dict[str, list[int]]] = {}
        self._unindexed: list[int] = []
        for rule in self.rules:
            key = rule.condition.index if rule.condition is not None and index else None
            if key is None:
                self._unindexed.append(rule.position)
                continue
            table = self._by_value.setdefault(key[0], {})
            for value in key[1]:
                table.setdefault(value, []).append(rule.position)

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, facts: MessageFacts) -> list[int]:
        """Positions of the rules that may match ``facts``, in order."""
        hits: set[int] = set()
        for key, table in self._by_value.items():
            for value in facts.lowered(key):
                found = table.get(value)
                if found:
                    hits.update(found)
        if not hits:
            return self._unindexed
        return list(heapq.merge(sorted(hits), self._unindexed))

    def match(self, facts: MessageFacts) -> tuple[list[Match], int]:
        """The rules that match ``facts`` in order (up to one that ends processing)."""
        matches: list[Match] = []
        candidates = self.candidates(facts)
        tested = 0
        rules = self.rules
        for position in candidates:
            rule = rules[position]
            tested += 1
            condition = rule.condition
            if condition is None:
                matches.append(Match(rule, ["no conditions: matches every message"]))
            elif condition.test(facts):
                matches.append(Match(rule, condition.explain(facts)))
            else:
                continue
            if rule.actions.ends_processing:
                break
        return matches, tested

    def evaluate(self, facts: MessageFacts, defaults: CaseFields) -> RulesOutcome:
        """Match, then apply the matching rules' actions to a copy of ``defaults``."""
        matches, tested = self.match(facts)
        fields = dataclasses.replace(defaults, tags=list(defaults.tags))
        outcome = RulesOutcome(
            fields=fields, matches=matches, tested=tested, timeouts=list(facts.timeouts)
        )
        for match in matches:
            outcome.changes.append(_apply(match.rule, outcome))
        return outcome


def _apply(rule: Rule, outcome: RulesOutcome) -> dict[str, list[Any]]:
    a, fields = rule.actions, outcome.fields
    changed: dict[str, list[Any]] = {}
    for name in FIELD_ACTIONS:
        value = getattr(a, name)
        if value is None:
            continue
        old = getattr(fields, name)
        setattr(fields, name, value)
        outcome.set_by[name] = rule.name
        if old != value:
            changed[name] = [old, value]
    tags = list(a.tags) if a.tags is not None else list(fields.tags)
    tags += [t for t in a.add_tags if t not in tags]
    tags = [t for t in tags if t not in a.remove_tags]
    if a.tags is not None or a.add_tags or a.remove_tags:
        outcome.set_by["tags"] = rule.name
        if tags != fields.tags:
            changed["tags"] = [list(fields.tags), tags]
        fields.tags = tags
    reason = a.reason or rule.description
    if a.quarantine or a.drop:
        outcome.disposition = "quarantine" if a.quarantine else "drop"
        outcome.disposition_reason = reason
        outcome.disposition_rule = rule.name
    if a.if_new_case is not None:
        outcome.if_new_case = "" if a.if_new_case == "open" else a.if_new_case
        outcome.if_new_case_reason = "" if a.if_new_case == "open" else reason
        outcome.if_new_case_rule = rule.name
    if a.ends_processing:
        outcome.stopped_by = rule.name
    return changed
