"""The outbox: outgoing mail queued in the sender's transaction, delivered with retry.

``enqueue(session, message, ...)`` queues a message inside the caller's
transaction (auto-responses, notices, verification mail); the delivery job
sends due items through the configured relay.
"""

from emaild.outbox.queue import FAILED, QUEUED, SENT, enqueue

__all__ = ["FAILED", "QUEUED", "SENT", "enqueue"]
