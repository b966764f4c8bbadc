"""Every real message in the shared corpus is stored: a case, or quarantine, raw kept."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from emaild.app import App
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Message, QuarantineEntry

NOT_MAIL = {"README.md", "LICENSE", "SHA256SUMS", "expected.json"}


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file() and p.name not in NOT_MAIL)


def test_corpus_has_the_documented_size(corpus: Path) -> None:
    assert len(corpus_files(corpus)) == 717


def test_whole_corpus_ingests_without_a_traceback(app: App, corpus: Path) -> None:
    outcomes: Counter[str] = Counter()
    failed: list[str] = []
    for path in corpus_files(corpus):
        raw = path.read_bytes()
        result = app.pipeline.ingest(raw, Envelope(channel="corpus"))
        outcomes[result.outcome.value] += 1
        sha = hashlib.sha256(raw).hexdigest()
        # Raw bytes are kept, byte for byte, whatever the outcome.
        assert app.blobs.read(sha) == raw, path
        with app.db.session() as s:
            if result.outcome is Outcome.QUARANTINED:
                entry = s.get(QuarantineEntry, result.quarantine_id)
                assert entry is not None and entry.raw_sha256 == sha, path
                assert entry.error, path
                if entry.reason in ("error", "unusable"):  # unusable: not a message
                    failed.append(path.name)
            else:
                assert result.message_row_id is not None, (path, result)
                row = s.get(Message, result.message_row_id)
                assert row is not None, path
                # A duplicate points at the stored copy (same Message-ID), else this one.
                if result.outcome is not Outcome.DUPLICATE:
                    assert row.raw_sha256 == sha, path
    assert sum(outcomes.values()) == 717
    # Only the one fragment without a header block defeats the parser (PostgreSQL
    # included: NUL bytes and odd charsets must not send mail to quarantine).
    assert failed == ["example13.eml"], failed
    assert outcomes["new_case"] > 50, outcomes
    with app.db.session() as s:
        stored = s.scalars(select(Message.raw_sha256)).all()
    assert len(stored) == len(set(stored))
