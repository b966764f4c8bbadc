"""The blob store: content-addressed, written whole or not at all, nothing left behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from emaild.errors import TransientError
from emaild.store.blobs import BlobStore


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_stores_once_under_the_sha_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")  # the root does not exist yet
    data = b"From: a@b\r\n\r\nhello\r\n"
    sha = hashlib.sha256(data).hexdigest()
    assert store.put(data) == (sha, len(data))
    assert store.put(data) == (sha, len(data))  # the same bytes again: nothing new
    assert files(tmp_path / "blobs") == [f"{sha[:2]}/{sha[2:4]}/{sha}"]
    assert store.read(sha) == data


def test_put_and_put_chunks_agree(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = bytes(range(256)) * 1000
    sha, size = store.put_chunks(iter((data[:1000], data[1000:])))
    assert (sha, size) == store.put(data) == (hashlib.sha256(data).hexdigest(), len(data))
    assert [f for f in files(tmp_path) if not f.startswith("tmp/")] == [
        f"{sha[:2]}/{sha[2:4]}/{sha}"
    ]


def test_an_unwritable_store_is_a_transient_error(tmp_path: Path) -> None:
    blocked = tmp_path / "blobs"
    blocked.write_text("a file where the blob directory should be")
    with pytest.raises(TransientError, match="blob store"):
        BlobStore(blocked).put(b"data")
    with pytest.raises(TransientError, match="blob store"):
        BlobStore(blocked).put_chunks(iter((b"data",)))
