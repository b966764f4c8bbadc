"""Which blobs rows still refer to, and deleting the ones nobody does.

A blob (``emaild.store.blobs``) is named by its sha256 and shared by every row
with the same content: message raw bytes, attachments and quarantine entries.
Deleting a row therefore names its blobs as *candidates*; after the row's
transaction commits, a candidate that no remaining row refers to is removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from emaild.mime.parse import parse_message
from emaild.store.blobs import BlobStore
from emaild.store.database import Database
from emaild.store.models import Attachment, Message, QuarantineEntry

log = logging.getLogger("emaild.privacy")

# Shas per IN (...) list: well under every backend's parameter limit.
CHUNK = 500
# Parsing a quarantined message again to find its attachments' blobs: bounded.
REPARSE_MAX_BYTES = 64 * 1024 * 1024
REPARSE_SPOOL_BYTES = 256 * 1024


@dataclass
class BlobsFreed:
    """What a deletion did to the blob store."""

    deleted: int = 0
    bytes: int = 0
    kept: int = 0  # still used by another row (or stored again meanwhile)


def referenced(session: Session, shas: Iterable[str]) -> set[str]:
    """Those of ``shas`` that some message, attachment or quarantine row still refers to."""
    wanted = sorted({s for s in shas if s})
    found: set[str] = set()
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        query = union(
            select(Message.raw_sha256).where(Message.raw_sha256.in_(chunk)),
            select(Attachment.sha256).where(Attachment.sha256.in_(chunk)),
            select(QuarantineEntry.raw_sha256).where(QuarantineEntry.raw_sha256.in_(chunk)),
        )
        found.update(str(s) for s in session.execute(query).scalars())
    return found


def message_blobs(session: Session, message_ids: list[int]) -> set[str]:
    """The raw and attachment blobs of messages ``message_ids``."""
    shas: set[str] = set()
    for start in range(0, len(message_ids), CHUNK):
        chunk = message_ids[start : start + CHUNK]
        shas.update(session.scalars(select(Message.raw_sha256).where(Message.id.in_(chunk))))
        shas.update(
            session.scalars(select(Attachment.sha256).where(Attachment.message_id.in_(chunk)))
        )
    shas.discard("")
    return shas


def quarantined_blobs(blobs: BlobStore, raw_sha256: str) -> set[str]:
    """A quarantine entry's raw blob and the attachment blobs its parse spooled.

    The entry has no attachment rows (it never became a message), but parsing it
    stored its attachments: parse the raw bytes again, only hashing, to name them.
    """
    if not raw_sha256:
        return set()
    shas = {raw_sha256}
    try:
        size = blobs.size(raw_sha256)
        if size is None or size > REPARSE_MAX_BYTES:
            return shas
        raw = blobs.read(raw_sha256)
        parsed = parse_message(raw, spool_threshold=REPARSE_SPOOL_BYTES, raw_sha256=raw_sha256)
    except Exception as exc:  # unparseable is why some entries are here: raw only
        log.debug("reparse of %s failed: %s", raw_sha256, exc)
        return shas
    shas.update(a.sha256 for a in parsed.attachments if a.sha256)
    return shas


def remove_unreferenced(
    db: Database, blobs: BlobStore, candidates: Iterable[str], *, started: float
) -> BlobsFreed:
    """Delete the ``candidates`` no row refers to any more (after the rows' commit).

    ``started``: when the deletion began; a blob stored again since (a message
    with the same content arriving meanwhile) is kept.
    """
    shas = sorted({s for s in candidates if s})
    freed = BlobsFreed()
    if not shas:
        return freed
    with db.session(readonly=True) as session:
        used = referenced(session, shas)
    for sha in shas:
        if sha in used:
            freed.kept += 1
            continue
        size = blobs.remove(sha, unless_used_since=started)
        if size is not None:
            freed.deleted += 1
            freed.bytes += size
        elif blobs.exists(sha):
            freed.kept += 1
    return freed
