"""The IMAP channel (being split into modules by responsibility)."""

from emaild.channels.imap.poller import (
    IdleWatcher,
    ImapUnavailable,
    MailboxPoller,
    MailboxRunner,
    MailboxWorker,
    connect,
    describe,
    imap_component,
    mailbox_from_url,
)

__all__ = [
    "IdleWatcher",
    "ImapUnavailable",
    "MailboxPoller",
    "MailboxRunner",
    "MailboxWorker",
    "connect",
    "describe",
    "imap_component",
    "mailbox_from_url",
]
