"""Real bounces from the sisimai corpus, wrapped around a message emaild sent,
thread onto that message's case and never reopen it.

Each report in ``sisimai/maildir/bsd`` that carries a copy of the original
message (as message/rfc822, text/rfc822-headers, or pasted into the text, as
each MTA does it) gets that original's Message-ID replaced by the signed
Message-ID of an auto-response emaild queued for a case; the case is closed
first. The shapes, encodings and broken MIME stay exactly as the MTA made them.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from threading_mail import case_row, close_case, ingest, mail, signer, trace

from emaild.app import App
from emaild.classify import classify
from emaild.correlation.tokens import CaseSigner
from emaild.errors import InputError
from emaild.mime.parse import parse_message
from emaild.pipeline import Outcome
from emaild.store.models import OutboxItem

# Found independently of the code under test: any Message-ID header line below
# the report's own header is the original's.
_BODY_MSGID = re.compile(
    rb"^[ \t]*Message-ID[ \t]*:[ \t]*(?:\r?\n[ \t]+)?(<[^<>\s]+>)", re.I | re.M
)


def originals(raw: bytes) -> tuple[int, list[bytes]]:
    """Where the report's body starts, and the Message-IDs of the copy it carries."""
    end = re.search(rb"\r?\n\r?\n", raw)
    if end is None:
        return len(raw), []
    return end.end(), sorted(set(_BODY_MSGID.findall(raw[end.end() :])))


@functools.cache
def reports_with_originals(corpus: Path) -> list[Path]:
    """Corpus reports that carry an original and that emaild classifies as a report."""
    chosen = []
    for path in sorted((corpus / "sisimai" / "maildir" / "bsd").glob("*.eml")):
        raw = path.read_bytes()
        if not originals(raw)[1]:
            continue
        try:
            parsed = parse_message(raw, spool_threshold=1 << 20)
        except InputError:
            continue
        if "\x00" in parsed.text + parsed.html:
            # A QP "=00" decodes to NUL, which PostgreSQL cannot store in text:
            # such a message is quarantined whatever threading does (a parser matter).
            continue
        flags = classify(parsed, None)
        if flags.bounce or flags.report:
            chosen.append(path)
    return chosen


def per_family(paths: list[Path], limit: int) -> list[Path]:
    """At most ``limit`` reports per MTA family (``lhost-postfix-01.eml`` -> lhost-postfix)."""
    taken: Counter[str] = Counter()
    out = []
    for path in paths:
        family = re.sub(r"-\d+\.eml$", "", path.name)
        if taken[family] < limit:
            taken[family] += 1
            out.append(path)
    return out


def wrap(raw: bytes, message_id: str) -> bytes:
    """``raw`` with the carried original's Message-ID replaced by ``message_id``."""
    start, ids = originals(raw)
    body = raw[start:]
    for old in ids:
        body = body.replace(old, message_id.encode())
    return raw[:start] + body


@pytest.mark.parametrize("secret", ["current", "rotated"])
def test_corpus_bounces_thread_onto_the_closed_case_of_our_message(
    app: App, corpus: Path, secret: str
) -> None:
    """With the current secret the copy's signed Message-ID proves the case wherever
    it is found (the copy is also body text: step 2 may see it first). After a
    secret rotation signatures fail, and only step 5's lookup of the original
    in the outbox can thread the bounce."""
    reports = reports_with_originals(corpus)
    # 529 at the corpus's pinned commit; a much smaller number means the
    # selection broke, not that the corpus changed.
    assert len(reports) > 450
    if secret == "rotated":
        reports = per_family(reports, 2)  # every MTA's shape, at a third of the cost
        assert len(reports) > 100
    # emaild answers the new case with its auto-response: that is the mail
    # whose bounces come back.
    first = ingest(app, mail(mid="<bounce-case@customer.test>"))
    case = first.case_number
    assert first.outcome is Outcome.NEW_CASE and case is not None
    with app.db.session() as s:
        sent = s.scalars(
            select(OutboxItem).where(OutboxItem.case_id == case, OutboxItem.kind == "autoresponse")
        ).one()
    ours = sent.message_id
    assert signer(app).case_from_message_id(ours) == case
    if secret == "rotated":
        app.pipeline.services = dataclasses.replace(
            app.services,
            signer=CaseSigner(secret=b"the-secret-after-the-rotation", domain=signer(app).domain),
        )
        assert signer(app).case_from_message_id(ours) is None
    close_case(app, case)

    steps: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for path in reports:
        result = ingest(app, wrap(path.read_bytes(), ours))
        assert result.case_number == case, f"{path.name}: {result.outcome} {result.detail}"
        outcomes[result.outcome.value] += 1
        if result.outcome is Outcome.APPENDED:
            threaded = trace(app, result.message_row_id)
            steps[str(threaded[0]["via"])] += 1
            assert [d["decision"] for d in threaded] == ["threaded", "kept closed"], path.name
    # Some corpus files are the same report twice (same Message-ID): one row.
    assert outcomes[Outcome.APPENDED.value] > 0.8 * len(reports), outcomes
    assert set(outcomes) <= {Outcome.APPENDED.value, Outcome.DUPLICATE.value}
    if secret == "rotated":
        assert steps == {"bounce original": outcomes[Outcome.APPENDED.value]}
    else:
        assert set(steps) == {"bounce original", "body token"}, steps
    assert case_row(app, case).status == "closed"


@pytest.mark.parametrize(
    "family", ["rfc3464", "lhost-postfix", "lhost-qmail", "lhost-exchange2007"]
)
def test_same_bounce_without_our_message_is_not_threaded(
    app: App, corpus: Path, family: str
) -> None:
    case = ingest(app, mail(mid="<bounce-case-2@customer.test>")).case_number
    path = next(p for p in reports_with_originals(corpus) if p.name.startswith(family + "-"))
    result = ingest(app, path.read_bytes())
    assert result.case_number != case
    assert result.outcome in (Outcome.NEW_CASE, Outcome.DROPPED)
