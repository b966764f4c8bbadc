"""Webhooks: every case event pushed to downstream systems, signed, retried, never lost.

- ``outbox``: ``fan_out`` (called by ``emaild.casework.events.record_many``) and
  ``publish`` (events without a case) write delivery rows in the change's own
  transaction;
- ``payloads``: the JSON bodies (case summary, new text, API links; bounded);
- ``subscriptions``: ``[[webhook]]`` synced from the config, and run-time ones
  (``emaild webhook``, ``/api/v1/webhooks``), with the SSRF check;
- ``queue``, ``delivery``, ``sender``: claim in per-case order with a lease,
  POST signed (Standard Webhooks), record the attempt, retry with backoff;
- ``component``: the daemon component that runs them, woken by ``notify`` when
  deliveries commit in this process.
"""

from emaild.config_webhooks import EVENT_TYPES
from emaild.webhooks.outbox import fan_out, publish

__all__ = ["EVENT_TYPES", "fan_out", "publish"]
