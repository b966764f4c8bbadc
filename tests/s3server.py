"""A real S3-API server on loopback for the S3 blob store's tests: moto's standalone server.

``S3Server.start()`` runs ``python -m moto.server`` on a free 127.0.0.1 port
as a subprocess and waits until it answers; ``new_bucket()`` makes a fresh
bucket per test; ``toml(bucket)`` is the ``[storage.s3]`` table pointing
emaild at it (with a credentials file, as an admin would write one).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

# moto accepts any key; these are what the credentials file says.
KEY_ID, SECRET = "testing-key-id", "testing-secret"


def available() -> bool:
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.credentials = root / "s3-credentials"
        self.credentials.write_text(
            f"[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with (self.root / "moto.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server did not start: {(self.root / 'moto.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )

    def new_bucket(self) -> str:
        name = f"emaild-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str, prefix: str = "mail/") -> dict[str, Any]:
        return {
            "bucket": bucket,
            "prefix": prefix,
            "endpoint_url": self.url,
            "region": "us-east-1",
            "credentials_file": str(self.credentials),
            "addressing_style": "path",
        }

    def toml(self, bucket: str, prefix: str = "mail/") -> str:
        lines = [f"{k} = {v!r}" for k, v in self.settings(bucket, prefix).items()]
        return "[storage.s3]\n" + "\n".join(lines).replace("'", '"') + "\n"
