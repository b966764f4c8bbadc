"""Issue 18: a few hundred mutated corpus messages (fixed seed), each one a case
or a quarantine entry, under a time bound, on SQLite and PostgreSQL; and
``emaild import`` of them prints no traceback. ``bench/fuzz_mime.py`` runs
thousands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fuzzmail import mutations

from emaild.app import App
from emaild.pipeline import Envelope, Outcome

COUNT = 300
SEED = 18
# Per message, far above the few milliseconds one takes: a hang or a
# quadratic blow-up fails, machine load does not.
PER_MESSAGE_SECONDS = 10.0
STORED = {Outcome.NEW_CASE, Outcome.APPENDED, Outcome.DUPLICATE, Outcome.HELD, Outcome.DROPPED}


def test_mutated_corpus_messages_become_cases_or_quarantine(app: App, corpus: Path) -> None:
    outcomes: dict[str, int] = {}
    slowest = 0.0
    for label, raw in mutations(corpus, COUNT, SEED):
        started = time.monotonic()
        try:
            result = app.pipeline.ingest(raw, Envelope(channel="fuzz"))
        except Exception as exc:  # only InputError (empty/oversize) may escape
            assert type(exc).__name__ == "InputError", f"{label}: {exc!r}"
            outcomes["refused"] = outcomes.get("refused", 0) + 1
            continue
        elapsed = time.monotonic() - started
        slowest = max(slowest, elapsed)
        assert elapsed < PER_MESSAGE_SECONDS, label
        assert result.outcome in STORED or result.quarantine_id is not None, label
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
    assert sum(outcomes.values()) == COUNT
    # Most mutated mail is still readable: it is decoded with replacement and
    # stored (the corpus is mostly bounces, which the shipped rules drop), and
    # only what has no usable header block is quarantined.
    assert outcomes.get("quarantined", 0) < COUNT // 10, outcomes
    assert outcomes.get("new_case", 0) > COUNT // 10, outcomes


def test_import_of_mutated_mail_prints_no_traceback(
    run_cli: Any, corpus: Path, tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        return  # one backend is enough for what an operator sees; storage is covered above
    folder = tmp_path / "fuzz"
    folder.mkdir()
    for i, (_, raw) in enumerate(mutations(corpus, 100, SEED + 1)):
        (folder / f"{i:04d}.eml").write_bytes(raw)
    proc = run_cli("import", "--json", str(folder), timeout=300)
    assert b"Traceback" not in proc.stderr and b"Traceback" not in proc.stdout
    summary = json.loads(proc.stdout)
    assert summary["failed"] == 0, summary
