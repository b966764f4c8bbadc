"""The blob store on every backend (file, PostgreSQL, S3 on a loopback moto server):
content-addressed, written whole or not at all, streamed both ways, nothing left behind."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emaild.config import S3Config
from emaild.errors import TransientError
from emaild.store.blobs import CHUNK, BlobStore, FileBlobStore


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def temp_files(tmp_path: Path) -> list[str]:
    temp = tmp_path / "blobs" / "tmp"
    return sorted(os.listdir(temp)) if temp.is_dir() else []


def test_put_stores_once_under_the_sha_and_leaves_no_temporary_file(
    blob_store: BlobStore, tmp_path: Path
) -> None:
    data = b"From: a@b\r\n\r\nhello\r\n"
    sha = hashlib.sha256(data).hexdigest()
    assert not blob_store.exists(sha) and blob_store.size(sha) is None
    assert blob_store.put(data) == (sha, len(data))
    assert blob_store.put(data) == (sha, len(data))  # the same bytes again: nothing new
    if isinstance(blob_store, FileBlobStore):
        assert files(tmp_path / "blobs") == [f"{sha[:2]}/{sha[2:4]}/{sha}"]
    assert blob_store.exists(sha) and blob_store.size(sha) == len(data)
    assert blob_store.read(sha) == data
    assert temp_files(tmp_path) == []


def test_put_and_put_chunks_agree(blob_store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    sha, size = blob_store.put_chunks(iter((data[:1000], data[1000:])))
    assert (sha, size) == blob_store.put(data) == (hashlib.sha256(data).hexdigest(), len(data))
    assert blob_store.read(sha) == data
    assert temp_files(tmp_path) == []
    empty = hashlib.sha256(b"").hexdigest()
    assert blob_store.put_chunks(iter(())) == (empty, 0)
    assert blob_store.read(empty) == b"" and blob_store.size(empty) == 0


def _pattern(total: int, piece: int = 256 * 1024) -> Iterator[bytes]:
    """``total`` bytes, generated piece by piece (never whole in memory)."""
    for start in range(0, total, piece):
        n = min(piece, total - start)
        yield (start // piece).to_bytes(4, "big") * (n // 4) + b"x" * (n % 4)


def test_large_blobs_stream_both_ways_without_being_held_whole(blob_store: BlobStore) -> None:
    total = 8 * CHUNK + 123
    digest = hashlib.sha256()
    for piece in _pattern(total):
        digest.update(piece)
    tracemalloc.start()
    try:
        sha, size = blob_store.put_chunks(_pattern(total))
        _, stored_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        check = hashlib.sha256()
        read = 0
        with blob_store.open(sha) as reader:
            while piece := reader.read(64 * 1024):
                check.update(piece)
                read += len(piece)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"{blob_store.kind}: 8 MiB blob, peak {stored_peak} B storing, {read_peak} B reading")
    assert (sha, size, read) == (digest.hexdigest(), total, total)
    assert check.hexdigest() == sha
    # 8 MiB through each way; a few 1 MiB pieces at most in memory at once.
    assert stored_peak < 4 * CHUNK, stored_peak
    assert read_peak < 4 * CHUNK, read_peak
    if blob_store.kind == "postgresql":
        assert blob_store.chunk_count(sha) == 9  # type: ignore[attr-defined]


def test_a_spool_is_published_as_its_blob_and_then_gone(
    blob_store: BlobStore, tmp_path: Path
) -> None:
    spool = blob_store.spool()
    for piece in (b"From: a@b\r\n", b"\r\n", b"body\r\n" * 1000):
        spool.write(piece)
    data = spool.load()
    sha = spool.publish()
    spool.discard()  # after publish: nothing to do
    assert sha == hashlib.sha256(data).hexdigest() and blob_store.read(sha) == data
    assert temp_files(tmp_path) == []
    # The same content spooled again: stored once, the spool file gone all the same.
    again = blob_store.spool()
    again.write(data)
    again.load()
    assert again.publish() == sha
    assert temp_files(tmp_path) == []
    dropped = blob_store.spool()
    dropped.write(b"never published")
    dropped.discard()
    assert temp_files(tmp_path) == []
    assert not blob_store.exists(hashlib.sha256(b"never published").hexdigest())


def test_remove_keeps_a_blob_stored_again_since_the_deletion_began(
    blob_store: BlobStore,
) -> None:
    # S3's LastModified has whole seconds: wait them out around the cutoff there.
    tick = 1.1 if blob_store.kind == "s3" else 0.02
    reused, unused = b"stored again", b"stored once"
    sha_reused, _ = blob_store.put(reused)
    sha_unused, _ = blob_store.put(unused)
    time.sleep(tick)
    started = time.time()
    time.sleep(tick)
    blob_store.put(reused)  # a writer stores the same content after the check
    used = blob_store.used_at(sha_reused)
    assert used is not None and used >= started
    assert blob_store.remove(sha_reused, unless_used_since=started) is None
    assert blob_store.remove(sha_unused, unless_used_since=started) == len(unused)
    assert blob_store.exists(sha_reused) and not blob_store.exists(sha_unused)
    assert blob_store.remove(sha_unused, unless_used_since=started) is None  # gone already
    with pytest.raises(FileNotFoundError):
        blob_store.open(sha_unused)
    assert blob_store.used_at(sha_unused) is None
    # Whatever its time (how ``blobs migrate`` drops a corrupt copy before copying again).
    assert blob_store.remove(sha_reused, unless_used_since=float("inf")) == len(reused)
    assert not blob_store.exists(sha_reused)


def test_stale_temporary_files_are_removed_on_every_backend(
    blob_store: BlobStore, tmp_path: Path
) -> None:
    spool = blob_store.spool()  # held by this process: kept
    spool.write(b"arriving")
    temp = tmp_path / "blobs" / "tmp"
    (temp / "spool-left-by-a-crash").write_bytes(b"half a message")
    (temp / "blob-left-by-a-crash").write_bytes(b"half an attachment")
    assert blob_store.remove_stale_temp() == 2
    assert len(temp_files(tmp_path)) == 1
    spool.discard()


def test_a_sha_is_never_a_path(blob_store: BlobStore) -> None:
    for bad in ("../../etc/passwd", "A" * 64, "ab" * 31):
        with pytest.raises(ValueError):
            blob_store.exists(bad)


@pytest.fixture(params=["file", "postgresql", "s3"])
def unusable_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each backend with its storage out of reach."""
    temp = tmp_path / "tmp"
    if request.param == "file":
        blocked = tmp_path / "blobs"
        blocked.write_text("a file where the blob directory should be")
        yield FileBlobStore(blocked)
    elif request.param == "postgresql":
        from emaild.store.blobs.postgresql import PostgresBlobStore
        from emaild.store.database import Database

        db = Database("postgresql+psycopg://postgres@127.0.0.1:9/nothing")
        yield PostgresBlobStore(db, temp)
        db.dispose()
    else:
        from emaild.store.blobs.s3 import S3BlobStore

        closed = S3Config(
            bucket="b",
            endpoint_url="http://127.0.0.1:9",
            connect_timeout_seconds=1,
            max_attempts=1,
            credentials_file=str(request.getfixturevalue("s3_server").credentials),
        )
        store = S3BlobStore(closed, temp)
        yield store
        store.close()


