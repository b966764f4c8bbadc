"""Request and response bodies of the API (the OpenAPI document is built from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emaild.config_model import Priority

Status = Literal["new", "open", "pending", "closed"]
# A MIME type we are willing to put in a header: type/subtype, nothing else.
CONTENT_TYPE = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseSummary(BaseModel):
    number: int
    subject: str
    status: str
    priority: str
    origin: str
    owner: str
    category: str
    tags: list[str]
    routing_address: str
    customer: str
    customer_name: str
    linked_case: int | None
    mentioned_number: int | None
    message_count: int
    created_at: str
    updated_at: str
    closed_at: str | None
    version: int


class CasePage(BaseModel):
    items: list[CaseSummary]
    next: str | None


class CaseDetail(CaseSummary):
    subject_token: str
    messages: list[dict[str, Any]]
    participants: list[dict[str, Any]]
    links: dict[str, Any]


class CasePatch(Strict):
    status: Status | None = None
    priority: Priority | None = None
    owner: str | None = Field(default=None, max_length=255)
    category: str | None = Field(default=None, max_length=255)
    tags: list[str] | None = Field(default=None, max_length=50)


class AttachmentIn(Strict):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", pattern=CONTENT_TYPE)
    content_base64: str


class ReplyIn(Strict):
    text: str = Field(
        default="", max_length=1_000_000, description="The reply (or agent.text for a template)."
    )
    html: str = Field(default="", max_length=1_000_000)
    to: list[str] | None = Field(default=None, max_length=50)
    cc: list[str] | None = Field(default=None, max_length=50)
    subject: str = Field(default="", max_length=900)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=20)
    close: bool = False
    template: str = Field(
        default="",
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="Render the body from this template (templates_dir); text is agent.text.",
    )


class ReplyOut(BaseModel):
    case: int
    message: int
    message_id: str
    outbox: list[int]
    recipients: list[str]


class NoteIn(Strict):
    text: str = Field(min_length=1, max_length=100_000)


class NoteOut(BaseModel):
    case: int
    event: int


class NewCaseIn(Strict):
    from_address: str = Field(max_length=320)
    from_name: str = Field(default="", max_length=300)
    to: str = Field(default="", max_length=320, description="routing address (default: the first)")
    subject: str = Field(default="", max_length=900)
    text: str = Field(max_length=1_000_000)


class NewCaseOut(BaseModel):
    outcome: str
    number: int | None
    message: int | None
    message_id: str


class EventOut(BaseModel):
    id: int
    kind: str
    actor: str
    at: str
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
