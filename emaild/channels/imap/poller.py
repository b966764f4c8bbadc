"""One pass over an IMAP mailbox: fetch new mail, store it, then mark, move or
delete it on the server.

A message's identity on the server is ``(UIDVALIDITY, UID)`` in its folder,
never a sequence number. Per folder the ``imap_cursors`` row keeps two marks:

- ``last_uid``: every UID up to it is stored (case, duplicate or quarantine).
  It moves inside the message's own transaction (``Pipeline.ingest(also=)``),
  so a crash at any moment neither loses nor duplicates a message.
- ``acked_uid``: up to it the after-store action (``\\Seen``, move, delete) is
  done too. It moves only after the server confirmed the action, so a crash
  between commit and flagging makes the next poll fetch those messages again;
  duplicate suppression answers them without a second case, and the action
  is applied then.

A poll fetches ``BODY.PEEK[]`` (nothing is marked seen by reading) in batches
bounded by count and bytes. A message over ``limits.max_message_bytes`` is not
downloaded: its headers are kept in quarantine and the sender is told once.
A message the pipeline cannot process is quarantined by the pipeline and, if
``failed_folder`` is set, moved there; the poll goes on with the next one.
When UIDVALIDITY changes the folder is scanned again from the start and
duplicate suppression keeps the cases unique.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from imapclient import DELETED, SEEN, IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.channels.imap.auth import Credentials, MailboxProblem
from emaild.channels.imap.connection import (
    ImapUnavailable,
    close_quietly,
    connect,
    describe,
    failure_reason,
)
from emaild.channels.imap.notices import too_large_notice
from emaild.classify import classify
from emaild.clock import utcnow
from emaild.config import MailboxConfig
from emaild.errors import InputError, TransientError
from emaild.mime.parse import ParsedMessage, parse_message
from emaild.outbox.queue import enqueue, is_suppressed
from emaild.pipeline import Envelope, IngestResult, Outcome
from emaild.pipeline.context import OutcomeTally
from emaild.store.models import ImapCursor, QuarantineEntry

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.imap")

# One FETCH of sizes covers at most this many UIDs (keeps the command line short).
SIZE_FETCH_CHUNK = 1000
HEADER_KEEP_BYTES = 16384


@dataclass
class PollSummary(OutcomeTally):
    """What one or more passes did; ``as_json`` is what ``emaild poll --json`` prints."""

    fetched: int = 0
    too_large: int = 0
    after_store_failed: int = 0
    uidvalidity_resets: int = 0

    def merge(self, other: PollSummary) -> None:
        """Add ``other``'s counts to these."""
        for key, value in other.as_json().items():
            setattr(self, key, getattr(self, key) + value)

    def as_json(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}


@dataclass
class _Cursor:
    uidvalidity: int
    last_uid: int
    acked_uid: int


@dataclass
class _Fetched:
    uid: int
    size: int
    raw: bytes | None = None  # None: over the size limit, only ``headers`` fetched
    headers: bytes = b""


@dataclass
class _Actions:
    """UIDs per after-store action, applied once the batch is committed."""

    by_target: dict[str, list[int]] = field(default_factory=dict)

    def add(self, target: str, uid: int) -> None:
        self.by_target.setdefault(target, []).append(uid)


# Called at each step with (step, folder, uid): "fetched", "stored", "acked".
# The seam for progress output and for tests that kill the process mid-poll.
ProgressHook = Callable[[str, str, int], None]


