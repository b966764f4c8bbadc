"""The ``[storage]`` table: where cases, messages and blobs live; ``[storage.s3]``.

Part of the configuration model (``emaild.config_model``); import it from
``emaild.config``. ``emaild.store.blobs.open_blob_store`` builds the blob store
``blobs`` names; ``check_storage`` refuses combinations that cannot work.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from emaild.config_base import Section
from emaild.errors import ConfigError


class S3Config(Section):
    """An S3-compatible object store for blobs (``storage.blobs = "s3"``)."""

    bucket: str = ""
    # Keys are <prefix><ab>/<cd>/<sha256>; "" or ending in "/".
    prefix: str = ""
    # "" = AWS itself; otherwise the store's URL (MinIO, Ceph RGW, Garage, ...).
    endpoint_url: str = ""
    region: str = ""
    # A file holding the access key (AWS credentials-file format:
    # aws_access_key_id / aws_secret_access_key under [profile]); never the main
    # config. "" = the SDK's own chain (environment, instance role).
    credentials_file: str = ""
    profile: str = "default"
    # "path" suits most self-hosted stores; "virtual" is AWS's usual style.
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    read_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    # Attempts per request (the first included) before TransientError: mail waits.
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""


class StorageConfig(Section):
    """Where cases, messages and blobs live."""

    state_dir: str = ""
    database_url: str = ""
    # The file store's directory, and the local temporary files of every backend.
    blob_dir: str = ""
    busy_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    # Where raw mail and attachments go: "file" (blob_dir, one host), "postgresql"
    # (the database, every host), "s3" ([storage.s3], every host).
    blobs: Literal["file", "postgresql", "s3"] = "file"
    s3: S3Config = S3Config()


def check_storage(
    storage: StorageConfig, database_url: str, *, file: str | None, backend: str = ""
) -> None:
    """Refuse a blob backend its settings cannot serve (``ConfigError``).

    ``backend``: the one to check, by default the configured ``storage.blobs``
    (``emaild blobs migrate --to`` checks its target the same way). The
    PostgreSQL backend is refused on SQLite: it exists for several hosts on one
    database, and on one host the file store beside the database does the same
    job without growing the database file by every attachment.
    """
    backend = backend or storage.blobs
    if backend == "postgresql" and not database_url.startswith("postgresql"):
        raise ConfigError(
            'storage.blobs = "postgresql" needs a PostgreSQL database_url '
            '(on SQLite keep the default "file" store)',
            file=file,
            key="storage.blobs",
        )
    if backend == "s3" and not storage.s3.bucket:
        raise ConfigError(
            'storage.blobs = "s3" needs [storage.s3] bucket', file=file, key="storage.s3.bucket"
        )