def test_an_unusable_store_is_a_transient_error(unusable_store: BlobStore) -> None:
    with pytest.raises(TransientError, match=r"blob store|database"):
        unusable_store.put(b"data")
    with pytest.raises(TransientError, match=r"blob store|database"):
        unusable_store.put_chunks(iter((b"data",)))


def test_blob_backends_their_settings_cannot_serve_are_refused(tmp_path: Path) -> None:
    from emaild.config import load_config
    from emaild.errors import ConfigError

    env = {"HOME": str(tmp_path), "EMAILD_STATE_DIR": str(tmp_path / "state")}
    cases = {
        '[storage]\nblobs = "postgresql"\n': "needs a PostgreSQL database_url",
        '[storage]\nblobs = "s3"\n': "needs \\[storage.s3\\] bucket",
        '[storage]\nblobs = "nfs"\n': "'file', 'postgresql' or 's3'",
    }
    for toml, problem in cases.items():
        path = tmp_path / "emaild.toml"
        path.write_text(toml)
        with pytest.raises(ConfigError, match=problem):
            load_config(path, env)
    path.write_text('[storage]\nblobs = "s3"\n[storage.s3]\nbucket = "b"\nprefix = "/mail"\n')
    config = load_config(path, env)
    assert (config.storage.blobs, config.storage.s3.prefix) == ("s3", "mail/")


def test_s3_credentials_come_from_their_file_and_a_bad_one_is_named(tmp_path: Path) -> None:
    from emaild.errors import ConfigError
    from emaild.store.blobs.s3 import read_credentials

    good = tmp_path / "s3.cred"
    good.write_text("[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n")
    assert read_credentials(S3Config(bucket="b", credentials_file=str(good))) == {
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "SK",
    }
    assert read_credentials(S3Config(bucket="b")) == {}  # the SDK's own chain
    bad = tmp_path / "bad.cred"
    bad.write_text("[default]\naws_access_key_id = AK\n")
    for settings, problem in (
        (S3Config(bucket="b", credentials_file=str(bad)), "needs aws_access_key_id and"),
        (S3Config(bucket="b", credentials_file=str(good), profile="x"), "has no \\[x\\]"),
        (S3Config(bucket="b", credentials_file=str(tmp_path / "none")), "cannot read"),
    ):
        with pytest.raises(ConfigError, match=problem):
            read_credentials(settings)