class MailboxPoller:
    """Polls one mailbox over one persistent connection. Not thread-safe:
    ``MailboxWorker`` makes sure only one pass runs at a time."""

    def __init__(
        self,
        app: App,
        box: MailboxConfig,
        *,
        credentials: Credentials | None = None,
        progress: ProgressHook | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.app = app
        self.box = box
        self.credentials = credentials or Credentials(box)
        self.progress = progress
        self.stop = stop or threading.Event()
        self.client: IMAPClient | None = None
        self.envelope = Envelope(
            channel="imap",
            rcpt_to=(box.routing_address,) if box.routing_address else (),
            peer=f"{box.host}:{box.effective_port}",
            routing_hint=box.routing_address,
        )
        self.log = log.bind(mailbox=box.name)

    # --- connection ---------------------------------------------------------------
    def _connected(self) -> IMAPClient:
        client = self.client
        deadline = self.credentials.session_deadline()
        if client is not None and deadline is not None and utcnow() >= deadline:
            # The OAuth2 token is about to lapse: log in again with a fresh one.
            self.close()
            client = None
        if client is not None:
            try:
                client.noop()
            except (OSError, IMAPClientError):
                self.close()
                client = None
        if client is None:
            client = self.client = connect(self.box, self.credentials)
            self.log.info("imap.connected", server=describe(self.box))
            self._ensure_folders(client)
        return client

    def _ensure_folders(self, client: IMAPClient) -> None:
        # Create the move/failed folders up front: a missing one would make every
        # after-store action fail and the same messages come back on each poll.
        for folder in {self.box.move_to, self.box.failed_folder} - {""}:
            try:
                if not client.folder_exists(folder):
                    client.create_folder(folder)
                    self.log.info("imap.folder_created", folder=folder)
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                raise MailboxProblem(
                    self.box.name,
                    f"folder {folder!r} is missing and cannot be created: {failure_reason(exc)}",
                ) from None

    def close(self) -> None:
        """Log out (best effort)."""
        client, self.client = self.client, None
        close_quietly(client)

    # --- polling ----------------------------------------------------------------
    def poll_once(self) -> PollSummary:
        """One pass over every folder. Raises ``ImapUnavailable`` (retry later),
        ``MailboxProblem`` (operator must act) or ``TransientError`` (storage down)."""
        summary = PollSummary()
        try:
            client = self._connected()
            for folder in self.box.folders:
                if self.stop.is_set():
                    break
                self._poll_folder(client, folder, summary)
        except (OSError, IMAPClientAbortError) as exc:
            self.close()
            raise ImapUnavailable(
                f"{describe(self.box)}: connection lost: {failure_reason(exc)}"
            ) from None
        except IMAPClientError as exc:
            self.close()
            raise ImapUnavailable(f"{describe(self.box)}: {failure_reason(exc)}") from None
        except BaseException:
            self.close()
            raise
        return summary

    def _poll_folder(self, client: IMAPClient, folder: str, summary: PollSummary) -> None:
        try:
            info = client.select_folder(folder)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            raise MailboxProblem(
                self.box.name, f"cannot open folder {folder!r}: {failure_reason(exc)}"
            ) from None
        uidvalidity = int(info[b"UIDVALIDITY"])
        cursor = self._cursor(folder, uidvalidity, summary)
        uidnext = info.get(b"UIDNEXT")
        if not info.get(b"EXISTS") or (
            uidnext is not None and int(uidnext) <= cursor.acked_uid + 1
        ):
            return
        sizes = self._sizes(client, cursor.acked_uid)
        if not sizes:
            return
        for batch in self._batches(sizes):
            if self.stop.is_set():
                return
            self._run_batch(client, folder, uidvalidity, batch, summary)

    def _cursor(self, folder: str, uidvalidity: int, summary: PollSummary) -> _Cursor:
        key = (self.box.name, folder)

        def work(session: Session) -> _Cursor:
            row = session.get(ImapCursor, key)
            if row is not None and row.uidvalidity == uidvalidity:
                return _Cursor(row.uidvalidity, row.last_uid, row.acked_uid)
            if row is None:
                row = ImapCursor(mailbox=key[0], folder=folder)
                session.add(row)
            else:
                # The folder was recreated or the server renumbered it: scan it again
                # from the start; duplicate suppression keeps the cases unique.
                self.log.warning(
                    "imap.uidvalidity_changed",
                    folder=folder,
                    old=row.uidvalidity,
                    new=uidvalidity,
                    action="rescanning the folder",
                )
                summary.uidvalidity_resets += 1
            row.uidvalidity = uidvalidity
            row.last_uid = 0
            row.acked_uid = 0
            row.updated_at = utcnow()
            return _Cursor(uidvalidity, 0, 0)

        return self.app.db.run(work, attempts=3)

    def _sizes(self, client: IMAPClient, after_uid: int) -> list[tuple[int, int]]:
        """(UID, RFC822.SIZE) of every message above ``after_uid``, in UID order."""
        # "N:*" always matches the highest UID, even one below N: filter.
        uids = sorted(u for u in client.search(["UID", f"{after_uid + 1}:*"]) if u > after_uid)
        sizes = []
        for start in range(0, len(uids), SIZE_FETCH_CHUNK):
            chunk = uids[start : start + SIZE_FETCH_CHUNK]
            found = client.fetch(chunk, ["RFC822.SIZE"])
            sizes += [(u, int(found[u][b"RFC822.SIZE"])) for u in chunk if u in found]
        return sizes

    def _batches(self, sizes: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
        """Runs of UIDs bounded by ``batch_size`` messages and ``batch_bytes`` bytes."""
        limit = self.app.config.limits.max_message_bytes
        batch: list[tuple[int, int]] = []
        used = 0
        for uid, size in sizes:
            cost = size if size <= limit else HEADER_KEEP_BYTES
            if batch and (len(batch) >= self.box.batch_size or used + cost > self.box.batch_bytes):
                yield batch
                batch, used = [], 0
            batch.append((uid, size))
            used += cost
        if batch:
            yield batch

    def _fetch(self, client: IMAPClient, batch: list[tuple[int, int]]) -> list[_Fetched]:
        limit = self.app.config.limits.max_message_bytes
        whole = [uid for uid, size in batch if size <= limit]
        big = [uid for uid, size in batch if size > limit]
        bodies = client.fetch(whole, ["BODY.PEEK[]"]) if whole else {}
        heads = client.fetch(big, ["BODY.PEEK[HEADER]"]) if big else {}
        out = []
        for uid, size in batch:
            if uid in bodies and b"BODY[]" in bodies[uid]:
                out.append(_Fetched(uid, size, raw=bytes(bodies[uid][b"BODY[]"])))
            elif uid in heads and b"BODY[HEADER]" in heads[uid]:
                out.append(_Fetched(uid, size, headers=bytes(heads[uid][b"BODY[HEADER]"])))
            # Otherwise it was expunged meanwhile: nothing to store.
        return out

    def _run_batch(
        self,
        client: IMAPClient,
        folder: str,
        uidvalidity: int,
        batch: list[tuple[int, int]],
        summary: PollSummary,
    ) -> None:
        fetched = self._fetch(client, batch)
        actions = _Actions()
        last_stored = 0
        try:
            for item in fetched:
                if self.stop.is_set():
                    break
                self._step("fetched", folder, item.uid)
                summary.fetched += 1
                outcome = self._store(folder, uidvalidity, item, summary)
                summary.count(outcome)
                self._step("stored", folder, item.uid)
                actions.add(self._target(outcome, item), item.uid)
                last_stored = item.uid
        except TransientError:
            # Storage is down: flag what was stored, then let the poll fail and retry.
            self._after_store(client, folder, actions, summary)
            raise
        if self._after_store(client, folder, actions, summary) and last_stored:
            self._ack(folder, uidvalidity, last_stored)
            self._step("acked", folder, last_stored)

    def _step(self, step: str, folder: str, uid: int) -> None:
        if self.progress is not None:
            self.progress(step, folder, uid)

    def _target(self, outcome: Outcome, item: _Fetched) -> str:
        """The after-store action for a message: ``seen``, ``delete`` or ``move:FOLDER``."""
        box = self.box
        if outcome is Outcome.QUARANTINED and box.failed_folder:
            return f"move:{box.failed_folder}"
        if item.raw is None and box.after_store == "delete":
            # Only its headers were kept: deleting it would lose the message.
            return "seen"
        if box.after_store == "move":
            return f"move:{box.move_to}"
        return box.after_store

    # --- storing --------------------------------------------------------------
    def _advance(self, folder: str, uidvalidity: int, uid: int) -> Callable[[Session], None]:
        """The cursor update that rides in the message's own transaction."""
        key = (self.box.name, folder)

        def also(session: Session) -> None:
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

    def _store(
        self, folder: str, uidvalidity: int, item: _Fetched, summary: PollSummary
    ) -> Outcome:
        also = self._advance(folder, uidvalidity, item.uid)
        if item.raw is None:
            summary.too_large += 1
            self._hold_too_large(item, also)
            return Outcome.QUARANTINED
        try:
            result: IngestResult = self.app.pipeline.ingest(item.raw, self.envelope, also=also)
        except InputError as exc:
            # Not mail at all (empty, or bigger than RFC822.SIZE said): keep it and move on.
            self._hold_unusable(item, str(exc), also)
            return Outcome.QUARANTINED
        if result.outcome is Outcome.QUARANTINED:
            self.log.warning(
                "imap.quarantined",
                folder=folder,
                uid=item.uid,
                quarantine_id=result.quarantine_id,
                error=result.detail,
            )
        return result.outcome

    def _hold_unusable(self, item: _Fetched, error: str, also: Callable[[Session], None]) -> None:
        raw = item.raw or b""
        sha = self.app.blobs.put(raw)[0] if raw else ""
        headers = _header_block(raw).decode("utf-8", "replace")

        def work(session: Session) -> None:
            also(session)
            if sha and _held(session, QuarantineEntry.raw_sha256 == sha) is not None:
                return
            session.add(self._entry("unusable", error, sha, len(raw), headers))

        self.app.db.run(work, attempts=3)
        self.log.warning("imap.unusable", uid=item.uid, error=error)

    def _hold_too_large(self, item: _Fetched, also: Callable[[Session], None]) -> None:
        limit = self.app.config.limits.max_message_bytes
        headers = item.headers[:HEADER_KEEP_BYTES].decode("utf-8", "replace")
        error = f"message is {item.size} bytes, over the {limit} byte limit: not downloaded"

        def work(session: Session) -> str:
            also(session)
            known = _held(
                session,
                QuarantineEntry.reason == "too_large",
                QuarantineEntry.raw_size == item.size,
                QuarantineEntry.headers == headers,
            )
            if known is not None:
                # Seen before (a re-poll after a crash, a UIDVALIDITY reset): one notice only.
                known.attempts += 1
                known.last_attempt_at = utcnow()
                return "already recorded"
            notice = self._too_large_notice(session, item)
            session.add(self._entry("too_large", f"{error}; {notice}", "", item.size, headers))
            return notice

        notice = self.app.db.run(work, attempts=3)
        self.log.warning("imap.too_large", uid=item.uid, size=item.size, limit=limit, notice=notice)

    def _entry(self, reason: str, error: str, sha: str, size: int, headers: str) -> QuarantineEntry:
        now = utcnow()
        return QuarantineEntry(
            created_at=now,
            channel="imap",
            envelope_from="",
            envelope_to=list(self.envelope.rcpt_to),
            raw_sha256=sha,
            raw_size=size,
            headers=headers,
            reason=reason,
            stage="fetch",
            error=error[:10000],
            status="held",
            attempts=1,
            last_attempt_at=now,
        )

    def _too_large_notice(self, session: Session, item: _Fetched) -> str:
        """Queue the "too large" notice unless loop protection says no; says which."""
        if not self.box.notify_too_large:
            return "no notice: notify_too_large is off"
        try:
            parsed = parse_message(item.headers + b"\r\n", spool_threshold=HEADER_KEEP_BYTES)
        except InputError as exc:
            return f"no notice: headers unreadable ({exc})"
        return_path = parsed.header("return-path")
        mail_from = return_path.strip().strip("<>").strip() if return_path is not None else None
        reason = classify(parsed, mail_from).no_response_reason()
        recipient = parsed.from_addr.lower()
        book = self.app.pipeline.addresses
        if reason:
            return f"no notice: {reason}"
        if not recipient or "@" not in recipient:
            return "no notice: no sender address"
        if book.lookup(recipient) is not None:
            return f"no notice: {recipient} is one of our own addresses"
        suppressed = is_suppressed(session, recipient)
        if suppressed:
            return f"no notice: {recipient} is suppressed ({suppressed})"
        sender = self._our_address(parsed)
        notice = too_large_notice(
            parsed,
            from_address=sender,
            size=item.size,
            limit=self.app.config.limits.max_message_bytes,
            domain=self.app.config.threading.domain or sender.rpartition("@")[2],
            now=utcnow(),
        )
        # Envelope sender as for auto-responses: a bounce comes back and suppresses the address.
        enqueue(
            session, notice, mail_from=sender, rcpt_to=recipient, now=utcnow(), kind="too_large"
        )
        return f"sender {recipient} told"

    def _our_address(self, parsed: ParsedMessage) -> str:
        book = self.app.pipeline.addresses
        for candidate in [self.box.routing_address] + [a.addr for a in parsed.to + parsed.cc]:
            routing = book.lookup(candidate) if candidate else None
            if routing is not None:
                return routing.address
        return book.default().address

    # --- after the commit ------------------------------------------------------
    def _after_store(
        self, client: IMAPClient, folder: str, actions: _Actions, summary: PollSummary
    ) -> bool:
        """Apply the after-store actions; False if any failed (nothing is acked then)."""
        ok = True
        for target, uids in actions.by_target.items():
            try:
                self._apply(client, target, uids)
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                # The messages are stored; the next poll fetches them again and
                # duplicate suppression absorbs them. Loud, because it repeats.
                ok = False
                summary.after_store_failed += len(uids)
                self.log.error(
                    "imap.after_store_failed",
                    folder=folder,
                    action=target,
                    uids=len(uids),
                    error=failure_reason(exc),
                )
        return ok

    def _apply(self, client: IMAPClient, target: str, uids: list[int]) -> None:
        if target == "seen":
            client.add_flags(uids, [SEEN], silent=True)
        elif target == "delete":
            client.add_flags(uids, [DELETED], silent=True)
            self._expunge(client, uids)
        elif target.startswith("move:"):
            destination = target.removeprefix("move:")
            if client.has_capability("MOVE"):
                client.move(uids, destination)
            else:
                client.copy(uids, destination)
                client.add_flags(uids, [DELETED], silent=True)
                self._expunge(client, uids)

    @staticmethod
    def _expunge(client: IMAPClient, uids: list[int]) -> None:
        # Without UIDPLUS a plain EXPUNGE also removes messages others marked \Deleted.
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()

    def _ack(self, folder: str, uidvalidity: int, uid: int) -> None:
        key = (self.box.name, folder)

        def work(session: Session) -> None:
            row = session.get(ImapCursor, key)
            if row is not None and row.uidvalidity == uidvalidity:
                row.acked_uid = max(row.acked_uid, min(uid, row.last_uid))

        self.app.db.run(work, attempts=3)


def _held(session: Session, *conditions: Any) -> QuarantineEntry | None:
    query = select(QuarantineEntry).where(
        QuarantineEntry.status == "held", QuarantineEntry.channel == "imap", *conditions
    )
    return session.scalars(query.limit(1)).first()


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if end == -1:
        end = raw.find(b"\n\n")
    return raw[: end if end != -1 else HEADER_KEEP_BYTES][:HEADER_KEEP_BYTES]
