"""The outbox: outgoing mail queued in the sender's transaction, delivered with retry.

``enqueue(session, message, ...)`` queues a message inside the caller's
transaction (auto-responses, notices, verification mail); ``deliver_due(app)``
sends due items through the configured relay (the daemon runs it every
``relay.flush_interval_seconds``; ``emaild outbox flush`` runs it once).
"""

from emaild.outbox.delivery import DeliveryReport, deliver_due
from emaild.outbox.queue import FAILED, QUEUED, SENT, enqueue

__all__ = ["FAILED", "QUEUED", "SENT", "DeliveryReport", "deliver_due", "enqueue"]
