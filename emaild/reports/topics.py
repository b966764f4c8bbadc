"""Topics: cases grouped by the telling terms of their subjects, and spikes.

A case's terms are the words of its subject (lower case, three letters or
more) that are not stop words, reply prefixes, numbers or case tokens. A
topic is a term; a case counts once under each of its terms.

A spike: the report period's count of a topic set against the same topic in
the ``baseline`` periods of the same length right before it. With ``mean`` and
``stdev`` (population) of those counts, the topic spikes when

    count >= MIN_SPIKE_CASES and count >= mean + SPIKE_SIGMAS * max(stdev, 1)

(the floor of 1 keeps a topic that was flat at 0 or 1 from spiking on 2).

A case's terms are worked out once, when the case is created (the ``persist``
stage calls ``index_case``; migration 0003 did it for older cases), and kept
in ``case_terms``: the report counts them with one ``GROUP BY`` per period.
"""

from __future__ import annotations

import re
import statistics
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from emaild.store.models import CaseTerm
from emaild.store.safetext import storable

MIN_SPIKE_CASES = 3
SPIKE_SIGMAS = 3.0
BASELINE_PERIODS = 4
TOP = 20
MAX_TERMS = 12
MAX_TERM_CHARS = 64
_INSERT = insert(CaseTerm)
_WORD = re.compile(r"[^\W\d_][\w'-]{2,}", re.UNICODE)
_TOKEN = re.compile(r"\[[^\]]*#\s*\d+\]")
_STOP_WORDS = """
    about above after again all also and any are aw because been before being but can
    cannot could did does doing don fwd for from had has have having help her here hers him
    his how into its just let more most not now off once only other our out over own please
    problem question same she should some such support than thank thanks that the their them
    then there these they this those through too under until urgent very was were what when
    where which while who whom why will with would you your re wg sv antw tr issue hello hi
"""
STOP = frozenset(_STOP_WORDS.split())


def terms(subject: str) -> set[str]:
    """The telling terms of a subject."""
    # Stored as the column stores it (a lone surrogate becomes U+FFFD), so two
    # words that only differ there are one term, not a duplicate key.
    text = storable(_TOKEN.sub(" ", subject).lower())
    return {w.strip("'-") for w in _WORD.findall(text) if w.strip("'-") not in STOP}


def term_rows(case_id: int, subject: str, created_at: datetime) -> list[dict[str, Any]]:
    """The ``case_terms`` rows of a case (at most ``MAX_TERMS``, each at most 64 chars)."""
    kept = sorted(t for t in terms(subject) if len(t) <= MAX_TERM_CHARS)[:MAX_TERMS]
    return [{"case_id": case_id, "term": t, "created_at": created_at} for t in kept]


def index_case(session: Session, case_id: int, subject: str, created_at: datetime) -> None:
    """Record a new case's terms (one executemany, in the caller's transaction)."""
    rows = term_rows(case_id, subject, created_at)
    if rows:
        session.connection().execute(_INSERT, rows)


def _counts(session: Session, start: datetime, end: datetime) -> dict[str, int]:
    """Cases per term created in ``[start, end)``: one GROUP BY."""
    query = (
        select(CaseTerm.term, func.count())
        .where(CaseTerm.created_at >= start, CaseTerm.created_at < end)
        .group_by(CaseTerm.term)
    )
    return {str(term): int(n) for term, n in session.execute(query)}


def topics(
    session: Session, since: datetime, until: datetime, *, baseline: int = BASELINE_PERIODS
) -> list[dict[str, Any]]:
    """The period's top topics with their usual level and a ``spike`` flag."""
    span = until - since
    current = _counts(session, since, until)
    history = [
        _counts(session, since - span * back, since - span * (back - 1))
        for back in range(baseline, 0, -1)
    ]
    out: list[dict[str, Any]] = []
    for term, count in current.items():
        levels = [h.get(term, 0) for h in history]
        mean = statistics.fmean(levels) if levels else 0.0
        stdev = statistics.pstdev(levels) if levels else 0.0
        spike = count >= MIN_SPIKE_CASES and count >= mean + SPIKE_SIGMAS * max(stdev, 1.0)
        out.append(
            {
                "topic": term,
                "cases": count,
                "usual": round(mean, 3),
                "stdev": round(stdev, 3),
                "spike": spike,
            }
        )
    out.sort(key=lambda t: (not t["spike"], -t["cases"], t["topic"]))
    return out[:TOP]
