"""Config sections of the host around the pipeline: the HTTP listener, the
Postfix maps emaild writes, and the process lifecycle under systemd."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from emaild.config_base import MiB, Section


class HttpConfig(Section):
    """The HTTP API (``emaild.http``) served inside ``emaild run``."""

    # "HOST:PORT"; empty = no HTTP server (unless systemd passes an "http" socket).
    listen: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # Request bodies above this are refused with 413 before they are parsed.
    max_body_bytes: Annotated[int, Field(gt=0)] = 10 * MiB


class PostfixConfig(Section):
    """Postfix maps generated from the address book (``emaild postfix maps``)."""

    maps_dir: str = ""
    transport: str = "lmtp:inet:127.0.0.1:2526"
    map_type: str = "hash"
    postmap: str = "postmap"


class DaemonConfig(Section):
    """Process lifecycle under systemd."""

    shutdown_deadline_seconds: Annotated[float, Field(ge=0)] = 30.0
    # Worker processes of ``emaild run`` (``--workers``): 1 = the daemon itself,
    # more = a supervisor that shares its listeners with that many children
    # (``emaild.supervisor``; PostgreSQL only: SQLite allows one writer process).
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    # Listen on STATE_DIR/ingest.sock for ``emaild ingest`` to hand its message to.
    ingest_socket: bool = True
