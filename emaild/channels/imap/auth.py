"""IMAP credentials: a password (LOGIN or AUTHENTICATE PLAIN) or an OAuth2 token (XOAUTH2).

Secrets are read when a connection logs in, never at import or config time,
so a rotated password file or a refreshed token file is picked up on the next
connection, and no secret sits in the config object or in a log line.

OAuth2 access tokens come from ``oauth_token_command`` (run without a shell)
or ``oauth_token_file``. Either yields a bare token or JSON with
``access_token`` and ``expires_in`` (seconds) or ``expires_at`` (epoch seconds
or ISO 8601). A token whose expiry is known is reused until
``oauth_refresh_margin_seconds`` before it, then fetched again; a source that
only offers an expired token, or one about to expire, is an error in the log
and in ``emaild status`` -- Gmail and Microsoft 365 would otherwise fail
silently an hour after start.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from emaild.clock import utcnow
from emaild.config import MailboxConfig
from emaild.errors import ConfigError

log = structlog.get_logger("emaild.imap")

PASSWORD_ENV = "EMAILD_IMAP_PASSWORD"
TOKEN_COMMAND_TIMEOUT = 30.0


class MailboxProblem(ConfigError):
    """Something about a mailbox the operator must fix: refused login, bad token
    source, missing folder, no STARTTLS. Exit status 78 from the command line."""

    def __init__(self, mailbox: str, problem: str) -> None:
        super().__init__(problem, key=f"mailbox {mailbox}")
        self.mailbox = mailbox


@dataclass(frozen=True)
class AccessToken:
    """An OAuth2 access token; ``expires_at`` is None when the source did not say."""

    value: str
    expires_at: datetime | None


class Credentials:
    """Logs a client in as the mailbox's user, fetching secrets as late as possible."""

    def __init__(
        self,
        box: MailboxConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.box = box
        self.clock = clock
        self._token: AccessToken | None = None

    # --- what the poller asks -------------------------------------------------
    def login(self, client: IMAPClient) -> None:
        """Authenticate ``client``; raises ``MailboxProblem`` when refused."""
        box = self.box
        try:
            if box.auth == "xoauth2":
                token = self.token()
                client.oauth2_login(box.user, token.value)
            elif box.auth == "plain":
                client.plain_login(box.user, self.password())
            else:
                client.login(box.user, self.password())
        except LoginError as exc:
            self._token = None  # a refused token is never offered again
            what = "XOAUTH2 token" if box.auth == "xoauth2" else "password"
            raise MailboxProblem(
                box.name, f"the server refused the {what} for user {box.user}: {_reason(exc)}"
            ) from None
        except IMAPClientError as exc:
            raise MailboxProblem(
                box.name, f"{box.auth} authentication failed for {box.user}: {_reason(exc)}"
            ) from None

    def session_deadline(self) -> datetime | None:
        """When a logged-in session should reconnect to present a fresh token (None: never)."""
        token = self._token
        if self.box.auth != "xoauth2" or token is None or token.expires_at is None:
            return None
        return token.expires_at - timedelta(seconds=self.box.oauth_refresh_margin_seconds)

    # --- passwords --------------------------------------------------------------
    def password(self) -> str:
        """The password from the password file (read at each login) or the config."""
        box = self.box
        if box.password_file:
            try:
                text = Path(box.password_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise MailboxProblem(
                    box.name, f"cannot read password_file {box.password_file}: {exc.strerror}"
                ) from None
            secret = text.rstrip("\r\n")
        else:
            secret = box.password
        if not secret:
            raise MailboxProblem(
                box.name, f"no password: set password_file (for a URL: {PASSWORD_ENV})"
            )
        return secret

    # --- OAuth2 tokens ------------------------------------------------------------
    def token(self) -> AccessToken:
        """A token valid beyond the refresh margin, fetched again when needed."""
        now = self.clock()
        margin = timedelta(seconds=self.box.oauth_refresh_margin_seconds)
        cached = self._token
        if (
            cached is not None
            and cached.expires_at is not None
            and cached.expires_at - margin > now
        ):
            return cached
        token = self._fetch_token(now)
        if token.expires_at is not None:
            left = (token.expires_at - now).total_seconds()
            if left <= 0:
                self._token = None
                raise MailboxProblem(
                    self.box.name,
                    f"the OAuth2 token from {self._source()} expired at "
                    f"{token.expires_at.isoformat()}; the source must provide a fresh one",
                )
            if token.expires_at - margin <= now:
                # Usable now, but the source is not refreshing it: say so loudly.
                log.error(
                    "imap.oauth.token_expiring",
                    mailbox=self.box.name,
                    source=self._source(),
                    expires_in_seconds=round(left),
                )
        self._token = token
        return token

    def _source(self) -> str:
        box = self.box
        return (
            f"oauth_token_command ({shlex.split(box.oauth_token_command)[0]})"
            if box.oauth_token_command
            else f"oauth_token_file {box.oauth_token_file}"
        )

    def _fetch_token(self, now: datetime) -> AccessToken:
        box = self.box
        if box.oauth_token_command:
            text = self._run_token_command()
        else:
            try:
                text = Path(box.oauth_token_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise MailboxProblem(
                    box.name, f"cannot read oauth_token_file {box.oauth_token_file}: {exc.strerror}"
                ) from None
        try:
            return parse_token(text, now)
        except ValueError as exc:
            raise MailboxProblem(box.name, f"{self._source()}: {exc}") from None

    def _run_token_command(self) -> str:
        box = self.box
        argv = shlex.split(box.oauth_token_command)
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=TOKEN_COMMAND_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MailboxProblem(
                box.name, f"oauth_token_command {argv[0]} could not run: {exc}"
            ) from None
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise MailboxProblem(
                box.name,
                f"oauth_token_command {argv[0]} exited with status {done.returncode}"
                + (f": {err[-1][:200]}" if err else ""),
            )
        return done.stdout.decode("utf-8", "replace")


def parse_token(text: str, now: datetime) -> AccessToken:
    """A token from a bare string or JSON (``access_token``, ``expires_in``/``expires_at``)."""
    text = text.strip()
    if not text:
        raise ValueError("no token (empty output)")
    if not text.startswith("{"):
        value = text.splitlines()[0].strip()
        if any(c.isspace() for c in value):
            raise ValueError("the token contains whitespace")
        return AccessToken(value, None)
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    token: Any = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise ValueError('JSON without a string "access_token"')
    expires_at: datetime | None = None
    if "expires_at" in data:
        expires_at = _instant(data["expires_at"])
    elif "expires_in" in data:
        seconds = data["expires_in"]
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise ValueError('"expires_in" must be a number of seconds')
        expires_at = now + timedelta(seconds=float(seconds))
    return AccessToken(token.strip(), expires_at)


def _instant(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f'"expires_at" is not a time: {value!r}') from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError('"expires_at" must be epoch seconds or an ISO 8601 time')


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    # imaplib wraps the server's answer in bytes reprs; keep the words only.
    for prefix in ("b'", 'b"'):
        text = text.replace(prefix, "")
    return text.strip("'\"") or type(exc).__name__
