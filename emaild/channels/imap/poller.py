"""One pass over an IMAP mailbox: fetch new mail, store it, then mark, move or
delete it on the server.

A message's identity on the server is ``(UIDVALIDITY, UID)`` in its folder,
never a sequence number; where each folder stands is its cursor
(``channels.imap.cursor``: stored up to ``last_uid``, after-store action done
up to ``acked_uid``).

A poll fetches ``BODY.PEEK[]`` (nothing is marked seen by reading) in batches
bounded by count and bytes, the next batch downloading while one is stored
(``channels.imap.fetch``). A message over ``limits.max_message_bytes`` is not
downloaded: its headers are kept in quarantine and the sender is told once
(``autoresponse.notices``).
A message the pipeline cannot process is quarantined by the pipeline and, if
``failed_folder`` is set, moved there; the poll goes on with the next one.
When UIDVALIDITY changes the folder is scanned again from the start and
duplicate suppression keeps the cases unique.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy.orm import Session

from emaild import quarantine
from emaild.autoresponse.notices import queue_too_large_notice
from emaild.channels.imap.actions import Actions, target
from emaild.channels.imap.auth import Credentials, MailboxProblem
from emaild.channels.imap.connection import (
    ImapUnavailable,
    close_quietly,
    connect,
    describe,
    failure_reason,
)
from emaild.channels.imap.cursor import Cursor, FolderCursors
from emaild.channels.imap.fetch import Fetched, Prefetch, fetch
from emaild.clock import utcnow
from emaild.config import MailboxConfig
from emaild.errors import InputError, TransientError
from emaild.observe import metrics
from emaild.pipeline import Envelope, IngestResult, Outcome
from emaild.pipeline.context import OutcomeTally
from emaild.store.models import QuarantineEntry

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.imap")

# One FETCH of sizes covers at most this many UIDs (keeps the command line short).
SIZE_FETCH_CHUNK = 1000
# A message over the size limit costs its header block in a batch.
HEADER_KEEP_BYTES = quarantine.HEADER_KEEP_BYTES


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


def _sizes(client: IMAPClient, after_uid: int) -> list[tuple[int, int]]:
    """(UID, RFC822.SIZE) of every message above ``after_uid``, in UID order."""
    # "N:*" always matches the highest UID, even one below N: filter.
    uids = sorted(u for u in client.search(["UID", f"{after_uid + 1}:*"]) if u > after_uid)
    sizes = []
    for start in range(0, len(uids), SIZE_FETCH_CHUNK):
        chunk = uids[start : start + SIZE_FETCH_CHUNK]
        found = client.fetch(chunk, ["RFC822.SIZE"])
        sizes += [(u, int(found[u][b"RFC822.SIZE"])) for u in chunk if u in found]
    return sizes


def _batches(
    sizes: list[tuple[int, int]], limit: int, box: MailboxConfig
) -> Iterator[list[tuple[int, int]]]:
    """Runs of UIDs bounded by ``batch_size`` messages and ``batch_bytes`` bytes."""
    batch: list[tuple[int, int]] = []
    used = 0
    for uid, size in sizes:
        cost = size if size <= limit else HEADER_KEEP_BYTES
        if batch and (len(batch) >= box.batch_size or used + cost > box.batch_bytes):
            yield batch
            batch, used = [], 0
        batch.append((uid, size))
        used += cost
    if batch:
        yield batch


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
        self.cursors = FolderCursors(app.db, box.name)
        self.backlog: dict[str, int] = {}
        # The next batch downloads while one is stored; False: one after the
        # other (the benches' baseline).
        self.prefetch = True

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
            self._waiting(folder, 0)
            return
        sizes = _sizes(client, cursor.acked_uid)
        waiting = len(sizes)
        self._waiting(folder, waiting)
        limit = self.app.config.limits.max_message_bytes
        batches = list(_batches(sizes, limit, self.box))
        fetched = fetch(client, batches[0], limit) if batches else []
        for index, batch in enumerate(batches):
            if self.stop.is_set():
                return
            # The next batch downloads while this one is stored.
            following = batches[index + 1] if index + 1 < len(batches) else []
            ahead = Prefetch(client, following, limit) if following and self.prefetch else None
            fetched = self._run_batch(client, folder, uidvalidity, fetched, ahead, summary)
            if following and ahead is None:
                fetched = fetch(client, following, limit)
            waiting -= len(batch)
            self._waiting(folder, waiting)

    def _waiting(self, folder: str, count: int) -> None:
        """The backlog metric: messages on the server above the cursor, per mailbox."""
        self.backlog[folder] = max(0, count)
        metrics.imap_backlog(self.box.name, sum(self.backlog.values()))

    def _cursor(self, folder: str, uidvalidity: int, summary: PollSummary) -> Cursor:
        def reset(old: int) -> None:
            self.log.warning(
                "imap.uidvalidity_changed",
                folder=folder,
                old=old,
                new=uidvalidity,
                action="rescanning the folder",
            )
            summary.uidvalidity_resets += 1

        return self.cursors.load(folder, uidvalidity, reset)

    def _run_batch(
        self,
        client: IMAPClient,
        folder: str,
        uidvalidity: int,
        fetched: list[Fetched],
        ahead: Prefetch | None,
        summary: PollSummary,
    ) -> list[Fetched]:
        """Store ``fetched``, then apply its after-store actions; returns the next
        batch (``ahead``'s), which downloaded meanwhile."""
        actions = Actions()
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
                actions.add(target(self.box, outcome, downloaded=item.raw is not None), item.uid)
                last_stored = item.uid
        except TransientError:
            # Storage is down: flag what was stored, then let the poll fail and retry.
            if ahead is not None:
                ahead.settle()
            self._after_store(client, folder, actions, summary)
            raise
        except BaseException:
            if ahead is not None:
                ahead.settle()  # the connection is closed next: no thread may still use it
            raise
        following: list[Fetched] = []
        lost: BaseException | None = None
        if ahead is not None:
            try:
                following = ahead.result()
            except (OSError, IMAPClientError) as exc:
                lost = exc  # flag what is stored first, if the connection still lets us
        if self._after_store(client, folder, actions, summary) and last_stored:
            self.cursors.ack(folder, uidvalidity, last_stored)
            self._step("acked", folder, last_stored)
        if lost is not None:
            raise lost
        return following

    def _step(self, step: str, folder: str, uid: int) -> None:
        if self.progress is not None:
            self.progress(step, folder, uid)

    # --- storing --------------------------------------------------------------
    def _store(self, folder: str, uidvalidity: int, item: Fetched, summary: PollSummary) -> Outcome:
        also = self.cursors.advance(folder, uidvalidity, item.uid)
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

    def _held(self, reason: str, error: str, sha: str, size: int, headers: str) -> quarantine.Held:
        return quarantine.Held(
            channel="imap",
            reason=reason,
            stage="fetch",
            error=error,
            raw_sha256=sha,
            raw_size=size,
            headers=headers,
            envelope_to=self.envelope.rcpt_to,
        )

    def _hold_unusable(self, item: Fetched, error: str, also: Callable[[Session], None]) -> None:
        raw = item.raw or b""
        sha = self.app.blobs.put(raw)[0] if raw else ""
        held = self._held("unusable", error, sha, len(raw), quarantine.header_block(raw))
        quarantine.record(self.app.db, held, utcnow(), also=also)
        self.log.warning("imap.unusable", uid=item.uid, error=error)

    def _hold_too_large(self, item: Fetched, also: Callable[[Session], None]) -> None:
        limit = self.app.config.limits.max_message_bytes
        headers = item.headers[:HEADER_KEEP_BYTES].decode("utf-8", "replace")
        error = f"message is {item.size} bytes, over the {limit} byte limit: not downloaded"

        def work(session: Session) -> str:
            also(session)
            known = quarantine.find_held(
                session,
                QuarantineEntry.channel == "imap",
                QuarantineEntry.reason == "too_large",
                QuarantineEntry.raw_size == item.size,
                QuarantineEntry.headers == headers,
            )
            if known is not None:
                # Seen before (a re-poll after a crash, a UIDVALIDITY reset): one notice only.
                quarantine.count_attempt(known, utcnow())
                return "already recorded"
            notice = self._too_large_notice(session, item)
            held = self._held("too_large", f"{error}; {notice}", "", item.size, headers)
            quarantine.add(session, held, utcnow())
            return notice

        notice = self.app.db.run(work, attempts=quarantine.ATTEMPTS)
        self.log.warning("imap.too_large", uid=item.uid, size=item.size, limit=limit, notice=notice)

    def _too_large_notice(self, session: Session, item: Fetched) -> str:
        """Queue the "too large" notice unless it is off or loop protection says no."""
        if not self.box.notify_too_large:
            return "no notice: notify_too_large is off"
        return queue_too_large_notice(
            session,
            item.headers,
            size=item.size,
            limit=self.app.config.limits.max_message_bytes,
            book=self.app.pipeline.addresses,
            routing_address=self.box.routing_address,
            domain=self.app.config.threading.domain,
        )

    # --- after the commit ------------------------------------------------------
    def _after_store(
        self, client: IMAPClient, folder: str, actions: Actions, summary: PollSummary
    ) -> bool:
        """Apply the after-store actions; False if any failed (nothing is acked then)."""
        failed = actions.apply(client, folder, self.log)
        summary.after_store_failed += failed
        return not failed
