"""The ``[[webform]]`` and ``[web]`` tables: Web-to-Case forms and their defences.

Part of the configuration model (``emaild.config_model``); import them from
``emaild.config`` like every other table. What each defence does: README,
"Web-to-Case".
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from emaild.config_base import MiB, Section

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_FIELD = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Field names the form itself uses: a custom field may not take one.
RESERVED_FIELDS = frozenset(
    {"name", "email", "subject", "description", "altcha", "nonce", "retURL", "attachment"}
)
PRIORITY_VALUES = ("Low", "Medium", "High", "Urgent")


def _origin(value: str) -> str:
    value = value.strip().rstrip("/").lower()
    if not re.fullmatch(r"https?://[^/\s?#]+", value):
        raise ValueError(f"not an origin (scheme://host[:port]): {value!r}")
    return value


def _url(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"https?://[^/\s?#]+(/\S*)?", value):
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value


class WebformField(Section):
    """A custom field on a form, and where its value goes on the case."""

    name: str
    label: str = ""
    required: bool = False
    # text: only in the message body; tag: a "name:value" tag; category/priority/owner:
    # that case field (priority must be one of Low, Medium, High, Urgent).
    maps_to: Literal["text", "tag", "category", "priority", "owner"] = "text"
    # A choice list (a <select>); empty = free text.
    options: list[str] = []
    max_length: Annotated[int, Field(ge=1, le=10000)] = 200

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _FIELD.fullmatch(value) or value in RESERVED_FIELDS:
            raise ValueError(
                f"{value!r}: use a-z, 0-9 and _ (start with a letter), not a built-in field"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WebformField:
        if self.maps_to == "priority" and not set(self.options) <= set(PRIORITY_VALUES):
            raise ValueError(f"a priority field's options must be among {PRIORITY_VALUES}")
        return self


class WebformConfig(Section):
    """A Web-to-Case form (``[[webform]]``): ``GET/POST /web-to-case/NAME``."""

    name: str
    address: str
    enabled: bool = True
    title: str = "Contact support"
    origin: str = "Web"
    # Empty: the routing address's default.
    priority: Literal["", "Low", "Medium", "High", "Urgent"] = ""
    category: str = ""
    tags: list[str] = []
    fields: list[WebformField] = []
    # The auto-response template; empty = the routing address's (the default
    # acknowledgement), or "acknowledgement" when record information is hidden.
    template: str = ""
    hide_record_information: bool = False
    # Origins allowed to post; empty = only the daemon's own pages.
    allowed_origins: list[str] = []
    # A request without Origin and Referer (not a browser): refuse it?
    require_origin: bool = False
    # retURL values that may be redirected to after a submission, and the default one.
    return_urls: list[str] = []
    thank_you_url: str = ""
    daily_cap: Annotated[int, Field(ge=0)] = 5000
    # The case opens only once the submitter followed a signed link mailed to
    # the address they gave (good for verification.token_ttl_hours).
    confirm_email: bool = False
    # The proof-of-work challenge (ALTCHA); off = a free challenge (the signed
    # token still carries the fill-time start and makes a submission single-use).
    captcha: bool = True
    challenge_max_number: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    challenge_ttl_seconds: Annotated[int, Field(ge=60, le=86400)] = 7200
    min_fill_seconds: Annotated[float, Field(ge=0, le=3600)] = 2.0
    # The honeypot field's name (hidden from people); empty = no honeypot.
    honeypot: str = "website"
    # Per client IP: a burst, then this many submissions per minute.
    rate_burst: Annotated[int, Field(ge=1)] = 30
    rate_per_minute: Annotated[float, Field(gt=0)] = 10.0
    attachments: bool = True
    max_attachments: Annotated[int, Field(ge=0, le=20)] = 3
    # 0 = limits.max_attachment_bytes.
    max_attachment_bytes: Annotated[int, Field(ge=0)] = 10 * MiB
    max_description_chars: Annotated[int, Field(ge=100, le=1_000_000)] = 32000

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use letters, digits, '.', '_' and '-' (at most 40)")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip().lower()
        local, sep, domain = value.rpartition("@")
        if not sep or not local or "." not in domain or " " in value:
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [_origin(v) for v in value]

    @field_validator("return_urls")
    @classmethod
    def _return_urls(cls, value: list[str]) -> list[str]:
        return [_url(v) for v in value]

    @field_validator("thank_you_url")
    @classmethod
    def _thank_you(cls, value: str) -> str:
        return _url(value) if value.strip() else ""

    @field_validator("honeypot")
    @classmethod
    def _honeypot(cls, value: str) -> str:
        if value and (not _FIELD.fullmatch(value) or value in RESERVED_FIELDS):
            raise ValueError(f"{value!r}: use a-z, 0-9 and _, not a built-in field")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WebformConfig:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("a field name is used twice")
        if self.honeypot in names:
            raise ValueError(f"the honeypot {self.honeypot!r} is also a field")
        return self


class WebConfig(Section):
    """What every web form shares (``[web]``)."""

    # Where people reach the daemon's web pages (for ``emaild webform html``),
    # e.g. "https://support.example.com"; empty = http://<http.listen>.
    public_url: str = ""
    # Proxies whose X-Forwarded-For names the client (IP or CIDR); the rate
    # limit then counts the address they report, not the proxy's.
    trusted_proxies: list[str] = []

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str) -> str:
        return _url(value).rstrip("/") if value.strip() else ""

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or CIDR: {item!r}") from None
        return value
