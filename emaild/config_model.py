"""What a valid configuration is: ``Config`` and one pydantic model per table.

Loading, environment overrides and path resolution are ``emaild.config``,
which re-exports these models: import them from there
(``from emaild.config import MailboxConfig``).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from emaild.config_base import MiB, Section
from emaild.config_host import DaemonConfig, HttpConfig, PostfixConfig
from emaild.config_ops import AlertsConfig, ForwardingTestConfig, MetricsConfig
from emaild.config_retention import RetentionConfig
from emaild.config_storage import S3Config, StorageConfig
from emaild.config_trust import SpamConfig, TrustConfig
from emaild.config_webform import WebConfig, WebformConfig
from emaild.config_webhooks import WebhookConfig, WebhooksConfig

__all__ = [
    "AlertsConfig",
    "DaemonConfig",
    "ForwardingTestConfig",
    "HttpConfig",
    "MetricsConfig",
    "MiB",
    "PostfixConfig",
    "RetentionConfig",
    "S3Config",
    "Section",
    "SpamConfig",
    "StorageConfig",
    "TrustConfig",
    "WebConfig",
    "WebformConfig",
    "WebhookConfig",
    "WebhooksConfig",
]

Priority = Literal["Low", "Medium", "High", "Urgent"]
PRIORITIES: tuple[str, ...] = ("Low", "Medium", "High", "Urgent")


def _normalise_address(value: str) -> str:
    value = value.strip()
    local, sep, domain = value.rpartition("@")
    if not sep or not local or not domain or " " in value:
        raise ValueError(f"not an email address: {value!r}")
    return f"{local}@{domain.lower()}".lower()


def _normalise_domain(value: str) -> str:
    domain = value.strip().lower().removeprefix("@")
    if not domain or "@" in domain or " " in domain or "." not in domain:
        raise ValueError(f"not a domain: {value!r}")
    return domain


def _normalise_sender(value: str) -> str:
    """An address, or a domain written ``@domain`` (``domain`` alone also works)."""
    if "@" in value.strip().lstrip("@"):
        return _normalise_address(value)
    return "@" + _normalise_domain(value)


class RoutingAddress(Section):
    """A support address emaild accepts mail for, with its case defaults."""

    address: str
    name: str = ""
    aliases: list[str] = []
    origin: str = "Email"
    priority: Priority = "Medium"
    owner: str = ""
    category: str = ""
    tags: list[str] = []
    accept_from: list[str] = []
    reject_action: Literal["reject", "discard", "quarantine"] = "reject"
    save_headers: bool = True
    auto_response: str = "default"
    enabled: bool = True
    disabled_action: Literal["tempfail", "reject"] = "tempfail"
    closed_case: Literal["reopen", "reopen_within", "new_linked"] = "reopen_within"
    reopen_days: Annotated[int, Field(ge=0)] = 30
    # What an unauthenticated sender may do here (emaild.trust.policy).
    auth_policy: Literal["record", "require_for_threading", "require"] = "record"
    # A reply whose sender is not on the case it threads onto (contract 7).
    stranger_reply: Literal["new_linked_case", "append_flagged"] = "new_linked_case"
    # Senders in these domains count as participants of this address's cases.
    trusted_domains: list[str] = []

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _normalise_address(value)

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        return [_normalise_address(v) for v in value]

    @field_validator("accept_from")
    @classmethod
    def _accept_from(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            item = item.strip().lower()
            if not item or " " in item:
                raise ValueError(f"not an address or domain: {item!r}")
            out.append(item)
        return out

    @field_validator("trusted_domains")
    @classmethod
    def _trusted_domains(cls, value: list[str]) -> list[str]:
        return [_normalise_domain(v) for v in value]

    def all_addresses(self) -> tuple[str, ...]:
        return (self.address, *self.aliases)


class LimitsConfig(Section):
    """Sizes and concurrency limits applied to every channel."""

    max_message_bytes: Annotated[int, Field(gt=0)] = 35 * MiB
    max_attachment_bytes: Annotated[int, Field(gt=0)] = 25 * MiB
    spool_part_bytes: Annotated[int, Field(gt=0)] = 256 * 1024
    workers: Annotated[int, Field(ge=1, le=256)] = 8
    pipeline_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Parse cost bounds: a message over one is kept raw in quarantine, unparsed.
    max_header_fields: Annotated[int, Field(ge=10)] = 2000
    max_header_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024
    max_header_recipients: Annotated[int, Field(ge=1)] = 1000
    max_parts: Annotated[int, Field(ge=1)] = 1000
    max_part_depth: Annotated[int, Field(ge=1)] = 20
    # SMTP/LMTP messages in memory: each received message (spooled on disk)
    # reserves its size + 12 MiB while a worker holds it; one that does not fit
    # waits, then gets 451 4.3.2 (channels/smtp/budget.py).
    data_bytes_in_flight: Annotated[int, Field(ge=MiB)] = 128 * MiB
    # The share of the workers one SMTP/LMTP peer address may hold at once.
    peer_worker_share: Annotated[float, Field(gt=0, le=1)] = 0.5


class LoggingConfig(Section):
    """Log level and format (JSON lines when not on a terminal)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class SmtpConfig(Section):
    """The SMTP/LMTP listener."""

    listen: list[str] = ["127.0.0.1:2525"]
    lmtp_listen: list[str] = []
    hostname: str = ""
    max_connections: Annotated[int, Field(ge=1)] = 200
    # Per client address (Postfix's anvil): sessions at once, and new ones per minute.
    max_connections_per_ip: Annotated[int, Field(ge=1)] = 50
    max_connection_rate_per_ip: Annotated[int, Field(ge=1)] = 600
    max_recipients: Annotated[int, Field(ge=1)] = 100
    timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    # Before MAIL FROM (nothing at stake yet), and for everything under stress.
    idle_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    stress_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    max_line_length: Annotated[int, Field(ge=1000)] = 8192
    max_pending: Annotated[int, Field(ge=1)] = 64
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False
    auth_file: str = ""
    auth_required: bool = False
    # Failed logins in 10 minutes before AUTH is refused unchecked: from one
    # client address; for one user, from addresses that failed before.
    auth_failures_per_ip: Annotated[int, Field(ge=1)] = 10
    auth_failures_per_user: Annotated[int, Field(ge=1)] = 5


