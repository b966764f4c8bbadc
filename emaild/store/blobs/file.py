"""The file blob store (``storage.blobs = "file"``, the default): blobs as files.

A blob's name is its sha256, so identical content is stored once. Writes go to
a temporary file in the same directory tree (``tmp/``, or beside the blob as
``.<sha prefix>-*.tmp`` when the name is known first), are fsynced, then
renamed into place and the directory fsynced, so a reader never sees a partial
blob and a crash leaves only a temp file.

Blobs are shared, so only ``emaild.privacy`` deletes one, once no row refers
to it; storing content that already exists touches the file, which keeps it
from a deletion that checked the rows before this writer's commit.

Temporary files in ``tmp/`` (``LocalTemp``) are locked by the process writing
them; ``remove_stale_temp`` deletes the ones a crash left behind. A ``Spool``
(SMTP ``DATA``) is such a file, renamed into place once the message is complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from emaild.errors import TransientError
from emaild.store.blobs.base import BlobBackend, LocalTemp, Spool, check_sha, unlink


class FileBlobStore:
    """Blobs under ``root/ab/cd/<sha256>`` (a ``BlobStore``)."""

    kind: BlobBackend = "file"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._temp = LocalTemp(self.root / "tmp")

    def path(self, sha256: str) -> Path:
        """Where blob ``sha256`` lives; only this backend and its tests know blobs are files."""
        check_sha(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int | None:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def used_at(self, sha256: str) -> float | None:
        """The file's mtime: storing the same content again touches it."""
        try:
            return self.path(sha256).stat().st_mtime
        except FileNotFoundError:
            return None

    def close(self) -> None:
        return None

    def put(self, data: bytes | memoryview) -> tuple[str, int]:
        """Store ``data``; returns (sha256, size)."""
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if _touch(final):
            return sha, len(data)
        # The name is known before writing: the temporary file goes beside its
        # final place, so the rename stays in one directory (no shared tmp/
        # directory that every concurrent writer has to lock).
        fd, tmp = self._temp_beside(final)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                # The data and what reading it needs (its size); the name is made
                # durable by the directory's fsync after the rename.
                os.fdatasync(fh.fileno())
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            unlink(tmp)
            raise TransientError(f"blob store write failed: {exc}") from exc
        except BaseException:
            unlink(tmp)
            raise
        return sha, len(data)

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store a stream of chunks without holding it whole; returns (sha256, size)."""
        fd, tmp, sha, size = self._temp.write_chunks(chunks)
        try:
            self.publish_temp(tmp, sha)  # still open: still locked
        except OSError as exc:
            unlink(tmp)
            raise TransientError(f"blob store write failed: {exc}") from exc
        except BaseException:
            unlink(tmp)
            raise
        finally:
            os.close(fd)
        return sha, size

    def open(self, sha256: str) -> BinaryIO:
        return self.path(sha256).open("rb")

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def spool(self) -> Spool:
        """A new, empty ``Spool`` in ``tmp/`` (``TransientError`` if the store is unusable)."""
        fd, tmp = self._temp.new("spool-")
        return Spool(self, fd, tmp)

    def remove_stale_temp(self) -> int:
        """Delete temporary files in ``tmp/`` that no process holds; returns how many."""
        return self._temp.remove_stale()

    def _temp_beside(self, final: Path) -> tuple[int, str]:
        """A new temporary file in ``final``'s directory (created, durably, if new)."""
        prefix = f".{final.name[:16]}-"
        try:
            try:
                return tempfile.mkstemp(dir=final.parent, prefix=prefix, suffix=".tmp")
            except FileNotFoundError:
                self._make_dirs(final.parent)
                return tempfile.mkstemp(dir=final.parent, prefix=prefix, suffix=".tmp")
        except OSError as exc:
            raise TransientError(f"blob store unavailable: {exc}") from exc

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and its missing parents under the root, each made durable.

        A new directory's name lives in its parent: the parent is fsynced too, or a
        crash could lose the directory with a blob the database already points to.
        """
        missing = []
        while not directory.is_dir() and directory != self.root:
            missing.append(directory)
            directory = directory.parent
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in reversed(missing):
            path.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(path.parent)

    def remove(self, sha256: str, *, unless_used_since: float) -> int | None:
        """Delete blob ``sha256`` unless it was written or stored again after the given time.

        The caller checked that no row refers to it; a writer storing the same
        content meanwhile (its row not yet committed) touched the file, and it
        stays. Returns the bytes freed, or None if it was kept (or missing).
        """
        path = self.path(sha256)
        try:
            info = path.stat()
            if info.st_mtime >= unless_used_since:
                return None
            path.unlink()
        except FileNotFoundError:
            return None
        return info.st_size

    def publish_temp(self, tmp: str, sha: str) -> None:
        """Rename the durable temporary file ``tmp`` into place as blob ``sha``."""
        final = self.path(sha)
        if _touch(final):
            unlink(tmp)
            return
        if not final.parent.is_dir():
            self._make_dirs(final.parent)
        os.replace(tmp, final)
        _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _touch(path: Path) -> bool:
    """True if blob ``path`` exists, its time set to now: in use again (see ``remove``)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except OSError:  # not ours to touch (another owner): it exists all the same
        return path.is_file()
    return True
