"""``authenticate``: who the sender proved to be (SPF, DKIM, DMARC), ``auth_policy``, spam.

The verdict is recorded on every message (the trace entry ``emaild cases
show --json`` reads its ``auth`` object from), handed to the rules as
``auth.*`` facts, and, through ``thread_gate``, to threading. The spam
verdict (an rspamd scan when ``[spam] rspamd_url`` is set, else upstream
headers) is recorded beside it and handed to the rules as ``spam.*``.
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
# The tag on a new case whose message the spam scanner could not scan.
UNSCANNED_TAG = "unscanned"


class AuthenticateStage:
    name = NAME
    description = "sender authentication and spam scan; hold or flag unauthenticated mail"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None and ctx.routing is not None
        verdict = self._verdict(ctx)
        ctx.auth = verdict
        decision = "authenticated" if verdict.authenticated else "not authenticated"
        ctx.decide(self.name, decision, **verdict.evidence())
        ctx.verdicts = {**verdict.facts(), **self._spam(ctx)}
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

    def _spam(self, ctx: IngestContext) -> dict[str, str]:
        """The rspamd scan when configured, else what upstream filters wrote; as facts."""
        assert ctx.parsed is not None
        scanner, env = ctx.services.scanner, ctx.envelope
        if scanner is None:
            facts = MessageFacts(ctx.parsed)
            flag, score = facts.values("spam.flag")[0], facts.number("spam.score")
            ctx.decide(self.name, "spam", flag=flag, score=score, scanner="headers")
            return {}
        scan = scanner.scan(
            ctx.raw,
            ip=peer_ip(env.peer),
            helo=env.helo,
            mail_from=env.mail_from,
            rcpt_to=env.rcpt_to,
        )
        ctx.decide(self.name, "spam", **scan.evidence())
        if scan.flag == "unscanned" and UNSCANNED_TAG not in ctx.fields.tags:
            # Stored and flagged, never held back by a scanner that is down.
            ctx.fields.tags = [*ctx.fields.tags, UNSCANNED_TAG]
        found = {"spam.flag": scan.flag}
        if scan.score is not None:
            found["spam.score"] = repr(scan.score)
        return found

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
