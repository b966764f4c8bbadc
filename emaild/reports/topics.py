"""Topics: cases grouped by the telling terms of their subjects, and spikes.

A case's terms are the words of its subject (lower case, three letters or
more) that are not stop words, reply prefixes, numbers or case tokens. A
topic is a term; a case counts once under each of its terms.

A spike: the report period's count of a topic set against the same topic in
the ``baseline`` periods of the same length right before it. With ``mean`` and
``stdev`` (population) of those counts, the topic spikes when

    count >= MIN_SPIKE_CASES and count >= mean + SPIKE_SIGMAS * max(stdev, 1)

(the floor of 1 keeps a topic that was flat at 0 or 1 from spiking on 2).

Counting terms needs the subject text: it is read one (subject, created_at)
pair at a time in batches, never a case object, and only the counts per term
and period are kept.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.store.models import Case

MIN_SPIKE_CASES = 3
SPIKE_SIGMAS = 3.0
BASELINE_PERIODS = 4
TOP = 20
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
    text = _TOKEN.sub(" ", subject).lower()
    return {w.strip("'-") for w in _WORD.findall(text) if w.strip("'-") not in STOP}


def topics(
    session: Session, since: datetime, until: datetime, *, baseline: int = BASELINE_PERIODS
) -> list[dict[str, Any]]:
    """The period's top topics with their usual level and a ``spike`` flag."""
    span = until - since
    start = since - span * baseline
    counts: list[Counter[str]] = [Counter() for _ in range(baseline + 1)]
    query = (
        select(Case.subject, Case.created_at)
        .where(Case.created_at >= start, Case.created_at < until)
        .execution_options(yield_per=1000)
    )
    for subject, created in session.execute(query):
        # The report period is ``baseline``; the one right before it ``baseline - 1``.
        back = 0 if created >= since else math.ceil((since - created) / span)
        index = baseline - back
        if 0 <= index <= baseline:
            counts[index].update(terms(subject or ""))
    current = counts[baseline]
    out: list[dict[str, Any]] = []
    for term, count in current.most_common():
        history = [c[term] for c in counts[:baseline]]
        mean = statistics.fmean(history) if history else 0.0
        stdev = statistics.pstdev(history) if history else 0.0
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
    out.sort(key=lambda t: (not t["spike"], -t["cases"], str(t["topic"])))
    return out[:TOP]
