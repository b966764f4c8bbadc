"""The PostgreSQL and S3 blob stores end to end: mail over SMTP with a >1 MiB attachment
is stored in the configured backend and served back by the API; ``emaild blobs migrate``
copies file -> s3 -> postgresql, resumable and checked by sha256; ``verify`` finds damage."""

from __future__ import annotations

import hashlib
import json
import smtplib
from pathlib import Path
from typing import Any

import pytest
from mailbuilder import build_multipart
from smtp_helpers import smtp_listener
from sqlalchemy import select, text

from emaild.app import App
from emaild.intake import Envelope, Outcome
from emaild.store.blobs import CHUNK
from emaild.store.models import Attachment, Message

# The PostgreSQL backend needs a PostgreSQL database (refused on SQLite), so every
# test here runs on the local PostgreSQL only.
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def storage_toml(request: pytest.FixtureRequest, backend: str, bucket: str = "") -> str:
    toml = f'[storage]\nblobs = "{backend}"\n'
    if bucket:
        toml += request.getfixturevalue("s3_server").toml(bucket)
    return toml


def blob_files(app: App) -> list[Path]:
    return [p for p in app.config.blob_dir.rglob("*") if p.is_file() and p.parent.name != "tmp"]


@pytest.mark.parametrize("backend", ["postgresql", "s3"])
def test_mail_with_a_large_attachment_is_stored_and_served_by_the_backend(
    backend: str, make_api: Any, request: pytest.FixtureRequest
) -> None:
    bucket = request.getfixturevalue("s3_server").new_bucket() if backend == "s3" else ""
    api = make_api(storage_toml(request, backend, bucket))
    assert api.app.blobs.kind == backend
    attachment = hashlib.sha256(b"seed").digest() * (3 * CHUNK // 32 + 1000)  # 3 MiB + a bit
    message = build_multipart(
        sender="Alice <alice@customer.test>",
        subject="The log you asked for",
        message_id="<large@customer.test>",
        attachments={"server.log": attachment},
    )
    with smtp_listener(api.app) as (host, port), smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.sendmail("alice@customer.test", ["support@example.com"], message)
    with api.app.db.session() as s:
        row = s.scalars(select(Message).where(Message.message_id == "<large@customer.test>"))
        msg = row.one()
        [att] = s.scalars(select(Attachment).where(Attachment.message_id == msg.id)).all()
        message_id, attachment_id, raw_sha, att_sha = msg.id, att.id, msg.raw_sha256, att.sha256
    assert att_sha == hashlib.sha256(attachment).hexdigest()
    with api.client("read") as c:
        got = c.get(f"/attachments/{attachment_id}")
        assert got.status_code == 200 and got.content == attachment
        assert int(got.headers["content-length"]) == len(attachment)
        raw = c.get(f"/messages/{message_id}/raw")
        assert raw.status_code == 200 and raw.content == message
    # Stored in the backend, not as files; the spool file gone.
    assert blob_files(api.app) == []
    assert list((api.app.config.blob_dir / "tmp").iterdir()) == []
    if backend == "postgresql":
        store: Any = api.app.blobs
        # 1 MiB rows: the attachment is 4 of them, never one 3 MiB value.
        assert store.chunk_count(att_sha) == 4
        assert store.chunk_count(raw_sha) == -(-len(message) // CHUNK)
        with api.app.db.engine.connect() as conn:
            longest = conn.execute(text("SELECT max(length(data)) FROM blob_chunks")).scalar()
        assert longest == CHUNK
    else:
        s3 = request.getfixturevalue("s3_server").client()
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
        assert {
            f"mail/{att_sha[:2]}/{att_sha[2:4]}/{att_sha}",
            f"mail/{raw_sha[:2]}/{raw_sha[2:4]}/{raw_sha}",
        } <= keys


def _seed(app: App, n: int) -> list[str]:
    """``n`` messages with an attachment each; the shas of every blob rows refer to."""
    shas: set[str] = set()
    for i in range(n):
        raw = build_multipart(
            sender=f"Customer {i} <c{i}@customer.test>",
            subject=f"Case {i}",
            message_id=f"<m{i}@customer.test>",
            attachments={f"a{i}.bin": bytes([i]) * (CHUNK + 1000 * i)},
        )
        result = app.pipeline.ingest(raw, Envelope(channel="pipe"))
        assert result.outcome is Outcome.NEW_CASE
    with app.db.session() as s:
        shas.update(s.scalars(select(Message.raw_sha256)))
        shas.update(s.scalars(select(Attachment.sha256)))
    return sorted(shas)


def _migrate(run_cli: Any, config: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    done = run_cli("--config", str(config), "blobs", *args, "--json", timeout=120)
    out = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, out, done.stderr.decode()


def test_migrate_file_to_s3_to_postgresql_resumes_and_checks_every_blob(
    make_app: Any, run_cli: Any, s3_server: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    bucket = s3_server.new_bucket()
    configs = {}
    for backend in ("file", "s3", "postgresql"):
        configs[backend] = tmp_path / f"{backend}.toml"
        configs[backend].write_text(storage_toml(request, backend) + s3_server.toml(bucket))
    app = make_app(configs["file"].read_text())
    shas = _seed(app, 4)
    assert len(shas) == 8
    # An earlier run that stopped midway: two blobs copied, one of them damaged since.
    from emaild.store.blobs.s3 import S3BlobStore

    s3_store = S3BlobStore(app.config.storage.s3, tmp_path / "tmp")
    s3_store.put(app.blobs.read(shas[0]))
    s3_store.put(app.blobs.read(shas[1]))
    s3 = s3_server.client()
    s3.put_object(Bucket=bucket, Key=s3_store.key(shas[1]), Body=b"half a blob")

    rc, out, err = _migrate(run_cli, configs["file"], "migrate", "--to", "s3")
    assert rc == 0, err
    assert (out["from"], out["to"], out["referenced"], out["copied"]) == ("file", "s3", 8, 7)
    assert out["already_there"] == 1 and out["replaced_corrupt"] == [shas[1]]
    total = sum(app.blobs.size(s) or 0 for s in shas)
    assert out["bytes_copied"] == total - (app.blobs.size(shas[0]) or 0)
    for sha in shas:
        assert hashlib.sha256(s3_store.read(sha)).hexdigest() == sha
    rc, out, _ = _migrate(run_cli, configs["file"], "migrate", "--to", "s3")  # resumed: done
    assert (rc, out["copied"], out["already_there"]) == (0, 0, 8)

    # Now s3 is the configured store: on to PostgreSQL.
    rc, out, err = _migrate(run_cli, configs["s3"], "migrate", "--to", "postgresql")
    assert rc == 0, err
    assert (out["from"], out["to"], out["copied"], out["bytes_copied"]) == (
        "s3",
        "postgresql",
        8,
        total,
    )
    rc, out, _ = _migrate(run_cli, configs["postgresql"], "verify")
    assert (rc, out["store"], out["intact"], out["bytes"]) == (0, "postgresql", 8, total)

    # A damaged chunk in the target: verify says which; migrate replaces it from the source.
    with app.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE blob_chunks SET data = :d WHERE sha256 = :s AND seq = 0"),
            {"d": b"damaged", "s": shas[2]},
        )
    rc, out, err = _migrate(run_cli, configs["postgresql"], "verify")
    assert (rc, out["corrupt"], out["intact"]) == (1, [shas[2]], 7)
    rc, out, _ = _migrate(run_cli, configs["s3"], "migrate", "--to", "postgresql")
    assert (rc, out["replaced_corrupt"], out["copied"], out["already_there"]) == (
        0,
        [shas[2]],
        1,
        7,
    )

    # A damaged source blob is never copied as good: exit 1, named.
    from emaild.store.blobs.postgresql import PostgresBlobStore

    PostgresBlobStore(app.db, tmp_path / "tmp").remove(shas[3], unless_used_since=float("inf"))
    s3.put_object(Bucket=bucket, Key=s3_store.key(shas[3]), Body=b"rotten")
    rc, out, err = _migrate(run_cli, configs["s3"], "migrate", "--to", "postgresql")
    assert (rc, out["ok"], out["corrupt_in_source"]) == (1, False, [shas[3]])
    rc, out, _ = _migrate(run_cli, configs["postgresql"], "verify")
    assert (rc, out["missing"]) == (1, [shas[3]])
    s3_store.close()


def test_postgresql_blobs_are_refused_on_sqlite(run_cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "pg-on-sqlite.toml"
    config.write_text('[storage]\nblobs = "postgresql"\n')
    done = run_cli("--config", str(config), "blobs", "verify", env={"EMAILD_DATABASE_URL": ""})
    assert done.returncode == 78
    assert b"needs a PostgreSQL database_url" in done.stderr