class MailboxConfig(Section):
    """An IMAP mailbox polled for new mail (``[[mailbox]]``); see emaild/channels/imap/."""

    name: str
    enabled: bool = True
    host: str
    # 0: the TLS mode's standard port (993 for implicit TLS, else 143).
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    tls: Literal["implicit", "starttls", "plain"] = "implicit"
    ca_file: str = ""
    user: str
    auth: Literal["login", "plain", "xoauth2"] = "login"
    password: str = ""
    password_file: str = ""
    oauth_token_command: str = ""
    oauth_token_file: str = ""
    oauth_refresh_margin_seconds: Annotated[float, Field(ge=0)] = 300.0
    folders: list[str] = ["INBOX"]
    routing_address: str = ""
    poll_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    idle: bool = True
    # Servers drop an IDLE after 30 minutes (RFC 2177): re-issue it well before.
    idle_reissue_seconds: Annotated[float, Field(ge=1, le=1740)] = 1500.0
    after_store: Literal["seen", "move", "delete"] = "seen"
    move_to: str = ""
    failed_folder: str = ""
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 100
    batch_bytes: Annotated[int, Field(ge=MiB)] = 64 * MiB
    timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    notify_too_large: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
            raise ValueError("use letters, digits, '.', '_' and '-' (at most 64)")
        return value

    @field_validator("routing_address")
    @classmethod
    def _routing(cls, value: str) -> str:
        return _normalise_address(value) if value.strip() else ""

    @field_validator("folders")
    @classmethod
    def _folders(cls, value: list[str]) -> list[str]:
        if not value or any(not f.strip() for f in value) or len(set(value)) != len(value):
            raise ValueError("list one or more distinct, non-empty folder names")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MailboxConfig:
        if self.tls == "plain" and not is_loopback(self.host):
            raise ValueError(f'tls = "plain" is only allowed for a loopback host, not {self.host}')
        if self.after_store == "move" and not self.move_to:
            raise ValueError('after_store = "move" needs move_to')
        if self.auth == "xoauth2":
            if bool(self.oauth_token_command) == bool(self.oauth_token_file):
                raise ValueError("xoauth2 needs one of oauth_token_command, oauth_token_file")
        elif self.password and self.password_file:
            raise ValueError("set password or password_file, not both")
        return self

    @property
    def effective_port(self) -> int:
        """The configured port, else the standard one for the TLS mode."""
        return self.port or (993 if self.tls == "implicit" else 143)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP addresses (where plain IMAP is acceptable)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ThreadingConfig(Section):
    """How emaild marks outgoing mail so replies find their case."""

    domain: str = ""
    secret: str = ""
    secret_file: str = ""
    subject_token: bool = True
    subject_token_format: str = "[Case #{number:08d}]"
    body_token: bool = False
    body_token_format: str = "ref:{token}:ref"
    # Our own staff: addresses or "@domain"; they thread onto any case as
    # participants ("internal"), never as strangers.
    internal_senders: list[str] = []

    @field_validator("internal_senders")
    @classmethod
    def _internal_senders(cls, value: list[str]) -> list[str]:
        return [_normalise_sender(v) for v in value]

    @field_validator("subject_token_format", "body_token_format")
    @classmethod
    def _token_format(cls, value: str, info: ValidationInfo) -> str:
        return _check_token_format(value, body=info.field_name == "body_token_format")


