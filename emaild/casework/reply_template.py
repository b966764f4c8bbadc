"""An agent's reply rendered from a template (``"template": "reply"`` in the API).

The same templates as auto-responses (``templates_dir``, checked at load),
with the same merge fields filled from the case, the customer the reply goes
to and the customer's last message, plus ``agent.text`` (what the agent
wrote) and ``agent.name`` (who sent it: the API token's name or ``cli``).
The template's subject is used when the request gives none; its HTML part
when the request gives no HTML.
"""

from __future__ import annotations

from dataclasses import replace
from email.headerregistry import Address
from email.utils import format_datetime
from typing import TYPE_CHECKING

from emaild.autoresponse.templates import merge_fields
from emaild.cases import case_number
from emaild.errors import ConfigError, InputError

if TYPE_CHECKING:
    from emaild.autoresponse.templates import TemplateSet
    from emaild.casework.reply import ReplyRequest
    from emaild.correlation.tokens import CaseSigner
    from emaild.store.models import Case, Message

# As much of the customer's message as a template may quote.
MAX_QUOTED_CHARS = 20_000


def apply_template(
    request: ReplyRequest,
    templates: TemplateSet | None,
    *,
    case: Case,
    answered: Message | None,
    to: Address,
    routing_name: str,
    signer: CaseSigner,
    actor: str,
) -> ReplyRequest:
    """``request`` with its text (and subject, HTML) rendered from ``request.template``."""
    if not request.template:
        return request
    template = templates.get(request.template) if templates is not None else None
    if template is None or templates is None:
        known = ", ".join(templates.names()) if templates is not None else ""
        raise InputError(f"template: no template {request.template!r} (known: {known})")
    fields = merge_fields(
        case={
            "number": case_number(case.id),
            "id": case.id,
            "subject": case.subject,
            "priority": case.priority,
            "status": case.status,
            "origin": case.origin,
            "category": case.category,
            "token": signer.subject_token(case.id),
        },
        customer={"name": to.display_name, "address": to.addr_spec},
        message={
            "subject": answered.subject if answered else "",
            "text": (answered.new_text or answered.text)[:MAX_QUOTED_CHARS] if answered else "",
            "date": format_datetime(answered.date) if answered and answered.date else "",
            "sender_name": answered.from_name if answered else "",
            "sender_address": answered.from_addr if answered else "",
        },
        routing={"name": routing_name, "address": case.routing_address},
        agent={"name": actor, "text": request.text},
        hide_record_information=template.hide_record_information,
    )
    try:
        rendered = templates.render_template(template, fields)
    except ConfigError as exc:
        # The problem only: the template's path on the server is not the client's business.
        raise InputError(f"template {request.template!r}: {exc.problem}") from None
    return replace(
        request,
        text=rendered.text,
        html=request.html or rendered.html,
        subject=request.subject or rendered.subject,
        template="",
    )
