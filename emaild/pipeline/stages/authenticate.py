"""``authenticate``: who the sender proved to be (SPF, DKIM, DMARC), and ``auth_policy``.

The verdict is recorded on every message (the trace entry ``emaild cases
show --json`` reads its ``auth`` object from), handed to the rules as
``auth.*`` facts, and, through ``thread_gate``, to threading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from emaild.correlation.match import Thread
from emaild.pipeline.context import IngestContext, Outcome
from emaild.rules import MessageFacts
from emaild.trust import AuthVerdict, verdict_from_headers
from emaild.trust.direct import Connection, peer_ip
from emaild.trust.policy import UNAUTHENTICATED_TAG, hold_reason, threading_refusal

NAME = "authenticate"


class AuthenticateStage:
    name = NAME
    description = "read trusted Authentication-Results; hold or flag unauthenticated mail"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None and ctx.routing is not None
        verdict = self._verdict(ctx)
        ctx.auth = verdict
        decision = "authenticated" if verdict.authenticated else "not authenticated"
        ctx.decide(self.name, decision, **verdict.evidence())
        # What upstream filters said, as the rules see it (``emaild rules test`` shows it).
        facts = MessageFacts(ctx.parsed)
        ctx.decide(
            self.name, "spam", flag=facts.values("spam.flag")[0], score=facts.number("spam.score")
        )
        reason = hold_reason(ctx.routing.auth_policy, verdict)
        if not reason or ctx.disposition is not None:
            return
        if ctx.envelope.release:
            ctx.decide(self.name, "released by operator", reason=reason)
            return
        ctx.disposition = Outcome.QUARANTINED
        ctx.disposition_reason = reason
        ctx.disposition_stage = self.name
        ctx.decide(self.name, "quarantined", reason=reason)

    @staticmethod
    def _verdict(ctx: IngestContext) -> AuthVerdict:
        """Own checks for mail on the SMTP listener when enabled, else trusted headers."""
        assert ctx.parsed is not None
        p, env, checker = ctx.parsed, ctx.envelope, ctx.services.checker
        headers = p.header_all("authentication-results")
        if checker is None or env.channel != "smtp":
            return verdict_from_headers(headers, ctx.config.trust.authserv_ids, p.from_addr)
        # Straight from the internet: any Authentication-Results came with the
        # message from its sender, whoever it names.
        conn = Connection(ip=peer_ip(env.peer), helo=env.helo, mail_from=env.mail_from)
        verdict = checker.check(ctx.raw, conn, p.from_addr)
        ignored = verdict_from_headers(headers, (), p.from_addr).ignored
        return replace(verdict, ignored=ignored)


def thread_gate(ctx: IngestContext) -> Callable[[Thread], str]:
    """For ``correlate``: why this message may not join the case it found ("" = it may).

    A refused message opens a new case linked to the claimed one, tagged
    ``unauthenticated`` so an agent sees why it did not thread.
    """
    assert ctx.routing is not None
    policy = ctx.routing.auth_policy

    def gate(thread: Thread) -> str:
        refusal = threading_refusal(policy, ctx.auth)
        if refusal and UNAUTHENTICATED_TAG not in ctx.fields.tags:
            # A new list: the one there may be the routing address's own.
            ctx.fields.tags = [*ctx.fields.tags, UNAUTHENTICATED_TAG]
        return refusal

    return gate
