"""Copying blobs between stores (``emaild blobs migrate``) and checking them (``verify``).

The blobs copied are those a row refers to: every message's raw bytes and
attachments and every quarantine entry's raw bytes (a quarantined message's
attachments are stored again when it is released, from its raw bytes). Each
copy is streamed (``open`` → ``put_chunks``), then read back from the target
and hashed: a blob counts as copied only when its sha256 matches its name.

Resumable: a blob the target already holds with the right content is skipped
(it is hashed, not trusted), so running the copy again after an interruption
carries on where it stopped. A target blob whose content does not match its
name is reported and replaced by the source's copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, union

from emaild.store.blobs.base import CHUNK, BlobStore
from emaild.store.database import Database
from emaild.store.models import Attachment, Message, QuarantineEntry

PAGE = 1000


@dataclass
class CopyReport:
    """What a copy did; ``ok`` when every referenced blob is now in the target, verified."""

    referenced: int = 0
    copied: int = 0
    bytes_copied: int = 0
    already_there: int = 0  # present in the target and verified: skipped
    replaced_corrupt: list[str] = field(default_factory=list)  # target had wrong bytes
    missing_in_source: list[str] = field(default_factory=list)
    corrupt_in_source: list[str] = field(default_factory=list)
    failed_verify: list[str] = field(default_factory=list)  # wrong after the copy

    @property
    def ok(self) -> bool:
        return not (self.missing_in_source or self.corrupt_in_source or self.failed_verify)

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


@dataclass
class VerifyReport:
    """What ``verify_blobs`` found; ``ok`` when every referenced blob is there and intact."""

    referenced: int = 0
    intact: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt)

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def referenced_shas(db: Database) -> Iterator[str]:
    """Every blob sha a row refers to, in order, read a page at a time."""
    after = ""
    while True:
        shas = union(
            select(Message.raw_sha256.label("sha")),
            select(Attachment.sha256.label("sha")),
            select(QuarantineEntry.raw_sha256.label("sha")),
        ).subquery()
        query = select(shas.c.sha).where(shas.c.sha > after).order_by(shas.c.sha).limit(PAGE)
        with db.session(readonly=True) as session:
            page = [str(s) for s in session.execute(query).scalars()]
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]


def digest(store: BlobStore, sha256: str) -> tuple[str, int] | None:
    """(sha256 of the stored bytes, size), read as a stream; None when missing."""
    hasher = hashlib.sha256()
    size = 0
    try:
        with store.open(sha256) as reader:
            while piece := reader.read(CHUNK):
                hasher.update(piece)
                size += len(piece)
    except FileNotFoundError:
        return None
    return hasher.hexdigest(), size


def copy_blobs(
    db: Database,
    source: BlobStore,
    target: BlobStore,
    progress: Callable[[CopyReport], None] | None = None,
) -> CopyReport:
    """Copy every referenced blob from ``source`` to ``target``, verified (see the module)."""
    report = CopyReport()
    for sha in referenced_shas(db):
        report.referenced += 1
        held = digest(target, sha)
        if held is not None and held[0] == sha:
            report.already_there += 1
        else:
            if held is not None:
                report.replaced_corrupt.append(sha)
                target.remove(sha, unless_used_since=float("inf"))
            _copy_one(source, target, sha, report)
        if progress is not None and report.referenced % 100 == 0:
            progress(report)
    return report


def _copy_one(source: BlobStore, target: BlobStore, sha: str, report: CopyReport) -> None:
    try:
        with source.open(sha) as reader:
            stored, size = target.put_chunks(iter(lambda: reader.read(CHUNK), b""))
    except FileNotFoundError:
        report.missing_in_source.append(sha)
        return
    if stored != sha:  # the source's bytes are not what their name says: not copied as sha
        report.corrupt_in_source.append(sha)
        return
    if digest(target, sha) != (sha, size):
        report.failed_verify.append(sha)
        return
    report.copied += 1
    report.bytes_copied += size


def verify_blobs(db: Database, store: BlobStore) -> VerifyReport:
    """Read back and hash every referenced blob in ``store``."""
    report = VerifyReport()
    for sha in referenced_shas(db):
        report.referenced += 1
        held = digest(store, sha)
        if held is None:
            report.missing.append(sha)
        elif held[0] != sha:
            report.corrupt.append(sha)
        else:
            report.intact += 1
            report.bytes += held[1]
    return report
