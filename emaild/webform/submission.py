"""What a posted form is: the built-in fields, the form's own fields, attachments.

``read`` checks the values against the form's config and answers with a
``Refused`` (HTTP status and a sentence for the person) on the first problem;
``case_fields`` says what the case opens with (the form's defaults, then the
fields mapped to case fields or tags).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any

from emaild.autoresponse.compose import usable_address
from emaild.config import WebformConfig
from emaild.text import one_line

MAX_NAME_CHARS = 200
MAX_SUBJECT_CHARS = 300
MAX_FILENAME_CHARS = 200
_NONCE = re.compile(r"[A-Za-z0-9._:-]{8,128}")
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


class Refused(Exception):
    """A submission that gets a 4xx: ``status`` and a sentence saying why."""

    def __init__(
        self, status: int, detail: str, defence: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.defence = defence  # the defence that refused it, for the log
        self.headers = headers or {}


@dataclass(frozen=True)
class Upload:
    """One attached file, whole (already checked against the size limit)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Submission:
    name: str
    email: str
    subject: str
    description: str
    custom: dict[str, str] = field(default_factory=dict)
    attachments: tuple[Upload, ...] = ()
    nonce: str = ""
    ret_url: str = ""

    def digest(self, form: str) -> str:
        """Identifies this submission: the same form nonce and content, the same digest.

        A double submit repeats all of it (one case); another submission from the
        same page (nonce kept by the browser's back button) differs in content.
        """
        h = hashlib.sha256()
        parts: list[str] = [form, self.nonce, self.name, self.email, self.subject]
        parts += [self.description, *(f"{k}={v}" for k, v in sorted(self.custom.items()))]
        for part in parts:
            h.update(part.encode("utf-8", "replace") + b"\0")
        for upload in self.attachments:
            h.update(upload.filename.encode("utf-8", "replace") + b"\0")
            h.update(hashlib.sha256(upload.data).digest())
        return h.hexdigest()[:40]


def _header_safe(address: str) -> bool:
    """The address can go into the From header emaild writes (ASCII local part)."""
    try:
        Address(addr_spec=address)
    except (ValueError, IndexError, HeaderParseError):
        return False
    return True


def _text(values: Mapping[str, str], key: str) -> str:
    value = values.get(key, "")
    return value if isinstance(value, str) else ""


def read(
    form: WebformConfig,
    values: Mapping[str, str],
    attachments: Sequence[Upload] = (),
    nonce_fallback: str = "",
) -> Submission:
    """The submission in ``values``, or ``Refused`` (422) naming the field at fault."""
    name = one_line(_text(values, "name"), MAX_NAME_CHARS + 1)
    email = _text(values, "email").strip()
    subject = one_line(_text(values, "subject"), MAX_SUBJECT_CHARS + 1)
    description = _text(values, "description").replace("\r\n", "\n").strip()
    if len(name) > MAX_NAME_CHARS:
        raise Refused(422, f"name: at most {MAX_NAME_CHARS} characters")
    if not email or not usable_address(email) or len(email) > 254 or not _header_safe(email):
        raise Refused(422, "email: a valid email address is required")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise Refused(422, f"subject: at most {MAX_SUBJECT_CHARS} characters")
    if not description and not subject:
        raise Refused(422, "description: tell us what this is about")
    if len(description) > form.max_description_chars:
        raise Refused(422, f"description: at most {form.max_description_chars} characters")
    custom: dict[str, str] = {}
    for spec in form.fields:
        value = one_line(_text(values, spec.name), spec.max_length + 1)
        if len(value) > spec.max_length:
            raise Refused(422, f"{spec.name}: at most {spec.max_length} characters")
        if not value:
            if spec.required:
                raise Refused(422, f"{spec.name}: this field is required")
            continue
        if spec.options and value not in spec.options:
            raise Refused(422, f"{spec.name}: choose one of {', '.join(spec.options)}")
        custom[spec.name] = value
    if attachments and not form.attachments:
        raise Refused(422, "attachments are not accepted by this form")
    if len(attachments) > form.max_attachments:
        raise Refused(422, f"at most {form.max_attachments} attachments")
    nonce = _text(values, "nonce").strip()
    if not _NONCE.fullmatch(nonce):
        nonce = nonce_fallback
    return Submission(
        name=name,
        email=email.lower() if email.isascii() else email,
        subject=subject,
        description=description,
        custom=custom,
        attachments=tuple(attachments),
        nonce=nonce,
        ret_url=_text(values, "retURL").strip()[:2000],
    )


def upload(filename: str | None, content_type: str | None, data: bytes) -> Upload:
    """An attachment with a safe file name and a plausible media type."""
    name = one_line((filename or "").replace("\\", "/").rsplit("/", 1)[-1], MAX_FILENAME_CHARS)
    kind = (content_type or "").split(";")[0].strip().lower()
    if not _CONTENT_TYPE.fullmatch(kind):
        kind = "application/octet-stream"
    return Upload(filename=name or "attachment", content_type=kind, data=data)


def case_fields(form: WebformConfig, submission: Submission, template: str) -> dict[str, Any]:
    """What the new case opens with: the form's defaults, then mapped fields."""
    out: dict[str, Any] = {"origin": form.origin, "tags": list(form.tags)}
    if form.priority:
        out["priority"] = form.priority
    if form.category:
        out["category"] = form.category
    if template:
        out["auto_response"] = template
    for spec in form.fields:
        value = submission.custom.get(spec.name, "")
        if not value:
            continue
        if spec.maps_to == "tag":
            out["tags"].append(one_line(f"{spec.name}:{value}", 100))
        elif spec.maps_to in ("category", "priority", "owner"):
            out[spec.maps_to] = value
    return out
