"""``accept``: the routing address's "accept email from" list, per channel."""

from __future__ import annotations

from typing import Any

from mailbuilder import build_mail
from stagerun import run_until

from emaild.intake import Envelope, Outcome


def vip_mail(sender: str) -> bytes:
    return build_mail(sender=sender, to="vip@example.com")


def test_a_listed_domain_is_accepted_and_the_trace_says_so(stages_app: Any) -> None:
    ctx = run_until(stages_app, vip_mail("Bob <bob@partner.test>"), "accept")
    assert ctx.disposition is None and not ctx.stopped
    assert [d.decision for d in ctx.trace if d.stage == "accept"] == ["sender accepted"]


def test_an_address_without_a_list_accepts_anyone_silently(stages_app: Any) -> None:
    ctx = run_until(stages_app, build_mail(sender="x@anywhere.test"), "accept")
    assert ctx.disposition is None
    assert [d for d in ctx.trace if d.stage == "accept"] == []


def test_a_stranger_is_quarantined_with_the_reason(stages_app: Any) -> None:
    ctx = run_until(stages_app, vip_mail("Eve <eve@elsewhere.test>"), "accept")
    assert ctx.disposition is Outcome.QUARANTINED
    assert ctx.disposition_stage == "accept"
    assert "eve@elsewhere.test is not in accept_from of vip@example.com" in ctx.disposition_reason


def test_an_operator_release_overrides_the_quarantine(stages_app: Any) -> None:
    env = Envelope(channel="quarantine", release=True)
    ctx = run_until(stages_app, vip_mail("eve@elsewhere.test"), "accept", env)
    assert ctx.disposition is None
    assert any(d.decision == "released by operator" for d in ctx.trace)


def test_reject_refuses_live_smtp_and_keeps_mail_that_was_already_accepted(make_app: Any) -> None:
    app = make_app(
        '[[address]]\naddress = "vip@example.com"\naccept_from = ["@partner.test"]\n'
        'reject_action = "reject"\n'
    )
    live = run_until(app, vip_mail("eve@elsewhere.test"), "accept", Envelope(channel="smtp"))
    assert live.stopped and live.outcome is Outcome.REJECTED
    piped = run_until(app, vip_mail("eve@elsewhere.test"), "accept", Envelope(channel="pipe"))
    assert not piped.stopped and piped.disposition is Outcome.DROPPED
    note = next(d for d in piped.trace if d.stage == "accept").evidence["note"]
    assert "already accepted over pipe" in note
