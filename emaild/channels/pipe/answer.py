"""One piped message through the pipeline, and what ``emaild ingest`` answers.

The same answer whether ``emaild ingest`` runs the pipeline itself or a
running daemon runs it for it (``handoff``, ``listener``). Exit status follows
sysexits(3), which MTAs understand: 0 stored, 75 try again later, 65 unusable
input (the MTA bounces it): empty, over the size limit, or not a message at all
(no header block; that one is still kept in quarantine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emaild.errors import EX_DATAERR, EX_OK, EX_TEMPFAIL, InputError, TransientError
from emaild.pipeline import Envelope, IngestResult, Outcome, Pipeline


@dataclass(frozen=True)
class PipeAnswer:
    exit_code: int
    stdout: str
    stderr: str
    result: IngestResult | None = None

    def as_json(self) -> dict[str, Any]:
        """What the daemon sends back over the hand-off socket."""
        r = self.result
        return {
            "exit": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "result": None if r is None else result_json(r),
        }


def result_json(r: IngestResult) -> dict[str, Any]:
    """``emaild ingest --json``'s object."""
    return {
        "outcome": r.outcome.value,
        "case": r.case_number,
        "message_row": r.message_row_id,
        "quarantine": r.quarantine_id,
        "detail": r.detail,
    }


def ingest_pipe(
    pipeline: Pipeline, raw: bytes, *, to: str = "", mail_from: str = "", channel: str = "pipe"
) -> PipeAnswer:
    """Ingest one message and say what the caller should print and exit with.

    ``to`` must be a routing address: one that is not (yet) is local trouble an
    admin fixes, so the MTA is told to try again later.
    """
    if to and pipeline.addresses.lookup(to) is None:
        return PipeAnswer(
            EX_TEMPFAIL,
            "",
            f"emaild: temporary failure, try again: {to} is not a routing address "
            "(yet): add it, or fix the MTA's recipient",
        )
    envelope = Envelope(
        channel=channel, mail_from=mail_from, rcpt_to=(to,) if to else (), routing_hint=to
    )
    try:
        result = pipeline.ingest(raw, envelope)
    except TransientError as exc:
        return PipeAnswer(EX_TEMPFAIL, "", f"emaild: temporary failure, try again: {exc}")
    except InputError as exc:
        return PipeAnswer(EX_DATAERR, "", f"emaild: unusable input: {exc}")
    if result.not_a_message:
        # Kept in quarantine (nothing is lost), but the sender must hear that
        # this was not mail: 65 makes the MTA bounce it.
        return PipeAnswer(
            EX_DATAERR,
            "",
            f"emaild: unusable input: {result.detail} "
            f"(kept as quarantine entry {result.quarantine_id})",
            result=result,
        )
    return PipeAnswer(EX_OK, *describe(result), result=result)


def describe(result: IngestResult) -> tuple[str, str]:
    """(stdout, stderr) lines for a stored outcome."""
    o = result.outcome
    if o in (Outcome.NEW_CASE, Outcome.APPENDED):
        return str(result.case_number), ""
    if o is Outcome.DUPLICATE:
        where = f"case {result.case_number}" if result.case_number else "a held message"
        return (
            str(result.case_number) if result.case_number else ""
        ), f"emaild: duplicate: already stored on {where}"
    if o is Outcome.QUARANTINED:
        return "", (
            f"emaild: quarantined as entry {result.quarantine_id}: {result.detail} "
            f"(see 'emaild quarantine show {result.quarantine_id}')"
        )
    return "", f"emaild: {o.value}: {result.detail}"
