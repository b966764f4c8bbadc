"""What every blob store does (``BlobStore``), and the local temporary files they share.

A blob is raw mail or an attachment, named by the sha256 of its bytes, so
identical content is stored once whatever the backend. The contract every
backend keeps:

- ``put``/``put_chunks``/``Spool.publish`` return only once the blob is durable
  (accepted means stored); a reader never sees a partial blob;
- storing content that already exists marks it used again (``used_at``), which
  keeps it from a deletion that checked the rows before this writer's commit
  (``remove(..., unless_used_since=)``, called only by ``emaild.privacy``);
- ``open`` is a streaming reader: no backend holds a whole blob in memory to
  serve it, and ``put_chunks``/``Spool`` never hold one to store it.

Writes that arrive piece by piece (``put_chunks``, an SMTP ``Spool``) go to a
local temporary file first (``LocalTemp``: ``<blob_dir>/tmp``, locked while
written, stale ones removed at startup), then are published into the store:
renamed by the file backend, streamed in by the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from emaild.errors import TransientError

# Piece size for streaming: file reads, PostgreSQL chunk rows, HTTP response pieces.
CHUNK = 1024 * 1024
# Temporary files in tmp/: put_chunks writes "blob-*", a Spool "spool-*".
TEMP_PREFIXES = ("blob-", "spool-")
BlobBackend = Literal["file", "postgresql", "s3"]


def check_sha(sha256: str) -> str:
    """``sha256`` if it is a lowercase hex sha256 (``ValueError`` otherwise): never a path."""
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return sha256


class BlobStore(Protocol):
    """A content-addressed blob store; ``emaild.store.blobs.open_blob_store`` picks one."""

    kind: BlobBackend

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int | None:
        """The blob's size in bytes, None when it is missing."""

    def used_at(self, sha256: str) -> float | None:
        """When it was last stored (Unix time, never earlier than the truth), None if missing."""

    def put(self, data: bytes | memoryview) -> tuple[str, int]:
        """Store ``data`` durably; returns (sha256, size)."""

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store a stream of chunks without holding it whole; returns (sha256, size)."""

    def open(self, sha256: str) -> BinaryIO:
        """A streaming reader (``FileNotFoundError`` when missing); close it."""

    def read(self, sha256: str) -> bytes:
        """The whole blob (small blobs only: raw mail the pipeline parses anyway)."""

    def spool(self) -> Spool:
        """A new, empty local ``Spool`` (``TransientError`` if the store is unusable)."""

    def publish_temp(self, tmp: str, sha: str) -> None:
        """Store the durable local temporary file ``tmp`` as blob ``sha``; ``tmp`` is gone after."""

    def remove(self, sha256: str, *, unless_used_since: float) -> int | None:
        """Delete the blob unless stored again since the given time; the bytes freed or None."""

    def remove_stale_temp(self) -> int:
        """Delete local temporary files a crash left behind; returns how many."""

    def close(self) -> None:
        """Release connections (nothing to do for files)."""


class LocalTemp:
    """Temporary files in one local directory, each ``flock``ed while its writer has it open.

    The kernel drops the lock when the writer dies, so ``remove_stale`` can tell
    a file a crash (or ``kill -9``) left behind from one another process (``emaild
    ingest`` beside the daemon) is writing right now.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def new(self, prefix: str) -> tuple[int, str]:
        """A new temporary file, locked for as long as the returned ``fd`` is open."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=prefix)
        except OSError as exc:
            raise TransientError(f"blob store unavailable: {exc}") from exc
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file nobody else knows: never waits
        return fd, tmp

    def write_chunks(self, chunks: Iterable[bytes]) -> tuple[int, str, str, int]:
        """Write ``chunks`` to a new durable temporary file: (open fd, path, sha256, size).

        The caller publishes the file and closes ``fd`` (which drops the lock).
        """
        digest = hashlib.sha256()
        size = 0
        fd, tmp = self.new("blob-")
        try:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            # The data and what reading it needs (its size).
            os.fdatasync(fd)
        except OSError as exc:
            os.close(fd)
            unlink(tmp)
            raise TransientError(f"blob store write failed: {exc}") from exc
        except BaseException:
            os.close(fd)
            unlink(tmp)
            raise
        return fd, tmp, digest.hexdigest(), size

    def remove_stale(self) -> int:
        """Delete the temporary files nobody holds; returns how many."""
        removed = 0
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return 0
        for name in names:
            if not name.startswith(TEMP_PREFIXES):
                continue
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # gone already, or not a plain file
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # held: being written right now
            try:
                unlink(str(path))
                removed += 1
            finally:
                os.close(fd)
        return removed


class Spool:
    """A blob being written piece by piece (a message as it arrives); one writer.

    A local temporary file whatever the backend. ``write`` appends (on the event
    loop: page-cache writes, no fsync); ``load`` reads the whole content back and
    hashes it; ``publish`` makes it durable and hands it to the store as the blob
    with that hash; ``discard`` deletes it. Either of the last two ends it;
    ``discard`` after ``publish`` does nothing, so a ``finally: spool.discard()``
    is always safe.
    """

    def __init__(self, store: BlobStore, fd: int, path: str) -> None:
        self.store = store
        self.path = path
        self.size = 0
        self.sha256 = ""
        self._file: BinaryIO | None = os.fdopen(fd, "w+b")

    def write(self, data: bytes | memoryview) -> None:
        if self._file is None:
            raise ValueError("spool already published or discarded")
        try:
            self._file.write(data)
        except OSError as exc:
            raise TransientError(f"blob store write failed: {exc}") from exc
        self.size += len(data)

    def load(self) -> bytes:
        """The whole content, read back from the file (one copy in memory), and hash it."""
        if self._file is None:
            raise ValueError("spool already published or discarded")
        try:
            self._file.flush()
            self._file.seek(0)
            data = self._file.read()
        except OSError as exc:
            raise TransientError(f"blob store read failed: {exc}") from exc
        self.sha256 = hashlib.sha256(data).hexdigest()  # releases the GIL
        return data

    def publish(self) -> str:
        """Make the content durable as the blob named by its sha256 (after ``load``)."""
        if self._file is None or not self.sha256:
            raise ValueError("publish() needs an open spool that was load()ed")
        try:
            self._file.flush()
            os.fdatasync(self._file.fileno())
            self.store.publish_temp(self.path, self.sha256)
        except OSError as exc:
            self.discard()
            raise TransientError(f"blob store write failed: {exc}") from exc
        except BaseException:
            self.discard()
            raise
        self._close()  # published: closing drops the lock, nothing to delete
        return self.sha256

    def discard(self) -> None:
        if self._file is not None:
            self._close()
            unlink(self.path)

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
