"""Webhook subscriptions: ``[[webhook]]`` in the config and ones added at run time.

Both live as ``webhook_subscriptions`` rows, so fan-out (inside every change's
transaction) reads one table. Config ones (source "config") are synced from
the file when the config is loaded (``sync_config``: ``App.open`` and reload);
a name the config declares is the config's, and ``emaild webhook add`` refuses
it ("the config wins", as for routing addresses). A config subscription
removed from the file is disabled, not deleted, so its history stays.

Run-time ones (CLI, API) get a generated secret unless given one, and may
target a private, loopback or link-local address only with
``webhooks.allow_private`` (SSRF: a user of the API must not make emaild POST
to the metadata service or an admin port on the host's network).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from emaild.config import Config, WebhookConfig
from emaild.config_webhooks import check_events, check_name, check_url, default_name
from emaild.errors import ConfigError, InputError
from emaild.store.models import WebhookDelivery, WebhookSubscription
from emaild.webhooks.targets import is_public

CONFIG = "config"
DATABASE = "database"
REMOVED = "removed from the config file"


def new_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(value: str) -> str:
    """``value`` if it is a usable Standard Webhooks secret, else ``ValueError``."""
    value = value.strip()
    raw = value.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "==", validate=False)
    except ValueError:
        raise ValueError("not a whsec_ secret (base64 after the prefix)") from None
    if len(key) < 16:
        raise ValueError("secret too short: at least 16 bytes (whsec_ + base64)")
    return value


def read_secret(path: str, key: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None
    try:
        return check_secret(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}", key=key) from None


def sync_config(
    session: Session, config: Config, now: datetime, *, apply: bool = True
) -> list[str]:
    """Make the ``config`` rows match ``[[webhook]]``; returns what changed (for logs).

    ``apply=False`` only says what would change (the caller discards the session):
    every process start checks that in a read-only transaction first.
    """
    wanted: dict[str, tuple[WebhookConfig, str]] = {
        hook.name: (hook, read_secret(hook.secret_file, f"webhook.{i}.secret_file"))
        for i, hook in enumerate(config.webhook)
    }
    rows = {
        row.name: row
        for row in session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id))
    }
    changed = []
    for name, (hook, secret) in wanted.items():
        values: dict[str, Any] = {
            "url": hook.url,
            "events": list(hook.events),
            "addresses": list(hook.addresses),
            "secret": secret,
            "source": CONFIG,
        }
        row = rows.get(name)
        if row is None:
            if not apply:
                changed.append(f"added {name}")
                continue
            session.add(
                WebhookSubscription(
                    name=name,
                    enabled=hook.enabled,
                    created_at=now,
                    updated_at=now,
                    disabled_reason="" if hook.enabled else "disabled in the config file",
                    **values,
                )
            )
            changed.append(f"added {name}")
            continue
        differs = {k: v for k, v in values.items() if getattr(row, k) != v}
        if not hook.enabled and row.enabled:
            row.enabled, row.disabled_reason = False, "disabled in the config file"
            differs["enabled"] = False
        elif (
            hook.enabled
            and not row.enabled
            and row.disabled_reason
            in (
                REMOVED,
                "disabled in the config file",
            )
        ):
            row.enabled, row.disabled_reason = True, ""
            differs["enabled"] = True
        if differs:
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = now
            changed.append(f"updated {name}")
    for name, row in rows.items():
        if row.source == CONFIG and name not in wanted and row.enabled:
            row.enabled, row.disabled_reason, row.updated_at = False, REMOVED, now
            changed.append(f"disabled {name} ({REMOVED})")
    if apply:
        session.flush()
    return changed


# --- run-time subscriptions (CLI, API) -------------------------------------------------
@dataclass(frozen=True)
class NewSubscription:
    name: str
    url: str
    events: list[str]
    addresses: list[str]
    secret: str


def private_reason(host: str, port: int) -> str:
    """Why ``host`` is not a public address ("" if every address it resolves to is)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"cannot resolve {host}: {exc}"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not is_public(address):
            return f"{host} resolves to {address}, a private or reserved address"
    return ""


def target_problem(url: str, allow_private: bool) -> str:
    """Why a run-time subscription may not POST to ``url`` ("" if it may)."""
    if allow_private:
        return ""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the URL's port is not a port number"
    reason = private_reason(parts.hostname or "", port)
    return f"{reason} (allowed only with webhooks.allow_private = true)" if reason else ""


