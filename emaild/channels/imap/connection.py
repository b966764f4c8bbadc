"""Reaching an IMAP server: a mailbox from an ``imap://`` URL, connecting and
logging in, and the wording of connection errors for logs and the command line."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from pydantic import ValidationError

from emaild.channels.imap.auth import PASSWORD_ENV, Credentials, MailboxProblem
from emaild.config import MailboxConfig, is_loopback
from emaild.errors import ConfigError, TransientError


class ImapUnavailable(TransientError):
    """The server could not be reached or dropped the connection: retry later."""


# --- configuration from a URL -----------------------------------------------------------
def mailbox_from_url(url: str, env: Mapping[str, str]) -> MailboxConfig:
    """A mailbox from ``imap[s]://USER@HOST[:PORT]/FOLDER[?key=value&...]``.

    The password comes from ``EMAILD_IMAP_PASSWORD`` (never the URL, which
    would show in ``ps``). Query keys are ``[[mailbox]]`` keys, e.g.
    ``tls=starttls``, ``routing_address=...``, ``after_store=delete``.
    ``imap://`` means plain IMAP on a loopback host and STARTTLS elsewhere.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("imap", "imaps"):
        raise ConfigError("use imap://USER@HOST:PORT/FOLDER or imaps://...", key="URL")
    if parts.password is not None:
        raise ConfigError("put the password in EMAILD_IMAP_PASSWORD, not in the URL", key="URL")
    host = parts.hostname or ""
    user = urllib.parse.unquote(parts.username or "")
    if not host or not user:
        raise ConfigError("the URL needs a user and a host: imap://USER@HOST/FOLDER", key="URL")
    try:
        port = parts.port or 0
    except ValueError:
        raise ConfigError("the URL's port is not a number", key="URL") from None
    folder = urllib.parse.unquote(parts.path.lstrip("/")) or "INBOX"
    # Plain IMAP only where nothing crosses a network: the loopback interface.
    loopback_mode = "plain" if is_loopback(host) else "starttls"
    tls = "implicit" if parts.scheme == "imaps" else loopback_mode
    data: dict[str, Any] = {
        "name": _url_name(user, host, port),
        "host": host,
        "port": port,
        "tls": tls,
        "user": user,
        "folders": [folder],
        "password": env.get(PASSWORD_ENV, ""),
    }
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        data[key] = _query_value(value)
    try:
        return MailboxConfig.model_validate(data, strict=False)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "URL"
        raise ConfigError(err["msg"].removeprefix("Value error, "), key=where) from None


def _url_name(user: str, host: str, port: int) -> str:
    # The cursor is kept under this name, so the same URL resumes where it stopped.
    raw = f"url-{user}-{host}-{port}" if port else f"url-{user}-{host}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:64]


def _query_value(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if re.fullmatch(r"\d+", value):
        return int(value)
    if re.fullmatch(r"\d+\.\d*", value):
        return float(value)
    return value


# --- connecting ---------------------------------------------------------------------
def describe(box: MailboxConfig) -> str:
    """``user@host:port (TLS mode)`` for messages; never the password."""
    mode = {"implicit": "implicit TLS", "starttls": "STARTTLS", "plain": "plain"}[box.tls]
    return f"{box.user}@{box.host}:{box.effective_port} ({mode})"


def connect(box: MailboxConfig, credentials: Credentials) -> IMAPClient:
    """A logged-in client. ``ImapUnavailable`` for network and TLS trouble,
    ``MailboxProblem`` for what the operator must fix (login refused, no STARTTLS)."""
    context = ssl.create_default_context(cafile=box.ca_file or None)
    port = box.effective_port
    try:
        client = IMAPClient(
            box.host,
            port=port,
            ssl=box.tls == "implicit",
            ssl_context=context,
            timeout=box.timeout_seconds,
        )
    except (OSError, IMAPClientError) as exc:
        raise ImapUnavailable(
            f"cannot connect to {box.host}:{port}: {failure_reason(exc)}"
        ) from None
    try:
        if box.tls == "starttls":
            if not client.has_capability("STARTTLS"):
                raise MailboxProblem(box.name, f"{box.host}:{port} does not offer STARTTLS")
            client.starttls(context)
        credentials.login(client)
    except MailboxProblem:
        close_quietly(client)
        raise
    except (OSError, IMAPClientError) as exc:
        close_quietly(client)
        raise ImapUnavailable(f"{box.host}:{port}: {failure_reason(exc)}") from None
    return client


def close_quietly(client: IMAPClient | None) -> None:
    """Log out, or drop the connection if that fails; never raises."""
    if client is None:
        return
    try:
        client.logout()
    except Exception:  # the connection is being dropped anyway
        with contextlib.suppress(Exception):
            client.shutdown()


def failure_reason(exc: BaseException) -> str:
    """What went wrong with a connection, in words for a log line or an error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message} (set ca_file?)"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror})"
    text = str(exc).strip() or type(exc).__name__
    return text.replace("b'", "").replace('b"', "")
