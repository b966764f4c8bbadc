"""The PostgreSQL blob store's tables (``storage.blobs = "postgresql"``).

Re-exported by ``emaild.store.models``; only ``emaild.store.blobs.postgresql``
reads and writes them. A blob is one ``blobs`` row (its size, chunk count and
when it was last stored) and its bytes in ``blob_chunks`` rows of at most 1 MiB,
so neither writing nor reading a 25 MB attachment holds it whole in memory.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from emaild.store.base import Base


class BlobRow(Base):
    """One stored blob; written in the same transaction as its chunks (after them)."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    chunks: Mapped[int] = mapped_column(Integer)
    # Last stored (again): a deletion that checked the rows earlier keeps it.
    used_at: Mapped[datetime]


class BlobChunk(Base):
    """Piece ``seq`` (from 0) of blob ``sha256``."""

    __tablename__ = "blob_chunks"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
