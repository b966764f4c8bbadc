"""Classification of machine-written mail on the real sisimai corpus."""

from __future__ import annotations

from pathlib import Path

from emaild.classify import classify
from emaild.mime.parse import parse_message

ORIGINAL = {"message/rfc822", "text/rfc822-headers"}


def test_every_report_that_returns_an_original_is_a_bounce_or_report(corpus: Path) -> None:
    """Threading step 5 only looks at bounces: none that carries an original may slip by."""
    missed = []
    checked = 0
    for path in sorted((corpus / "sisimai" / "maildir" / "bsd").iterdir()):
        parsed = parse_message(path.read_bytes(), spool_threshold=1 << 20)
        if not ORIGINAL & set(parsed.part_types):
            continue
        checked += 1
        flags = classify(parsed, None)
        if not (flags.is_bounce or flags.report):
            missed.append(path.name)
    assert checked > 300
    assert missed == []


def test_a_person_forwarding_a_message_is_not_a_bounce(corpus: Path) -> None:
    raw = (corpus / "sisimai" / "maildir" / "not" / "is-not-bounce-02.eml").read_bytes()
    flags = classify(parse_message(raw, spool_threshold=1 << 20), None)
    assert not flags.is_bounce
