"""Issue 20 end to end: every fidelity case goes through the pipeline into the
database and blob store, and what is stored is what the person wrote.

The tables live beside their classes (``test_fidelity_decode``,
``test_fidelity_structure``); here each message is ingested as a channel would
and the case, message and attachment rows are read back on both backends.
"""

from __future__ import annotations

import pytest
import test_fidelity_decode as decode
import test_fidelity_structure as structure
from sqlalchemy import select

from emaild.app import App
from emaild.intake import Envelope, Outcome
from emaild.store import models

TABLES = {
    "labels": decode.LABELS,
    "seven_bit": decode.SEVEN_BIT,
    "undeclared": decode.UNDECLARED,
    "broken": decode.BROKEN,
    "folding": structure.FOLDING,
    "junk": structure.JUNK,
    "unnamed": structure.UNNAMED,
    "reply_to": structure.REPLY_TO,
    "html_only": structure.HTML_ONLY,
    "names": structure.NAMES,
}
CASES = [
    pytest.param(case, id=f"{table}-{index}")
    for table, cases in TABLES.items()
    for index, case in enumerate(cases)
]


@pytest.mark.parametrize("case", CASES)
def test_stored_as_written(app: App, case: decode.Case) -> None:
    result = app.pipeline.ingest(case.raw, Envelope(channel="pipe"))
    assert result.outcome is Outcome.NEW_CASE, result.detail
    with app.db.session() as session:
        stored = session.get(models.Case, result.case_number)
        message = session.get(models.Message, result.message_row_id)
        assert stored is not None and message is not None
        assert stored.subject == case.subject
        assert stored.customer == case.customer
        if case.name:
            assert stored.customer_name == case.name
        assert case.text in message.text
        if b"\x00" not in case.raw and b"=00" not in case.raw:
            # NUL is stored as U+FFFD on purpose (PostgreSQL text cannot hold it).
            assert "\ufffd" not in message.text + stored.subject
        rows = session.scalars(
            select(models.Attachment).where(models.Attachment.message_id == message.id)
        )
        attachments = {a.filename: app.blobs.read(a.sha256) for a in rows}
    assert attachments == case.attachments
