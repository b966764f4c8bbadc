"""The IMAP channel: poll support mailboxes and turn their mail into cases.

One module per responsibility:

- ``auth``: credentials (password or OAuth2 token) and ``MailboxProblem``.
- ``connection``: a mailbox from an ``imap://`` URL, connecting and logging in,
  ``describe`` and the wording of connection errors (``ImapUnavailable``).
- ``poller``: one pass over a mailbox (``MailboxPoller``, ``PollSummary``):
  batches, storing, quarantining what cannot be stored (through
  ``emaild.quarantine``; the "too large" notice is ``autoresponse.notices``).
- ``cursor``: each folder's ``(UIDVALIDITY, UID)`` cursor (``FolderCursors``).
- ``actions``: the after-store actions (``\\Seen``, move, delete).
- ``worker``: ``MailboxWorker`` serialises the polls of one mailbox, backs off
  after failures and keeps its health for ``emaild status``.
- ``idle``: ``IdleWatcher`` keeps a second connection in IDLE and wakes the
  worker when mail arrives.
- ``runner``: ``MailboxRunner``, the foreground ``emaild poll``.
- ``component``: ``ImapComponent`` wires workers and watchers into the daemon.

Everything here blocks (imapclient is synchronous): the daemon runs polls in
threads of their own, never on the event loop.
"""
