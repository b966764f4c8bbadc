"""Bulk import: an mbox file, a Maildir, or a folder of .eml files."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from emaild.errors import InputError, TransientError
from emaild.pipeline import Envelope, Pipeline
from emaild.pipeline.context import OutcomeTally


@dataclass
class ImportSummary(OutcomeTally):
    """What ``emaild import`` did; ``as_json`` is what ``--json`` prints."""

    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "cases": self.cases,
            "appended": self.appended,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "held": self.held,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "failed": self.failed,
            "errors": self.errors[:100],
        }


def iter_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) for each message at ``path``."""
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            box = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(box.keys()):
                yield f"{path}/{key}", box.get_bytes(key)
            return
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            if file.name.startswith("."):
                continue
            yield str(file), file.read_bytes()
        return
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    with path.open("rb") as fh:
        first = fh.read(5)
    if first == b"From ":
        mbox = mailbox.mbox(path, factory=None, create=False)
        try:
            for index, key in enumerate(mbox.keys()):
                yield f"{path}#{index + 1}", mbox.get_bytes(key)
        finally:
            mbox.close()
        return
    yield str(path), path.read_bytes()


def count_messages(path: Path) -> int | None:
    if path.is_dir():
        if (path / "cur").is_dir():
            return len(mailbox.Maildir(path, factory=None, create=False))
        return sum(1 for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return None


def import_one(
    pipeline: Pipeline, label: str, raw: bytes, summary: ImportSummary, to: str = ""
) -> None:
    envelope = Envelope(channel="import", rcpt_to=(to,) if to else (), routing_hint=to)
    try:
        result = pipeline.ingest(raw, envelope)
    except (InputError, TransientError) as exc:
        summary.failed += 1
        summary.errors.append(f"{label}: {exc}")
        return
    summary.count(result.outcome)
