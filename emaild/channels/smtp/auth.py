"""STARTTLS and AUTH for the SMTP listener (submission-style use).

The credentials file (``smtp.auth_file``) holds one ``user:hash`` per line;
blank lines and ``#`` comments are ignored. The hash is PBKDF2-HMAC-SHA256 in
the widely used ``pbkdf2_sha256$ITERATIONS$SALT$BASE64`` form, made with
``hash_password`` (see README, Operations). Plain-text passwords are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import ssl
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import AuthResult

from emaild.config import SmtpConfig
from emaild.errors import ConfigError

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: str = "") -> str:
    """A ``pbkdf2_sha256$...`` hash of ``password`` for the credentials file."""
    salt = salt or secrets.token_hex(12)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode(), iterations)
    return f"{SCHEME}${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def verify_password(stored: str, password: bytes) -> bool:
    """True if ``password`` matches the ``stored`` hash (constant-time compare)."""
    scheme, iterations, salt, expected = stored.split("$", 3)
    if scheme != SCHEME:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password, salt.encode(), int(iterations))
    return hmac.compare_digest(base64.b64encode(digest).decode("ascii"), expected)


def load_credentials(path: Path) -> dict[str, str]:
    """Read ``user:hash`` lines; a bad line raises ``ConfigError`` naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read: {exc.strerror}", file=str(path), key="smtp.auth_file"
        ) from None
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not user:
            raise ConfigError("expected user:hash", file=str(path), line=number)
        parts = stored.split("$")
        if len(parts) != 4 or parts[0] != SCHEME or not parts[1].isdigit():
            raise ConfigError(
                f"{user}: expected a {SCHEME}$ITERATIONS$SALT$HASH hash",
                file=str(path),
                line=number,
            )
        if user in users:
            raise ConfigError(f"{user}: listed twice", file=str(path), line=number)
        users[user] = stored
    return users


def tls_context(smtp: SmtpConfig) -> ssl.SSLContext | None:
    """The server context for STARTTLS, or None when no certificate is configured."""
    if not smtp.tls_cert and not smtp.tls_key:
        if smtp.require_tls:
            raise ConfigError("require_tls needs tls_cert and tls_key", key="smtp.require_tls")
        return None
    if not (smtp.tls_cert and smtp.tls_key):
        raise ConfigError("set both tls_cert and tls_key", key="smtp.tls_cert")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(smtp.tls_cert, smtp.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load certificate/key: {exc}", key="smtp.tls_cert") from None
    return context


def security_settings(smtp: SmtpConfig) -> tuple[ssl.SSLContext | None, dict[str, str]]:
    """The STARTTLS context and AUTH credentials ``smtp`` asks for, checked together."""
    tls = tls_context(smtp)
    credentials = load_credentials(Path(smtp.auth_file)) if smtp.auth_file else {}
    if smtp.auth_required and not credentials:
        raise ConfigError("auth_required needs an auth_file", key="smtp.auth_required")
    if credentials and tls is None:
        raise ConfigError("AUTH needs STARTTLS: set tls_cert and tls_key", key="smtp.auth_file")
    return tls, credentials


class AuthMixin:
    """AUTH PLAIN and LOGIN for an aiosmtpd session.

    aiosmtpd's built-in PLAIN/LOGIN verify synchronously on the event loop;
    PBKDF2 is deliberately slow, so the session's ``_check_login`` verifies in
    a worker thread.
    """

    async def _check_login(self, login: bytes, password: bytes) -> Any:
        """The ``AuthResult`` for ``login``/``password`` (the session provides it)."""
        raise NotImplementedError

    async def auth_PLAIN(self, _: Any, args: list[str]) -> Any:
        this: Any = self
        if len(args) == 1:
            blob = await this.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1].encode(), validate=True)
            except binascii.Error:
                await this.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await this.push("501 5.5.2 Cannot split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check_login(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> Any:
        this: Any = self
        if len(args) == 1:
            login = await this.challenge_auth(this.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = base64.b64decode(args[1].encode(), validate=True)
            except binascii.Error:
                await this.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await this.challenge_auth(this.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._check_login(login, password)
