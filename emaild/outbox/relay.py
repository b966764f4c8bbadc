"""One SMTP session with the configured relay (smtplib), with failures sorted.

The outbox needs to know, for every failure, whether to try again later and
whose fault it is:

- ``RelayUnavailable``: the relay itself cannot be used right now (refused
  connection, timeout, dropped session, TLS or AUTH problem). Nothing is
  known about the message; it stays queued and this delivery run stops.
- ``DeliveryFailed``: the relay answered about this message. ``permanent``
  (5xx) means do not retry; ``recipient_fault`` means the answer was about
  the recipient (RCPT 5xx, or a 5xx at DATA that is not a policy refusal),
  so the recipient is marked undeliverable.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from emaild.config import RelayConfig
from emaild.errors import ConfigError


class RelayUnavailable(Exception):
    """The relay could not take mail at all (try again later)."""


class DeliveryFailed(Exception):
    """The relay refused this message."""

    def __init__(self, code: int, detail: str, *, stage: str) -> None:
        self.code = code
        self.detail = detail
        self.stage = stage
        super().__init__(f"{stage}: {code} {detail}")

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def recipient_fault(self) -> bool:
        """A 5xx about the recipient (not our sender or our content's policy)."""
        if not self.permanent or self.stage == "mail":
            return False
        # RFC 3463 class X.7.Y is security or policy: the message, not the mailbox.
        return not (self.stage == "data" and self.detail.lstrip().startswith("5.7."))


def relay_password(relay: RelayConfig) -> str:
    """The AUTH password from ``relay.password_file`` ("" when unset)."""
    if not relay.password_file:
        return ""
    try:
        return Path(relay.password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", key="relay.password_file") from None


def _tls_context(relay: RelayConfig, *, verify: bool) -> ssl.SSLContext:
    if not verify:
        # Opportunistic STARTTLS: encrypt against passive eavesdropping, as MTAs do.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=relay.ca_file or None)


class RelaySession:
    """A connected, greeted (and if configured, encrypted and authenticated) session."""

    def __init__(self, relay: RelayConfig, *, local_hostname: str | None = None) -> None:
        self.relay = relay
        self.local_hostname = local_hostname
        self.smtp: smtplib.SMTP | None = None

    def __enter__(self) -> RelaySession:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Connect, EHLO, STARTTLS and AUTH per config; ``RelayUnavailable`` on any failure."""
        r = self.relay
        where = f"{r.host}:{r.port}"
        try:
            if r.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    r.host,
                    r.port,
                    local_hostname=self.local_hostname,
                    timeout=r.timeout_seconds,
                    context=_tls_context(r, verify=True),
                )
            else:
                smtp = smtplib.SMTP(
                    r.host, r.port, local_hostname=self.local_hostname, timeout=r.timeout_seconds
                )
            self.smtp = smtp
            smtp.ehlo_or_helo_if_needed()
            if not r.implicit_tls and r.starttls != "off":
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=_tls_context(r, verify=r.starttls == "required"))
                    smtp.ehlo()
                elif r.starttls == "required":
                    raise RelayUnavailable(f"relay {where} does not offer STARTTLS (required)")
            if r.username:
                smtp.login(r.username, relay_password(r))
        except RelayUnavailable:
            self.close()
            raise
        except ConfigError as exc:  # unreadable password file: visible on every item's error
            self.close()
            raise RelayUnavailable(f"relay {where}: {exc}") from None
        except smtplib.SMTPAuthenticationError as exc:
            self.close()
            raise RelayUnavailable(f"relay {where} refused AUTH: {_reply(exc)}") from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            self.close()
            raise RelayUnavailable(f"relay {where}: {_describe(exc)}") from None

    def send(self, mail_from: str, rcpt_to: str, raw: bytes) -> str:
        """Send one message; returns the relay's reply. Raises per the module docstring."""
        if self.smtp is None:
            self.open()
        assert self.smtp is not None
        smtp = self.smtp
        options: list[str] = []
        if not (mail_from.isascii() and rcpt_to.isascii()):
            # A non-ASCII address (RFC 6531): only through a relay that offers it.
            if not smtp.has_extn("smtputf8"):
                raise DeliveryFailed(
                    553,
                    f"the relay does not offer SMTPUTF8, needed for {rcpt_to or mail_from}",
                    stage="mail",
                )
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        try:
            # One command at a time (not sendmail()) so a refusal names its stage.
            _call("mail", lambda: smtp.mail(mail_from, options))
            _call("rcpt", lambda: smtp.rcpt(rcpt_to))
            code, reply = _call("data", lambda: smtp.data(raw))
        except DeliveryFailed as failed:
            if failed.code == 421:  # the relay is closing the session: not about us
                self.close()
                raise RelayUnavailable(f"relay closing: {failed}") from None
            self._reset()
            raise
        except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
            self._reset()
            raise DeliveryFailed(exc.smtp_code, _text(exc.smtp_error), stage="data") from None
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            where = f"{self.relay.host}:{self.relay.port}"
            raise RelayUnavailable(f"relay {where}: {_describe(exc)}") from None
        return f"{code} {_text(reply)}"

    def _reset(self) -> None:
        """RSET after a refusal so the session can carry the next message."""
        if self.smtp is None:
            return
        try:
            self.smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        if self.smtp is None:
            return
        smtp, self.smtp = self.smtp, None
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


_OK = {"mail": (250,), "rcpt": (250, 251), "data": (250,)}


def _call(stage: str, command: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
    code, reply = command()
    if code not in _OK[stage]:
        raise DeliveryFailed(code, _text(reply), stage=stage)
    return code, reply


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc)
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
