"""An agent's reply rendered from a template (``"template": "reply"`` in the API).

The same templates as auto-responses (``templates_dir``, checked at load),
with the same merge fields filled from the case, the customer the reply goes
to and the customer's last message, plus ``agent.text`` (what the agent
wrote) and ``agent.name`` (who sent it: the API token's name or ``cli``).
The template's subject is used when the request gives none; its HTML part
when the request gives no HTML.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.utils import format_datetime
from typing import TYPE_CHECKING

from emaild.autoresponse.templates import merge_fields
from emaild.cases import case_number
from emaild.errors import ConfigError, InputError

if TYPE_CHECKING:
    from emaild.autoresponse.templates import Rendered, TemplateSet
    from emaild.correlation.tokens import CaseSigner
    from emaild.store.models import Case, Message

# As much of the customer's message as a template may quote.
MAX_QUOTED_CHARS = 20_000


def render_reply(
    name: str,
    agent_text: str,
    templates: TemplateSet | None,
    *,
    case: Case,
    answered: Message | None,
    to: Address,
    routing_name: str,
    signer: CaseSigner,
    actor: str,
) -> Rendered:
    """Template ``name`` rendered for a reply on ``case`` saying ``agent_text``."""
    template = templates.get(name) if templates is not None else None
    if template is None or templates is None:
        known = ", ".join(templates.names()) if templates is not None else ""
        raise InputError(f"template: no template {name!r} (known: {known})")
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
        agent={"name": actor, "text": agent_text},
        hide_record_information=template.hide_record_information,
    )
    try:
        return templates.render_template(template, fields)
    except ConfigError as exc:
        # The problem only: the template's path on the server is not the client's business.
        raise InputError(f"template {name!r}: {exc.problem}") from None
