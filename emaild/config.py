"""Configuration: one TOML file, validated by pydantic, overridable by environment.

Precedence for each setting: environment variable > config file > default.
With no config file at all emaild runs on the embedded default: SQLite in the
state directory and one routing address, ``support@example.com``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from emaild.config_model import (
    PRIORITIES,
    AlertsConfig,
    AutoResponseConfig,
    Config,
    DaemonConfig,
    ForwardingTestConfig,
    LimitsConfig,
    LoggingConfig,
    MailboxConfig,
    MetricsConfig,
    PostfixConfig,
    Priority,
    RelayConfig,
    RetentionConfig,
    RoutingAddress,
    S3Config,
    SmtpConfig,
    SpamConfig,
    StorageConfig,
    ThreadingConfig,
    TrustConfig,
    VerificationConfig,
    WebConfig,
    WebformConfig,
    WebhookConfig,
    WebhooksConfig,
    is_loopback,
)
from emaild.config_storage import check_storage
from emaild.errors import ConfigError
from emaild.paths import resolve_state_dir
from emaild.tomlsource import TomlSource

# The configuration model is part of this module's interface: import it from here.
__all__ = [
    "DEFAULTS_DIR",
    "PRIORITIES",
    "PROJECT_ROOT",
    "AlertsConfig",
    "AutoResponseConfig",
    "Config",
    "DaemonConfig",
    "ForwardingTestConfig",
    "LimitsConfig",
    "LoggingConfig",
    "MailboxConfig",
    "MetricsConfig",
    "PostfixConfig",
    "Priority",
    "RelayConfig",
    "RetentionConfig",
    "RoutingAddress",
    "S3Config",
    "SmtpConfig",
    "SpamConfig",
    "StorageConfig",
    "ThreadingConfig",
    "TrustConfig",
    "VerificationConfig",
    "WebConfig",
    "WebformConfig",
    "WebhookConfig",
    "WebhooksConfig",
    "config_path_from",
    "is_loopback",
    "load_config",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The shipped rules and templates are package data (the repository's only copy),
# so an installed wheel runs without any directory configured.
DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
DEFAULT_ADDRESS = {"address": "support@example.com", "name": "Example Support"}


def config_path_from(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """``--config``, else ``EMAILD_CONFIG``; no file means the embedded default."""
    chosen = explicit or env.get("EMAILD_CONFIG")
    return Path(chosen) if chosen else None


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load, validate and resolve the configuration.

    Raises ``ConfigError`` naming file, line, key and problem for the first mistake.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source: TomlSource | None = None
    if path is not None:
        source = TomlSource.load(path)
        data = dict(source.data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, source, str(path) if path else "<defaults>") from None
    return _resolve(config, path, env)


def _first_error(exc: ValidationError, source: TomlSource | None, name: str) -> ConfigError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        problem = "unknown key"
    elif kind == "missing":
        problem = "required key is missing"
    elif kind.endswith("_type") or kind in {"int_from_float", "model_type"}:
        problem = f"wrong type: {err['msg'].lower()}, got {type(err['input']).__name__}"
    else:
        problem = err["msg"].removeprefix("Value error, ")
    if source is not None:
        return source.error(loc, problem)
    return ConfigError(problem, file=name, key=".".join(map(str, loc)))


def _resolve(config: Config, path: Path | None, env: Mapping[str, str]) -> Config:
    base = path.resolve().parent if path else Path.cwd()

    def rel(value: str) -> str:
        return str((base / value).resolve()) if value and not Path(value).is_absolute() else value

    storage = config.storage
    state_dir = resolve_state_dir(storage.state_dir, base, env)
    database_url = env.get("EMAILD_DATABASE_URL") or storage.database_url
    storage = storage.model_copy(
        update={
            "state_dir": state_dir,
            "database_url": database_url,
            "blob_dir": rel(storage.blob_dir),
            "s3": storage.s3.model_copy(
                update={"credentials_file": rel(storage.s3.credentials_file)}
            ),
        }
    )
    check_storage(
        storage,
        database_url or "sqlite",
        file=str(path) if path else None,
    )
    rules_dir = env.get("EMAILD_RULES_DIR") or rel(config.rules_dir)
    rules_dir = rules_dir or str(DEFAULTS_DIR / "rules")
    templates_dir = env.get("EMAILD_TEMPLATES_DIR") or rel(config.templates_dir)
    templates_dir = templates_dir or str(DEFAULTS_DIR / "templates")
    addresses = list(config.address) or [RoutingAddress.model_validate(DEFAULT_ADDRESS)]
    seen: dict[str, str] = {}
    for routing in addresses:
        for addr in routing.all_addresses():
            if addr in seen:
                raise ConfigError(
                    f"{addr} is listed twice (also under {seen[addr]})",
                    file=str(path) if path else None,
                    key="address",
                )
            seen[addr] = routing.address
    # Every file a section names is relative to the config file, like the directories.
    smtp = config.smtp.model_copy(
        update={k: rel(getattr(config.smtp, k)) for k in ("tls_cert", "tls_key", "auth_file")}
    )
    if env.get("EMAILD_SMTP_LISTEN"):
        smtp = smtp.model_copy(update={"listen": [env["EMAILD_SMTP_LISTEN"]]})
    if env.get("EMAILD_LMTP_LISTEN"):
        smtp = smtp.model_copy(update={"lmtp_listen": [env["EMAILD_LMTP_LISTEN"]]})
    http = config.http.model_copy(
        update={k: rel(getattr(config.http, k)) for k in ("tls_cert", "tls_key")}
    )
    if env.get("EMAILD_HTTP_LISTEN") is not None:
        http = http.model_copy(update={"listen": env["EMAILD_HTTP_LISTEN"].strip()})
    if bool(http.tls_cert) != bool(http.tls_key):
        raise ConfigError("set both tls_cert and tls_key, or neither", key="http")
    relay = config.relay.model_copy(
        update={k: rel(getattr(config.relay, k)) for k in ("password_file", "ca_file")}
    )
    threading = config.threading.model_copy(
        update={"secret_file": rel(config.threading.secret_file)}
    )
    postfix = config.postfix.model_copy(update={"maps_dir": rel(config.postfix.maps_dir)})
    if env.get("EMAILD_SMTP_RELAY"):
        host, _, port = env["EMAILD_SMTP_RELAY"].rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("expected HOST:PORT", key="EMAILD_SMTP_RELAY")
        relay = relay.model_copy(update={"host": host.strip("[]"), "port": int(port)})
    mailboxes = _resolve_mailboxes(config.mailbox, rel, path)
    forms: set[str] = set()
    for index, form in enumerate(config.webform):
        if form.name in forms:
            raise ConfigError(
                f"webform name {form.name!r} is used twice",
                file=str(path) if path else None,
                key=f"webform.{index}.name",
            )
        forms.add(form.name)
        if form.confirm_email and not config.web.public_url:
            raise ConfigError(
                "confirm_email needs [web] public_url: the confirmation link is never "
                "built from a request's Host header",
                file=str(path) if path else None,
                key=f"webform.{index}.confirm_email",
            )
    webhooks = _resolve_webhooks(config.webhook, rel, path)
    return config.model_copy(
        update={
            "storage": storage,
            "mailbox": mailboxes,
            "webhook": webhooks,
            "rules_dir": rules_dir,
            "templates_dir": templates_dir,
            "address": addresses,
            "smtp": smtp,
            "http": http,
            "relay": relay,
            "threading": threading,
            "postfix": postfix,
            "source": str(path) if path else "",
            "default_address_only": not config.address,
            "relay_configured": bool(
                env.get("EMAILD_SMTP_RELAY") or {"host", "port"} & config.relay.model_fields_set
            ),
        }
    )


def _resolve_mailboxes(
    mailboxes: list[MailboxConfig], rel: Any, path: Path | None
) -> list[MailboxConfig]:
    """Mailbox file paths relative to the config file; names must be unique."""
    names: set[str] = set()
    out = []
    for index, box in enumerate(mailboxes):
        if box.name in names:
            raise ConfigError(
                f"mailbox name {box.name!r} is used twice",
                file=str(path) if path else None,
                key=f"mailbox.{index}.name",
            )
        names.add(box.name)
        paths = ("password_file", "oauth_token_file", "ca_file")
        out.append(box.model_copy(update={k: rel(getattr(box, k)) for k in paths}))
    return out


def _resolve_webhooks(
    hooks: list[WebhookConfig], rel: Any, path: Path | None
) -> list[WebhookConfig]:
    """``secret_file`` relative to the config file; names (default: from the URL) unique."""
    from emaild.config_webhooks import default_name

    names: set[str] = set()
    out = []
    for index, hook in enumerate(hooks):
        name = hook.name or default_name(hook.url)
        if name in names:
            raise ConfigError(
                f"webhook name {name!r} is used twice (set name = ...)",
                file=str(path) if path else None,
                key=f"webhook.{index}.name",
            )
        names.add(name)
        out.append(hook.model_copy(update={"name": name, "secret_file": rel(hook.secret_file)}))
    return out
