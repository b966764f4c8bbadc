"""Thousands of mutated corpus messages through the pipeline: counts, not asserts.

The long companion of ``tests/test_fuzz.py`` (issue 18): each message is
ingested into a throwaway SQLite state directory; the script prints how many
became each outcome, how many raised (InputError for empty input is the only
expected one), uncaught errors by type, and the slowest messages.

    .venv/bin/python bench/fuzz_mime.py [--count 5000] [--seed 18] [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fuzzmail import mutations  # noqa: E402

from emaild import logs  # noqa: E402
from emaild.app import App  # noqa: E402
from emaild.config import load_config  # noqa: E402
from emaild.pipeline import Envelope  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    args = parser.parse_args()
    logs.configure("error", "json")
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    timings: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory() as state:
        config = load_config(None, {"EMAILD_STATE_DIR": state, "HOME": state})
        app = App.open(config)
        started = time.monotonic()
        try:
            for label, raw in mutations(args.corpus, args.count, args.seed):
                t = time.monotonic()
                try:
                    result = app.pipeline.ingest(raw, Envelope(channel="fuzz"))
                    outcomes[result.outcome.value] += 1
                except Exception as exc:  # counted: the point is to see them
                    errors[type(exc).__name__] += 1
                timings.append((time.monotonic() - t, label))
        finally:
            app.close()
        total = time.monotonic() - started
    print(f"messages: {args.count} (seed {args.seed}) in {total:.1f} s")
    for outcome, n in outcomes.most_common():
        print(f"  {outcome:12s} {n:6d}  ({n / args.count:.3f})")
    for name, n in errors.most_common():
        print(f"  raised {name:12s} {n:6d}")
    timings.sort(reverse=True)
    mean = sum(t for t, _ in timings) / max(1, len(timings))
    print(f"mean {mean * 1000:.1f} ms per message; slowest / mean = {timings[0][0] / mean:.1f}x")
    for seconds, label in timings[:5]:
        print(f"  {seconds * 1000:8.1f} ms  {label}")


if __name__ == "__main__":
    main()
