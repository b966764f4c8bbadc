"""``route``: choose the routing address, and with it the new case's default fields."""

from __future__ import annotations

from emaild.pipeline.context import IngestContext
from emaild.rules.fields import CaseFields
from emaild.webform import stamp

# Headers an MTA or forwarder writes with the address the mail was delivered to.
DELIVERY_HEADERS = ("delivered-to", "x-original-to", "envelope-to")


class RouteStage:
    name = "route"
    description = "choose the routing address: channel hint, envelope, then headers, else default"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None
        book = ctx.services.addresses
        candidates: list[tuple[str, str]] = []
        if ctx.envelope.routing_hint:
            candidates.append(("channel", ctx.envelope.routing_hint))
        candidates += [("envelope", r) for r in ctx.envelope.rcpt_to]
        for header in DELIVERY_HEADERS:
            candidates += [(header, v.strip()) for v in ctx.parsed.header_all(header)]
        candidates += [("to", a.addr) for a in ctx.parsed.to]
        candidates += [("cc", a.addr) for a in ctx.parsed.cc]
        for source, address in candidates:
            routing = book.lookup(address)
            if routing is not None:
                ctx.routing = routing
                ctx.decide(
                    self.name,
                    "routing address",
                    address=routing.address,
                    via=source,
                    matched=address.lower(),
                )
                break
        else:
            ctx.routing = book.default()
            ctx.decide(self.name, "routing address", address=ctx.routing.address, via="default")
        r = ctx.routing
        ctx.fields = CaseFields(
            priority=r.priority,
            origin=r.origin,
            owner=r.owner,
            category=r.category,
            tags=list(r.tags),
            auto_response=r.auto_response,
        )
        _web_form(self.name, ctx)
        ctx.decide(self.name, "routing defaults", **ctx.fields.as_json())


def _web_form(name: str, ctx: IngestContext) -> None:
    """A message emaild built from a web form: the form's case fields and defences."""
    assert ctx.parsed is not None
    value = ctx.parsed.header(stamp.HEADER)
    if value is None:
        return
    web = stamp.read(ctx.services.signer.secret, value)
    if web is None:
        ctx.decide(name, "web form header ignored", reason="not signed by emaild")
        return
    for key, field_value in web["fields"].items():
        if key == "tags" and isinstance(field_value, list):
            ctx.fields.tags = list(dict.fromkeys([*ctx.fields.tags, *map(str, field_value)]))
        elif key in stamp.FIELDS and isinstance(field_value, str):
            setattr(ctx.fields, key, field_value)
        else:
            continue
        ctx.fields_from[key] = f"web form {web['form']}"
    ctx.decide(name, "web form", form=web["form"], **web["defences"])
