"""Alerts: a channel failing longer than ``[alerts] alert_after_seconds`` is told.

- ``events.emit``: the one place an operational event (``channel.failing``,
  ``channel.recovered``) is recorded: a row in ``ops_events`` and a log line,
  in the caller's transaction.
- ``evaluate.check_channels``: compares each channel's health
  (``channel_status``) with what was last said (``channel_alerts``) and, in
  one transaction, records the change, emits the event and queues the notice
  mail for ``[alerts] admin_address`` in the outbox.
- ``component``: the daemon's job running that check, and the relay's health.
- ``selftest``: scheduled forwarding self-tests, reported like a channel.
"""
