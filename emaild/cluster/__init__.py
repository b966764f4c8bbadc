"""Who does what once, cluster-wide: locks that one ``emaild`` process at a time holds.

Several processes (``emaild run --workers N``, or ``emaild run`` on several
hosts) share one PostgreSQL. Work that must not be done twice at once takes a
named lock from ``cluster_for(app.db)``:

- ``imap:NAME``: the IMAP mailbox NAME (``emaild.channels.imap.ownership``);
  held while this process polls and IDLEs it, retried every few seconds by
  the others;
- ``job:ID``: one run of a singleton scheduler job (``emaild.component``):
  the release jobs of held mail, retention, alerts, forwarding self-tests;
  another process whose run comes while it is held skips that run.

The outbox and webhook deliveries need no lock here: each item is claimed
with a lease row (``emaild.outbox.queue``, ``emaild.webhooks.queue``).
``emaild status`` lists the holders (``holders.live_holders``).
"""

from __future__ import annotations

from emaild.cluster.locks import Cluster, cluster_for, forget

__all__ = ["Cluster", "cluster_for", "forget"]