def validate_new(
    *,
    url: str,
    events: list[str],
    addresses: list[str],
    name: str = "",
    secret: str = "",
    allow_private: bool,
) -> NewSubscription:
    """A run-time subscription from user input, or ``InputError`` naming the problem."""
    try:
        url = check_url(url)
        events = check_events(events)
        name = check_name(name) if name else default_name(url)
        secret = check_secret(secret) if secret else new_secret()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    problem = target_problem(url, allow_private)
    if problem:
        raise InputError(f"url: {problem}")
    return NewSubscription(
        name, url, events, [a.strip().lower() for a in addresses if a.strip()], secret
    )


def add(session: Session, config: Config, new: NewSubscription, now: datetime) -> int:
    """Store a run-time subscription; ``InputError`` if the name is taken."""
    if any(h.name == new.name for h in config.webhook):
        where = config.source or "the config file"
        raise InputError(f"{new.name} is declared in {where}; the config wins, edit it there")
    if session.scalar(select(WebhookSubscription.id).where(WebhookSubscription.name == new.name)):
        raise InputError(f"a webhook named {new.name} exists (see 'emaild webhook list')")
    row = WebhookSubscription(
        name=new.name,
        url=new.url,
        events=new.events,
        addresses=new.addresses,
        secret=new.secret,
        source=DATABASE,
        enabled=True,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def get(session: Session, name: str) -> WebhookSubscription:
    row = session.scalar(select(WebhookSubscription).where(WebhookSubscription.name == name))
    if row is None:
        raise InputError(f"no webhook named {name} (see 'emaild webhook list')")
    return row


def remove(session: Session, name: str) -> None:
    """Delete a run-time subscription and its deliveries (config ones: edit the file)."""
    row = get(session, name)
    if row.source == CONFIG:
        raise InputError(f"{name} is declared in the config file; remove it there")
    session.delete(row)
    session.flush()


def set_enabled(session: Session, name: str, enabled: bool, now: datetime) -> None:
    """Enable (after a 410, or by hand) or disable a subscription."""
    row = get(session, name)
    row.enabled, row.updated_at = enabled, now
    row.disabled_reason = "" if enabled else "disabled by an operator"
    if enabled:
        row.failing_since, row.failing_alerted = None, False


def subscription_json(session: Session, row: WebhookSubscription) -> dict[str, Any]:
    """A subscription for ``emaild webhook list --json`` and the API (never the secret)."""
    counts = dict(
        session.execute(
            select(WebhookDelivery.status, func.count(WebhookDelivery.id))
            .where(WebhookDelivery.subscription_id == row.id)
            .group_by(WebhookDelivery.status)
        ).all()
    )
    return {
        "name": row.name,
        "url": row.url,
        "events": list(row.events or []),
        "addresses": list(row.addresses or []),
        "source": row.source,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "created_at": row.created_at.isoformat(),
        "failing_since": row.failing_since.isoformat() if row.failing_since else None,
        "last_success_at": row.last_success_at.isoformat() if row.last_success_at else None,
        "last_failure_at": row.last_failure_at.isoformat() if row.last_failure_at else None,
        "last_error": row.last_error,
        "pending": int(counts.get("pending", 0)),
        "delivered": int(counts.get("delivered", 0)),
        "failed": int(counts.get("failed", 0)),
    }


def list_all(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.name))
    return [subscription_json(session, row) for row in rows]


def disable_gone(session: Session, subscription_id: int, now: datetime, why: str) -> None:
    """The receiver answered 410 Gone: stop sending (pending deliveries wait)."""
    session.execute(
        update(WebhookSubscription)
        .where(WebhookSubscription.id == subscription_id)
        .values(enabled=False, disabled_reason=why, updated_at=now)
    )


def webhook_status(session: Session, now: datetime, failing_after: float) -> list[dict[str, Any]]:
    """Subscriptions for ``emaild status``: ``problem`` is set for one that needs an admin
    (failing for ``failing_after`` seconds, or disabled by its receiver's 410)."""
    out = []
    for sub in list_all(session):
        problem = ""
        since = sub["failing_since"]
        if not sub["enabled"] and sub["disabled_reason"].startswith("410"):
            problem = f"disabled: {sub['disabled_reason']} ('emaild webhook enable {sub['name']}')"
        elif sub["enabled"] and since:
            failing = (now - datetime.fromisoformat(since)).total_seconds()
            if failing >= failing_after:
                problem = (
                    f"failing since {since[:19]}: {sub['last_error'][:200]}"
                    f" ({sub['pending']} pending)"
                )
        out.append({**sub, "problem": problem})
    return out
