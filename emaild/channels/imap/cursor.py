"""Where a mailbox's folders stand: the ``imap_cursors`` row of each folder.

A message's identity on the server is ``(UIDVALIDITY, UID)`` in its folder,
never a sequence number. Per folder the row keeps two marks:

- ``last_uid``: every UID up to it is stored (case, duplicate or quarantine).
  It moves inside the message's own transaction (``advance``, passed to
  ``Pipeline.ingest(also=)``), so a crash at any moment neither loses nor
  duplicates a message.
- ``acked_uid``: up to it the after-store action (``\\Seen``, move, delete) is
  done too. It moves only after the server confirmed the action (``ack``), so a
  crash between commit and flagging makes the next poll fetch those messages
  again; duplicate suppression answers them without a second case, and the
  action is applied then.

When UIDVALIDITY changes the folder is scanned again from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, case, update
from sqlalchemy.orm import Session

from emaild.clock import utcnow
from emaild.store.database import Database
from emaild.store.models import ImapCursor

# The cursor is written outside the pipeline's transactions: retry a busy database.
ATTEMPTS = 3


@dataclass
class Cursor:
    """A folder's marks as of the start of a pass."""

    uidvalidity: int
    last_uid: int
    acked_uid: int


class FolderCursors:
    """The cursors of one mailbox's folders."""

    def __init__(self, db: Database, mailbox: str) -> None:
        self.db = db
        self.mailbox = mailbox

    def load(self, folder: str, uidvalidity: int, on_reset: Callable[[int], None]) -> Cursor:
        """The folder's cursor for ``uidvalidity``. A new folder starts at 0; so does
        one whose UIDVALIDITY changed, after ``on_reset(old_uidvalidity)``."""
        key = (self.mailbox, folder)

        def work(session: Session) -> Cursor:
            row = session.get(ImapCursor, key)
            if row is not None and row.uidvalidity == uidvalidity:
                return Cursor(row.uidvalidity, row.last_uid, row.acked_uid)
            if row is None:
                row = ImapCursor(mailbox=key[0], folder=folder)
                session.add(row)
            else:
                # The folder was recreated or the server renumbered it: scan it again
                # from the start; duplicate suppression keeps the cases unique.
                on_reset(row.uidvalidity)
            row.uidvalidity = uidvalidity
            row.last_uid = 0
            row.acked_uid = 0
            row.updated_at = utcnow()
            return Cursor(uidvalidity, 0, 0)

        return self.db.run(work, attempts=ATTEMPTS)

    def advance(self, folder: str, uidvalidity: int, uid: int) -> Callable[[Session], None]:
        """The ``last_uid`` update that rides in the message's own transaction."""
        key = (self.mailbox, folder)
        # Bind names differ from column names, as an UPDATE's SET clause requires.
        params = {"b_mailbox": key[0], "b_folder": folder, "b_validity": uidvalidity, "b_uid": uid}

        def also(session: Session) -> None:
            # The usual case, a row for this UIDVALIDITY: one statement, no ORM.
            moved = session.connection().execute(_ADVANCE, {**params, "b_now": utcnow()})
            if moved.rowcount == 1:
                return
            row = session.get(ImapCursor, key)
            if row is None:
                row = ImapCursor(
                    mailbox=key[0], folder=folder, uidvalidity=uidvalidity, last_uid=0, acked_uid=0
                )
                session.add(row)
            if row.uidvalidity != uidvalidity:
                row.uidvalidity, row.last_uid, row.acked_uid = uidvalidity, 0, 0
            row.last_uid = max(row.last_uid, uid)
            row.updated_at = utcnow()

        return also

    def ack(self, folder: str, uidvalidity: int, uid: int) -> None:
        """Up to ``uid`` (and never past ``last_uid``) the after-store action is done."""
        key = (self.mailbox, folder)

        def work(session: Session) -> None:
            row = session.get(ImapCursor, key)
            if row is not None and row.uidvalidity == uidvalidity:
                row.acked_uid = max(row.acked_uid, min(uid, row.last_uid))

        self.db.run(work, attempts=ATTEMPTS)


_CURSORS = cast(Table, ImapCursor.__table__)
_ADVANCE = (
    update(_CURSORS)
    .where(
        _CURSORS.c.mailbox == bindparam("b_mailbox"),
        _CURSORS.c.folder == bindparam("b_folder"),
        _CURSORS.c.uidvalidity == bindparam("b_validity"),
    )
    .values(
        last_uid=case(
            (_CURSORS.c.last_uid < bindparam("b_uid"), bindparam("b_uid")),
            else_=_CURSORS.c.last_uid,
        ),
        updated_at=bindparam("b_now"),
    )
)