def _check_token_format(fmt: str, *, body: bool) -> str:
    """A token format must render, and be findable again in replies."""
    from string import Formatter

    try:
        parsed = list(Formatter().parse(fmt))
        names = {name for _, name, _, _ in parsed if name is not None}
        if names - {"number", "token"}:
            raise ValueError(f"unknown field in {fmt!r}: only {{number}} and {{token}}")
        for _, name, spec, conv in parsed:
            # Replies are read back as decimal digits: no hex, no signs, no !r.
            if name == "number" and (conv or not re.fullmatch(r"0?\d*d?", spec or "")):
                raise ValueError("{number} must be a plain decimal, like {number:08d}")
        fmt.format(number=1, token="1.thread.0")
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"bad format {fmt!r}: {exc}") from None
    literal = "".join(text for text, _, _, _ in parsed)
    if body and "token" not in names:
        raise ValueError("the body token must contain {token}: bare numbers in bodies are no proof")
    if not names:
        raise ValueError("the subject token must contain {number} or {token}")
    if "token" not in names and not literal.strip():
        # A bare number would turn any digits in a subject into a case claim.
        raise ValueError("{number} needs text around it, e.g. [Case #{number:08d}]")
    return fmt


class RelayConfig(Section):
    """The SMTP relay outgoing mail (auto-responses, verification) goes through."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    starttls: Literal["off", "opportunistic", "required"] = "opportunistic"
    implicit_tls: bool = False
    username: str = ""
    password_file: str = ""
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    max_attempts: Annotated[int, Field(ge=1)] = 12
    retry_base_seconds: Annotated[float, Field(gt=0)] = 60.0
    retry_max_seconds: Annotated[float, Field(gt=0)] = 3600.0
    flush_interval_seconds: Annotated[float, Field(gt=0)] = 10.0
    ca_file: str = ""


class AutoResponseConfig(Section):
    """Auto-responses to new cases and loop protection."""

    enabled: bool = True
    per_recipient_limit: Annotated[int, Field(ge=0)] = 3
    per_recipient_window_minutes: Annotated[int, Field(ge=1)] = 60
    loop_threshold: Annotated[int, Field(ge=2)] = 5
    loop_window_minutes: Annotated[int, Field(ge=1)] = 15
    require_explicit_recipient: bool = True


class VerificationConfig(Section):
    """Routing-address verification and the forwarding test (``emaild address``)."""

    token_ttl_hours: Annotated[float, Field(gt=0)] = 72.0
    hold_unverified: bool = True


class Config(Section):
    """The whole configuration. ``source`` is the file it came from, if any."""

    storage: StorageConfig = StorageConfig()
    rules_dir: str = ""
    templates_dir: str = ""
    address: list[RoutingAddress] = []
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()
    smtp: SmtpConfig = SmtpConfig()
    mailbox: list[MailboxConfig] = []
    threading: ThreadingConfig = ThreadingConfig()
    relay: RelayConfig = RelayConfig()
    autoresponse: AutoResponseConfig = AutoResponseConfig()
    daemon: DaemonConfig = DaemonConfig()
    http: HttpConfig = HttpConfig()
    postfix: PostfixConfig = PostfixConfig()
    verification: VerificationConfig = VerificationConfig()
    trust: TrustConfig = TrustConfig()
    spam: SpamConfig = SpamConfig()
    web: WebConfig = WebConfig()
    webform: list[WebformConfig] = []
    retention: RetentionConfig = RetentionConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    forwarding_test: list[ForwardingTestConfig] = []
    webhook: list[WebhookConfig] = []
    webhooks: WebhooksConfig = WebhooksConfig()
    source: str = Field(default="", exclude=True)
    # True when no [[address]] was configured and the embedded default stands in;
    # addresses managed with ``emaild address`` then replace it (emaild.addresses).
    default_address_only: bool = Field(default=False, exclude=True)
    # False when neither [relay] host/port nor EMAILD_SMTP_RELAY chose the relay: the
    # default 127.0.0.1:25 is a guess, said once (log, status) rather than per retry.
    relay_configured: bool = Field(default=False, exclude=True)

    # --- resolved paths -------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return Path(self.storage.state_dir)

    @property
    def database_url(self) -> str:
        return self.storage.database_url or f"sqlite:///{self.state_dir / 'emaild.db'}"

    @property
    def blob_dir(self) -> Path:
        return Path(self.storage.blob_dir) if self.storage.blob_dir else self.state_dir / "blobs"

    @property
    def rules_path(self) -> Path | None:
        return Path(self.rules_dir) if self.rules_dir else None

    @property
    def templates_path(self) -> Path | None:
        return Path(self.templates_dir) if self.templates_dir else None

    def routing_address(self, address: str) -> RoutingAddress | None:
        """The routing address that ``address`` (or one of its aliases) belongs to."""
        wanted = address.strip().lower()
        for routing in self.address:
            if wanted in routing.all_addresses():
                return routing
        return None

    @property
    def default_address(self) -> RoutingAddress:
        return self.address[0]
