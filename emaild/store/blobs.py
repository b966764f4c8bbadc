"""Content-addressed blob store for raw messages and attachments.

A blob's name is its sha256, so identical content is stored once. Writes go to
a temporary file in the same directory tree (``tmp/``, or beside the blob as
``.<sha prefix>-*.tmp`` when the name is known first), are fsynced, then
renamed into place and the directory fsynced, so a reader never sees a partial
blob and a crash leaves only a temp file.

Blobs are shared, so only ``emaild.privacy`` deletes one, once no row refers
to it; storing content that already exists touches the file, which keeps it
from a deletion that checked the rows before this writer's commit.

A file in ``tmp/`` is locked (``flock``) by the process writing it for as long
as it is open; ``remove_stale_temp`` deletes the ones nobody holds, which a
crash (or ``kill -9``) left behind: the daemon calls it at startup. A
``Spool`` is such a file written piece by piece as a message arrives (SMTP
``DATA``) and published as the message's raw blob once it is complete, so a
large message is never held whole in memory while it is received.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from emaild.errors import TransientError

CHUNK = 1024 * 1024
# Temporary files in tmp/: put_chunks writes "blob-*", a Spool "spool-*".
TEMP_PREFIXES = ("blob-", "spool-")


class BlobStore:
    """Blobs under ``root/ab/cd/<sha256>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

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
            _unlink(tmp)
            raise TransientError(f"blob store write failed: {exc}") from exc
        except BaseException:
            _unlink(tmp)
            raise
        return sha, len(data)

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store a stream of chunks without holding it whole; returns (sha256, size)."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp = self._temp("blob-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
                fh.flush()
                # The data and what reading it needs (its size); the name is made
                # durable by the directory's fsync after the rename.
                os.fdatasync(fh.fileno())
                sha = digest.hexdigest()
                self.publish_temp(tmp, sha)  # still open: still locked
        except OSError as exc:
            _unlink(tmp)
            raise TransientError(f"blob store write failed: {exc}") from exc
        except BaseException:
            _unlink(tmp)
            raise
        return sha, size

    def open(self, sha256: str) -> BinaryIO:
        return self.path(sha256).open("rb")

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def spool(self) -> Spool:
        """A new, empty ``Spool`` in ``tmp/`` (``TransientError`` if the store is unusable)."""
        fd, tmp = self._temp("spool-")
        return Spool(self, fd, tmp)

    def remove_stale_temp(self) -> int:
        """Delete temporary files in ``tmp/`` that no process holds; returns how many.

        A writer holds an exclusive ``flock`` on its file while it is open, and
        the kernel drops it when the writer dies, so what can be locked here was
        left by a crash: another process writing now (``emaild ingest`` beside
        the daemon) keeps its files.
        """
        removed = 0
        try:
            names = sorted(os.listdir(self._tmp))
        except FileNotFoundError:
            return 0
        for name in names:
            if not name.startswith(TEMP_PREFIXES):
                continue
            path = self._tmp / name
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
                _unlink(str(path))
                removed += 1
            finally:
                os.close(fd)
        return removed

    def _temp(self, prefix: str) -> tuple[int, str]:
        """A new temporary file in ``tmp/``, locked for as long as ``fd`` is open."""
        try:
            self._tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix=prefix)
        except OSError as exc:
            raise TransientError(f"blob store unavailable: {exc}") from exc
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file nobody else knows: never waits
        return fd, tmp

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
            _unlink(tmp)
            return
        if not final.parent.is_dir():
            self._make_dirs(final.parent)
        os.replace(tmp, final)
        _fsync_dir(final.parent)


class Spool:
    """A blob being written piece by piece (a message as it arrives); one writer.

    ``write`` appends (on the event loop: page-cache writes, no fsync);
    ``load`` reads the whole content back and hashes it; ``publish`` makes it
    durable and renames it into place as the blob with that hash; ``discard``
    deletes it. Either of the last two ends it; ``discard`` after ``publish``
    does nothing, so a ``finally: spool.discard()`` is always safe.
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
        self._close()  # renamed into place: closing drops the lock, nothing to delete
        return self.sha256

    def discard(self) -> None:
        if self._file is not None:
            self._close()
            _unlink(self.path)

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


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


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
