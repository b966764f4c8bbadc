"""The ingestion pipeline shared by every channel: ``Pipeline.ingest`` runs ``STAGES``.

- ``core``: ``Pipeline`` (the transaction, quarantine on failure, release after commit);
- ``context``: ``IngestContext``, what one message carries from stage to stage;
- ``stages/``: one module per stage, their order in ``stages.STAGES``.
"""

from emaild.intake import Envelope, IngestResult, Outcome
from emaild.pipeline.core import Pipeline

__all__ = ["Envelope", "IngestResult", "Outcome", "Pipeline"]
