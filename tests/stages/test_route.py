"""``route``: which routing address a message is for, and the defaults it brings."""

from __future__ import annotations

from typing import Any

from mailbuilder import build_mail
from stagerun import run_until

from emaild.intake import Envelope


def via(ctx: Any) -> tuple[str, str]:
    decision = next(d for d in ctx.trace if d.decision == "routing address")
    return decision.evidence["address"], decision.evidence["via"]


def test_the_channel_hint_wins_over_everything(stages_app: Any) -> None:
    raw = build_mail(to="support@example.com")
    env = Envelope(channel="imap", routing_hint="vip@example.com", rcpt_to=("support@example.com",))
    ctx = run_until(stages_app, raw, "route", env)
    assert via(ctx) == ("vip@example.com", "channel")
    assert ctx.fields.origin == "VIP"


def test_the_envelope_recipient_comes_before_the_headers(stages_app: Any) -> None:
    raw = build_mail(to="support@example.com")
    ctx = run_until(
        stages_app, raw, "route", Envelope(channel="smtp", rcpt_to=("VIP@example.com",))
    )
    assert via(ctx) == ("vip@example.com", "envelope")


def test_delivery_headers_then_to_then_cc(stages_app: Any) -> None:
    delivered = build_mail(to="someone@else.test", headers="Delivered-To: vip@example.com\r\n")
    assert via(run_until(stages_app, delivered, "route")) == ("vip@example.com", "delivered-to")
    cc = build_mail(to="someone@else.test", headers="Cc: Support <support@example.com>\r\n")
    assert via(run_until(stages_app, cc, "route")) == ("support@example.com", "cc")


def test_unknown_recipients_fall_back_to_the_default_address(stages_app: Any) -> None:
    ctx = run_until(stages_app, build_mail(to="nobody@else.test"), "route")
    assert via(ctx) == ("support@example.com", "default")


def test_the_routing_address_defaults_become_the_case_fields(stages_app: Any) -> None:
    ctx = run_until(stages_app, build_mail(to="support@example.com"), "route")
    assert ctx.fields.priority == "High"
    assert ctx.fields.origin == "Email"
    defaults = next(d for d in ctx.trace if d.decision == "routing defaults")
    assert defaults.evidence["priority"] == "High"
