"""What a matching rule does: the ``actions`` table, checked at load.

Field actions (priority, origin, owner, category, tags, auto_response) change
the case fields a *new* case is opened with; a later rule overrides an earlier
one. ``quarantine`` and ``drop`` decide the message's fate and end rule
processing; ``if_new_case`` decides it only when the message does not thread
onto an existing case (bounces, auto-replies); ``stop`` ends rule processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emaild.config import PRIORITIES
from emaild.rules.problem import RuleProblem

ACTIONS: dict[str, str] = {
    "priority": "case priority: " + ", ".join(PRIORITIES),
    "origin": "case origin, e.g. Email, Web, Phone",
    "owner": "case owner or queue",
    "category": "case category (record type)",
    "tags": "replace the case tags with this list",
    "add_tags": "add these tags",
    "remove_tags": "remove these tags",
    "auto_response": 'auto-response template to send ("" = send none)',
    "quarantine": "true: hold the message in quarantine, no case (ends rule processing)",
    "drop": "true: keep the raw message, open no case (ends rule processing)",
    "if_new_case": '"drop" or "quarantine" instead of opening a new case; "open" undoes it',
    "reason": "why, recorded with quarantine/drop/if_new_case (default: the description)",
    "stop": "true: evaluate no further rules",
}
NEW_CASE_CHOICES = ("open", "drop", "quarantine")
_PRIORITY = {p.lower(): p for p in PRIORITIES}


@dataclass(frozen=True, slots=True)
class Actions:
    """The checked ``actions`` table of one rule."""

    priority: str | None = None
    origin: str | None = None
    owner: str | None = None
    category: str | None = None
    tags: tuple[str, ...] | None = None
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    auto_response: str | None = None
    quarantine: bool = False
    drop: bool = False
    if_new_case: str | None = None
    reason: str = ""
    stop: bool = False

    @property
    def ends_processing(self) -> bool:
        """No rule after this one is evaluated once it matched."""
        return self.stop or self.quarantine or self.drop

    def as_json(self) -> dict[str, Any]:
        """Only the actions this rule sets, for the decision trace."""
        out: dict[str, Any] = {}
        for key in ACTIONS:
            value = getattr(self, key)
            if value is None or value is False or value == () or (key == "reason" and not value):
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


def parse_actions(spec: Any) -> Actions:
    """Check an ``actions`` table; ``RuleProblem`` locates the first mistake."""
    if not isinstance(spec, dict):
        raise RuleProblem("actions must be a table", ("actions",))
    if not spec:
        raise RuleProblem("actions is empty: a rule must do something", ("actions",))
    values: dict[str, Any] = {}
    for key, value in spec.items():
        loc = ("actions", key)
        if key not in ACTIONS:
            raise RuleProblem(f"unknown action {key!r} (known: {', '.join(ACTIONS)})", loc)
        if key == "priority":
            canonical = _PRIORITY.get(value.lower()) if isinstance(value, str) else None
            if canonical is None:
                raise RuleProblem(
                    f"priority must be one of {', '.join(PRIORITIES)}, got {value!r}", loc
                )
            values[key] = canonical
        elif key in ("origin", "owner", "category", "auto_response", "reason"):
            values[key] = _string(value, key, loc, allow_empty=key != "origin")
        elif key in ("tags", "add_tags", "remove_tags"):
            if not isinstance(value, list) or not all(
                isinstance(t, str) and t.strip() for t in value
            ):
                raise RuleProblem(f"{key} must be a list of non-empty strings", loc)
            values[key] = tuple(t.strip() for t in value)
        elif key in ("quarantine", "drop", "stop"):
            if not isinstance(value, bool):
                raise RuleProblem(f"{key} must be true or false", loc)
            values[key] = value
        elif key == "if_new_case":
            if value not in NEW_CASE_CHOICES:
                raise RuleProblem(
                    f"if_new_case must be one of {', '.join(NEW_CASE_CHOICES)}, got {value!r}",
                    loc,
                )
            values[key] = value
    actions = Actions(**values)
    if actions.quarantine and actions.drop:
        raise RuleProblem("quarantine and drop cannot both be true", ("actions", "drop"))
    return actions


def _string(value: Any, key: str, loc: tuple[str, ...], *, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise RuleProblem(f"{key} must be a string, got {type(value).__name__}", loc)
    if not allow_empty and not value.strip():
        raise RuleProblem(f"{key} must not be empty", loc)
    return value.strip()
