"""The fields a new case opens with: routing-address defaults, then what rules set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CaseFields:
    """Case fields decided by routing defaults, then rules."""

    priority: str = "Medium"
    origin: str = "Email"
    owner: str = ""
    category: str = ""
    tags: list[str] = field(default_factory=list)
    auto_response: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "priority": self.priority,
            "origin": self.origin,
            "owner": self.owner,
            "category": self.category,
            "tags": list(self.tags),
            "auto_response": self.auto_response,
        }
