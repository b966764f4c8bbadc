"""The S3 blob store (``storage.blobs = "s3"``): any S3-compatible object store.

Keys are ``<prefix><ab>/<cd>/<sha256>``, the file store's layout. The client
is boto3 (botocore), imported only when this backend is opened, so processes on
the other backends never pay for it. A blob is uploaded from a local file with
one streamed ``PutObject`` (the file is read as it is sent; S3 takes up to
5 GB in one request, far over any message size limit) and exists only once
the store answered 200, so ``put`` returning means it is durable. ``open``
streams ``GetObject``'s body.

Storing content that exists already copies the object onto itself with new
metadata, which moves its ``LastModified``: that is ``used_at`` (rounded up to
the next second, S3's resolution), and ``remove`` keeps a blob stored again
since the deletion began. S3 has no conditional delete every store supports,
so a writer that marks a blob used between ``remove``'s check and its delete
(a window of one request) loses it; the retention grace period makes that
need a blob unused for days and stored again at that very moment.
"""

from __future__ import annotations

import configparser
import time
from pathlib import Path
from typing import Any, BinaryIO

from emaild.config_storage import S3Config
from emaild.errors import ConfigError, TransientError
from emaild.store.blobs.base import CHUNK, BlobBackend, check_sha
from emaild.store.blobs.remote import RemoteBlobStore, streaming

MISSING = {"404", "NoSuchKey", "NotFound"}


def read_credentials(settings: S3Config) -> dict[str, str]:
    """The access key from ``credentials_file`` (``{}``: the SDK's default chain)."""
    if not settings.credentials_file:
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    key = "storage.s3.credentials_file"
    try:
        with open(settings.credentials_file, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigError(
            f"cannot read {settings.credentials_file}: {exc.strerror}", key=key
        ) from None
    except configparser.Error as exc:
        raise ConfigError(f"{settings.credentials_file}: {exc.message}", key=key) from None
    if not parser.has_section(settings.profile):
        raise ConfigError(f"{settings.credentials_file} has no [{settings.profile}]", key=key)
    section = parser[settings.profile]
    out = {}
    for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        if section.get(name, "").strip():
            out[name] = section[name].strip()
    if "aws_access_key_id" not in out or "aws_secret_access_key" not in out:
        raise ConfigError(
            f"{settings.credentials_file} [{settings.profile}] needs aws_access_key_id "
            "and aws_secret_access_key",
            key=key,
        )
    return out


class S3BlobStore(RemoteBlobStore):
    """Blobs as objects in ``[storage.s3] bucket`` under ``prefix``."""

    kind: BlobBackend = "s3"

    def __init__(self, settings: S3Config, temp_dir: Path, connections: int = 10) -> None:
        """``connections``: the client's pool, one per thread that may use it at once."""
        super().__init__(temp_dir)
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = settings.bucket
        self.prefix = settings.prefix
        config = BotoConfig(
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            retries={"max_attempts": settings.max_attempts, "mode": "standard"},
            max_pool_connections=connections,
            s3={"addressing_style": settings.addressing_style},
            # Plain signed requests: S3-compatible stores that predate AWS's
            # default checksums (aws-chunked uploads) accept them all.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            region_name=settings.region or None,
            config=config,
            **read_credentials(settings),
        )
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)

    def key(self, sha256: str) -> str:
        check_sha(sha256)
        return f"{self.prefix}{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def _call(self, method: str, **kwargs: Any) -> Any:
        """One S3 request; None when the object is missing, TransientError when the store fails."""
        try:
            return getattr(self._client, method)(Bucket=self.bucket, **kwargs)
        except self._errors as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in MISSING:
                return None
            raise TransientError(f"blob store (s3) {method} failed: {exc}") from exc

    def _head(self, sha256: str) -> Any:
        return self._call("head_object", Key=self.key(sha256))

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def size(self, sha256: str) -> int | None:
        head = self._head(sha256)
        return None if head is None else int(head["ContentLength"])

    def used_at(self, sha256: str) -> float | None:
        head = self._head(sha256)
        # LastModified has whole seconds: the end of that second, never earlier.
        return None if head is None else float(head["LastModified"].timestamp()) + 1.0

    def _mark_used(self, sha256: str) -> bool:
        key = self.key(sha256)
        copied = self._call(
            "copy_object",
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": key},
            MetadataDirective="REPLACE",
            Metadata={"stored-at": f"{time.time():.3f}"},
        )
        return copied is not None

    def _upload(self, sha256: str, stream: BinaryIO, size: int) -> None:
        self._call(
            "put_object",
            Key=self.key(sha256),
            Body=stream,
            ContentLength=size,
            ContentType="application/octet-stream",
        )

    def open(self, sha256: str) -> BinaryIO:
        got = self._call("get_object", Key=self.key(sha256))
        if got is None:
            raise FileNotFoundError(f"no blob {sha256}")
        body = got["Body"]

        def next_piece() -> bytes:
            try:
                return bytes(body.read(CHUNK))
            except self._errors as exc:
                raise TransientError(f"blob store (s3) read failed: {exc}") from exc

        return streaming(next_piece, body.close)

    def remove(self, sha256: str, *, unless_used_since: float) -> int | None:
        head = self._head(sha256)
        if head is None or head["LastModified"].timestamp() + 1.0 >= unless_used_since:
            return None
        self._call("delete_object", Key=self.key(sha256))
        return int(head["ContentLength"])

    def close(self) -> None:
        self._client.close()
