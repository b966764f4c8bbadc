"""The PostgreSQL blob store (``storage.blobs = "postgresql"``): blobs in the database.

Every emaild process and host on one PostgreSQL sees the same blobs with no
shared filesystem. A blob is stored as 1 MiB ``blob_chunks`` rows and then its
``blobs`` row, in one transaction: the commit is what makes it exist, so a
reader never sees a partial blob and ``put`` returning means it is durable.
Reading fetches one chunk row per query (``open``), so neither direction holds
a whole attachment in memory. ``remove`` deletes the row only if it was not
stored again since the deletion began, in the same statement: no race with a
writer storing the same content.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects.postgresql import insert

from emaild.store.blob_models import BlobChunk, BlobRow
from emaild.store.blobs.base import CHUNK, BlobBackend, check_sha
from emaild.store.blobs.remote import RemoteBlobStore, streaming
from emaild.store.database import Database, translate_errors

BLOBS: Table = BlobRow.__table__  # type: ignore[assignment]
CHUNKS: Table = BlobChunk.__table__  # type: ignore[assignment]


def _now() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)


class PostgresBlobStore(RemoteBlobStore):
    """Blobs in the ``blobs``/``blob_chunks`` tables of the configured PostgreSQL database."""

    kind: BlobBackend = "postgresql"

    def __init__(self, db: Database, temp_dir: Path) -> None:
        super().__init__(temp_dir)
        self._engine = db.engine

    def _row(self, sha256: str) -> Any:
        check_sha(sha256)
        with translate_errors(), self._engine.connect() as conn:
            return conn.execute(
                select(BLOBS.c.size, BLOBS.c.chunks, BLOBS.c.used_at).where(
                    BLOBS.c.sha256 == sha256
                )
            ).first()

    def exists(self, sha256: str) -> bool:
        return self._row(sha256) is not None

    def size(self, sha256: str) -> int | None:
        row = self._row(sha256)
        return None if row is None else int(row.size)

    def used_at(self, sha256: str) -> float | None:
        row = self._row(sha256)
        return None if row is None else float(row.used_at.timestamp())

    def chunk_count(self, sha256: str) -> int:
        """How many chunk rows blob ``sha256`` has (0 when missing): what tests check."""
        with translate_errors(), self._engine.connect() as conn:
            query = select(CHUNKS.c.seq).where(CHUNKS.c.sha256 == check_sha(sha256))
            return len(conn.execute(query).all())

    def _mark_used(self, sha256: str) -> bool:
        with translate_errors(), self._engine.begin() as conn:
            query = update(BLOBS).where(BLOBS.c.sha256 == sha256).values(used_at=_now())
            return bool(conn.execute(query).rowcount)

    def _upload(self, sha256: str, stream: BinaryIO, size: int) -> None:
        """Chunk rows then the blob row, one transaction; a concurrent writer of the same
        content waits on the first chunk's key and then skips what is there."""
        with translate_errors(), self._engine.begin() as conn:
            seq = 0
            while seq == 0 or seq * CHUNK < size:
                data = stream.read(CHUNK)
                if len(data) != min(CHUNK, size - seq * CHUNK):
                    raise OSError(f"blob {sha256} changed while it was stored")
                conn.execute(
                    insert(CHUNKS)
                    .values(sha256=sha256, seq=seq, data=data)
                    .on_conflict_do_nothing()
                )
                seq += 1
            conn.execute(
                insert(BLOBS)
                .values(sha256=sha256, size=size, chunks=seq, used_at=_now())
                .on_conflict_do_update(index_elements=["sha256"], set_={"used_at": _now()})
            )

    def open(self, sha256: str) -> BinaryIO:
        row = self._row(sha256)
        if row is None:
            raise FileNotFoundError(f"no blob {sha256}")
        total = int(row.chunks)
        state = {"seq": 0}

        def next_piece() -> bytes:
            seq = state["seq"]
            if seq >= total:
                return b""
            state["seq"] = seq + 1
            with translate_errors(), self._engine.connect() as conn:
                query = select(CHUNKS.c.data).where(CHUNKS.c.sha256 == sha256, CHUNKS.c.seq == seq)
                data = conn.execute(query).scalar()
            if data is None:
                raise FileNotFoundError(f"blob {sha256} lost chunk {seq} (deleted meanwhile)")
            return data if isinstance(data, bytes) else bytes(data)

        return streaming(next_piece, lambda: None)

    def remove(self, sha256: str, *, unless_used_since: float) -> int | None:
        query = delete(BLOBS).where(BLOBS.c.sha256 == check_sha(sha256))
        if unless_used_since != float("inf"):  # inf: whatever its time (a corrupt copy)
            query = query.where(BLOBS.c.used_at < datetime.fromtimestamp(unless_used_since, UTC))
        with translate_errors(), self._engine.begin() as conn:
            size = conn.execute(query.returning(BLOBS.c.size)).scalar()
            if size is None:
                return None
            conn.execute(delete(CHUNKS).where(CHUNKS.c.sha256 == sha256))
        return int(size)

    def close(self) -> None:
        return None  # the engine is the Database's: App.close disposes of it
