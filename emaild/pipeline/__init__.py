"""The ingestion pipeline shared by every channel."""

from emaild.pipeline.context import Envelope, IngestResult, Outcome
from emaild.pipeline.core import Pipeline

__all__ = ["Envelope", "IngestResult", "Outcome", "Pipeline"]
