"""The ``[[webhook]]`` subscriptions and the ``[webhooks]`` delivery settings.

Part of the configuration model (``emaild.config_model``); import them from
``emaild.config`` like every other table. Delivery lives in ``emaild.webhooks``.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from emaild.config_base import Section

# Every event type a subscription may ask for (README: Webhooks).
EVENT_TYPES: tuple[str, ...] = (
    "case.created",
    "case.updated",
    "message.received",
    "message.sent",
    "message.bounced",
    "note.added",
    "quarantine.added",
    "address.verified",
    "channel.failing",
    "channel.recovered",
)

_URL = re.compile(r"https?://[^/\s?#]+(/\S*)?", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_url(value: str) -> str:
    """An http(s) URL without spaces or credentials, else ``ValueError``."""
    value = value.strip()
    if not _URL.fullmatch(value):
        raise ValueError(f"not an http(s) URL: {value!r}")
    if "@" in value.split("/", 3)[2]:
        raise ValueError("credentials in the URL are not allowed (sign with the secret)")
    if len(value) > 2000:
        raise ValueError("URL longer than 2000 characters")
    try:
        urlsplit(value).port  # noqa: B018 (parsing it is the check)
    except ValueError:
        raise ValueError(f"the port in {value!r} is not a port number (1-65535)") from None
    return value


def check_events(value: list[str]) -> list[str]:
    """Known event types, each once; ``[]`` or ``["*"]`` mean every type."""
    if value == ["*"]:
        return []
    unknown = [e for e in value if e not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r} (one of {', '.join(EVENT_TYPES)})")
    return list(dict.fromkeys(value))


def check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"not a name (letters, digits, . _ -; at most 64): {value!r}")
    return value


class WebhookConfig(Section):
    """One ``[[webhook]]`` subscription: where to POST which events."""

    # How the CLI, the API, logs and ``emaild status`` call it; default: derived from url.
    name: str = ""
    url: str
    # Event types to send; empty (or ["*"]) = every type.
    events: list[str] = []
    # A file holding the Standard Webhooks secret ("whsec_" + base64).
    secret_file: str
    # Only events of cases (and mail) of these routing addresses; empty = all.
    addresses: list[str] = []
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return check_events(value)

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [a.strip().lower() for a in value if a.strip()]

    @model_validator(mode="after")
    def _name(self) -> WebhookConfig:
        if self.name:
            check_name(self.name)
        return self


def default_name(url: str) -> str:
    """A subscription name made from its URL's host and path (``[[webhook]]`` without name)."""
    rest = url.split("://", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", rest).strip("-.")
    return name[:64] or "webhook"


class WebhooksConfig(Section):
    """How webhooks are delivered (``[webhooks]``)."""

    # Subscriptions added with the CLI or API may target private, loopback and
    # link-local addresses only with this (SSRF: README, Webhooks).
    allow_private: bool = False
    # One attempt, connect to last byte, at most this long.
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    # Retries: base * 2**attempt seconds (at most retry_max_seconds), +-jitter.
    retry_base_seconds: Annotated[float, Field(gt=0)] = 30.0
    retry_max_seconds: Annotated[float, Field(gt=0)] = 3600.0
    retry_jitter: Annotated[float, Field(ge=0, le=1)] = 0.2
    # A delivery is given up this long after its event (3 days).
    max_retry_age_seconds: Annotated[float, Field(gt=0)] = 3 * 86400.0
    # A subscription failing this long raises channel.failing and shows in status.
    failing_after_seconds: Annotated[float, Field(gt=0)] = 86400.0
    # How often the daemon looks for due deliveries besides when this process
    # commits new ones (it is woken then): retries that come due, and events
    # committed by other emaild processes sharing the database.
    poll_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Deliveries in flight at once per daemon process (each waits for its
    # receiver and for its outcome's commit, so this is what bounds throughput).
    concurrency: Annotated[int, Field(ge=1, le=256)] = 64
