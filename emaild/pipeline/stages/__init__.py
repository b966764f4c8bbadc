"""The stages of ``Pipeline.ingest``, in order. ``STAGES`` is the whole pipeline.

Each stage is a small object with a ``name``, a one-line ``description`` and a
``__call__(ctx)``, in a module named after it. Stages with ``needs_session``
run inside the message's one database transaction; the others run before it
is opened, so parsing never holds a database lock. A stage records every
decision it takes with ``ctx.decide`` so the stored message explains itself.

Stage modules may import the domain packages (``mime``, ``rules``,
``correlation``, ``verification``, ``autoresponse``, ``store``); those never
import ``emaild.pipeline`` (``tests/test_imports.py`` enforces it).
"""

from __future__ import annotations

from typing import Protocol

from emaild.pipeline.context import IngestContext
from emaild.pipeline.stages.accept import AcceptStage
from emaild.pipeline.stages.authenticate import AuthenticateStage
from emaild.pipeline.stages.autorespond import AutoRespondStage
from emaild.pipeline.stages.classify import ClassifyStage
from emaild.pipeline.stages.correlate import CorrelateStage
from emaild.pipeline.stages.deduplicate import DeduplicateStage
from emaild.pipeline.stages.loopdetect import LoopDetectStage
from emaild.pipeline.stages.parse import ParseStage
from emaild.pipeline.stages.persist import PersistStage
from emaild.pipeline.stages.route import RouteStage
from emaild.pipeline.stages.rules import RulesStage
from emaild.pipeline.stages.unwrap import UnwrapStage
from emaild.pipeline.stages.verify import VerifyStage


class Stage(Protocol):
    name: str
    description: str
    needs_session: bool

    def __call__(self, ctx: IngestContext) -> None: ...


STAGES: tuple[Stage, ...] = (
    ParseStage(),
    RouteStage(),
    AcceptStage(),
    ClassifyStage(),
    AuthenticateStage(),
    UnwrapStage(),
    RulesStage(),
    VerifyStage(),
    DeduplicateStage(),
    CorrelateStage(),
    LoopDetectStage(),
    PersistStage(),
    AutoRespondStage(),
)


def insert_stage(
    stages: tuple[Stage, ...], stage: Stage, *, before: str = "", after: str = ""
) -> tuple[Stage, ...]:
    """``stages`` with ``stage`` put before or after the stage of that name (tests, tools)."""
    names = [s.name for s in stages]
    anchor = before or after
    if anchor not in names:
        raise ValueError(f"no stage named {anchor!r} (have: {', '.join(names)})")
    at = names.index(anchor) + (0 if before else 1)
    return (*stages[:at], stage, *stages[at:])
