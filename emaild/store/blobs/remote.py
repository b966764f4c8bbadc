"""What the PostgreSQL and S3 blob stores share: local spooling, then a streamed upload.

Content whose hash is not known before it is written (``put_chunks``, an SMTP
``Spool``) is first written to a local temporary file (``LocalTemp``, under the
configured ``blob_dir``'s ``tmp/``), hashed on the way; ``publish_temp`` then
streams that file into the store and deletes it. A backend implements the
primitives: ``_mark_used`` (the blob exists: record it as stored now) and
``_upload`` (store a readable stream durably under its sha).
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from emaild.store.blobs.base import LocalTemp, Spool, check_sha, unlink


class RemoteBlobStore(ABC):
    """A ``BlobStore`` whose blobs live away from this host; temporary files stay local."""

    def __init__(self, temp_dir: Path) -> None:
        self._temp = LocalTemp(temp_dir)

    # --- what a backend provides ------------------------------------------
    @abstractmethod
    def _mark_used(self, sha256: str) -> bool:
        """True if the blob exists, after recording it as stored now (see ``used_at``)."""

    @abstractmethod
    def _upload(self, sha256: str, stream: BinaryIO, size: int) -> None:
        """Store ``size`` bytes read from ``stream`` as blob ``sha256``, durably."""

    # --- the BlobStore operations built on them ----------------------------
    def put(self, data: bytes | memoryview) -> tuple[str, int]:
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        if not self._mark_used(sha):
            self._upload(sha, io.BytesIO(data), len(data))
        return sha, len(data)

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        fd, tmp, sha, size = self._temp.write_chunks(chunks)
        try:
            self.publish_temp(tmp, sha)
        finally:
            os.close(fd)
            unlink(tmp)
        return sha, size

    def publish_temp(self, tmp: str, sha: str) -> None:
        check_sha(sha)
        try:
            if not self._mark_used(sha):
                with open(tmp, "rb") as stream:
                    self._upload(sha, stream, os.fstat(stream.fileno()).st_size)
        finally:
            unlink(tmp)

    def read(self, sha256: str) -> bytes:
        with self.open(sha256) as reader:
            return reader.read()

    def spool(self) -> Spool:
        fd, tmp = self._temp.new("spool-")
        return Spool(self, fd, tmp)  # type: ignore[arg-type]  # a BlobStore by its methods

    def remove_stale_temp(self) -> int:
        return self._temp.remove_stale()

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO: ...


class PieceReader(io.RawIOBase):
    """A raw reader over a blob fetched in pieces; ``next_piece`` returns b"" at the end.

    Wrapped in a ``BufferedReader`` by ``streaming``: at most one piece (a
    PostgreSQL chunk row, an S3 read) is held at a time.
    """

    def __init__(self, next_piece: Callable[[], bytes], on_close: Callable[[], None]) -> None:
        self._next = next_piece
        self._on_close = on_close
        self._piece = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._piece and not self._done:
            piece = self._next()
            if not piece:
                self._done = True
            self._piece = memoryview(piece)
        n = min(len(buffer), len(self._piece))
        buffer[:n] = self._piece[:n]
        self._piece = self._piece[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._piece = memoryview(b"")
            self._on_close()
        super().close()


def streaming(next_piece: Callable[[], bytes], on_close: Callable[[], None]) -> BinaryIO:
    """A buffered streaming reader over pieces (see ``PieceReader``).

    A small buffer: the raw reader holds its current piece already.
    """
    return io.BufferedReader(PieceReader(next_piece, on_close), buffer_size=64 * 1024)
