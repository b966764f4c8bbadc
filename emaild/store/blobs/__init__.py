"""Content-addressed blob stores for raw messages and attachments.

``BlobStore`` (``base``) is what callers use; ``storage.blobs`` picks the
backend: ``file`` (``file.py``, the default: files under ``blob_dir``),
``postgresql`` (``postgresql.py``: chunk rows in the database) or ``s3``
(``s3.py``: an S3-compatible object store). ``open_blob_store`` builds the
configured one; ``emaild blobs migrate`` (``copy.py``) moves blobs between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emaild.store.blobs.base import CHUNK, TEMP_PREFIXES, BlobBackend, BlobStore, Spool
from emaild.store.blobs.file import FileBlobStore

if TYPE_CHECKING:
    from emaild.config import Config
    from emaild.store.database import Database

__all__ = [
    "CHUNK",
    "TEMP_PREFIXES",
    "BlobBackend",
    "BlobStore",
    "FileBlobStore",
    "Spool",
    "open_blob_store",
]


def open_blob_store(config: Config, db: Database, backend: str = "") -> BlobStore:
    """The blob store ``backend`` names (default: the configured ``storage.blobs``).

    Every backend keeps its local temporary files in ``blob_dir``'s ``tmp/``.
    ``ConfigError`` when its settings cannot work (``check_storage``).
    """
    from emaild.config_storage import check_storage

    backend = backend or config.storage.blobs
    check_storage(config.storage, config.database_url, file=config.source or None, backend=backend)
    temp_dir = config.blob_dir / "tmp"
    if backend == "postgresql":
        from emaild.store.blobs.postgresql import PostgresBlobStore

        return PostgresBlobStore(db, temp_dir)
    if backend == "s3":
        from emaild.store.blobs.s3 import S3BlobStore

        # Every pipeline worker, plus downloads and jobs, may use it at once.
        return S3BlobStore(config.storage.s3, temp_dir, connections=config.limits.workers + 8)
    return FileBlobStore(config.blob_dir)
