"""After-store actions: what happens on the server to a message once it is stored.

``\\Seen``, delete or move, per ``after_store``; a message the pipeline could
not process goes to ``failed_folder`` if one is set. Actions are collected per
batch and applied once the batch is committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imapclient import DELETED, SEEN, IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from emaild.channels.imap.connection import failure_reason
from emaild.config import MailboxConfig
from emaild.pipeline import Outcome


def target(box: MailboxConfig, outcome: Outcome, *, downloaded: bool) -> str:
    """The after-store action for a message: ``seen``, ``delete`` or ``move:FOLDER``."""
    if outcome is Outcome.QUARANTINED and box.failed_folder:
        return f"move:{box.failed_folder}"
    if not downloaded and box.after_store == "delete":
        # Only its headers were kept: deleting it would lose the message.
        return "seen"
    if box.after_store == "move":
        return f"move:{box.move_to}"
    return box.after_store


@dataclass
class Actions:
    """UIDs per after-store action, applied once the batch is committed."""

    by_target: dict[str, list[int]] = field(default_factory=dict)

    def add(self, target: str, uid: int) -> None:
        self.by_target.setdefault(target, []).append(uid)

    def apply(self, client: IMAPClient, folder: str, log: Any) -> int:
        """Apply every action; the number of UIDs whose action failed (``log`` says which)."""
        failed = 0
        for target, uids in self.by_target.items():
            try:
                _apply(client, target, uids)
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                # The messages are stored; the next poll fetches them again and
                # duplicate suppression absorbs them. Loud, because it repeats.
                failed += len(uids)
                log.error(
                    "imap.after_store_failed",
                    folder=folder,
                    action=target,
                    uids=len(uids),
                    error=failure_reason(exc),
                )
        return failed


def _apply(client: IMAPClient, target: str, uids: list[int]) -> None:
    if target == "seen":
        client.add_flags(uids, [SEEN], silent=True)
    elif target == "delete":
        client.add_flags(uids, [DELETED], silent=True)
        _expunge(client, uids)
    elif target.startswith("move:"):
        destination = target.removeprefix("move:")
        if client.has_capability("MOVE"):
            client.move(uids, destination)
        else:
            client.copy(uids, destination)
            client.add_flags(uids, [DELETED], silent=True)
            _expunge(client, uids)


def _expunge(client: IMAPClient, uids: list[int]) -> None:
    # Without UIDPLUS a plain EXPUNGE also removes messages others marked \Deleted.
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:
        client.expunge()
