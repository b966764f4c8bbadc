"""A mistake found in a rule while loading it, located inside the rule's table."""

from __future__ import annotations

Loc = tuple[str | int, ...]


class RuleProblem(Exception):
    """A mistake in one rule; ``loc`` is the path to it inside the rule's table.

    The loader turns it into ``file:line: rule 'name': problem``.
    """

    def __init__(self, problem: str, loc: Loc = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.loc = loc

    def within(self, *prefix: str | int) -> RuleProblem:
        """The same problem, located under ``prefix``."""
        return RuleProblem(self.problem, (*prefix, *self.loc))
