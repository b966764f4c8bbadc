"""The IMAP channel: poll support mailboxes and turn their mail into cases.

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

Everything here blocks (imapclient is synchronous): the daemon runs polls in
threads of their own, never on the event loop. ``MailboxWorker`` serialises
the polls of one mailbox; ``IdleWatcher`` keeps a second connection in IDLE
and wakes the worker when mail arrives; ``ImapComponent`` wires both into the
daemon's scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

import structlog
from imapclient import DELETED, SEEN, IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.channels.health import ChannelHealth
from emaild.channels.imap.auth import PASSWORD_ENV, Credentials, MailboxProblem, utcnow
from emaild.classify import LOOP_HEADER, classify
from emaild.config import MailboxConfig, is_loopback
from emaild.errors import ConfigError, InputError, TransientError
from emaild.mime.parse import ParsedMessage, parse_message
from emaild.outbox.queue import enqueue, is_suppressed
from emaild.pipeline import Envelope, IngestResult, Outcome
from emaild.store.models import ImapCursor, QuarantineEntry

if TYPE_CHECKING:
    from emaild.app import App
    from emaild.daemon import Daemon

log = structlog.get_logger("emaild.imap")

# Log at error level (and say so in `emaild status`) from this many failed polls in a row.
ERROR_AFTER_FAILURES = 3
BACKOFF_FIRST_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 900.0
# One FETCH of sizes covers at most this many UIDs (keeps the command line short).
SIZE_FETCH_CHUNK = 1000
HEADER_KEEP_BYTES = 16384


class ImapUnavailable(TransientError):
    """The server could not be reached or dropped the connection: retry later."""


# --- configuration from a URL -----------------------------------------------------------
def mailbox_from_url(url: str, env: Mapping[str, str]) -> MailboxConfig:
    """A mailbox from ``imap[s]://USER@HOST[:PORT]/FOLDER[?key=value&...]``.

    The password comes from ``EMAILD_IMAP_PASSWORD`` (never the URL, which
    would show in ``ps``). Query keys are ``[[mailbox]]`` keys, e.g.
    ``tls=starttls``, ``routing_address=...``, ``after_store=delete``.
    ``imap://`` means plain IMAP on a loopback host and STARTTLS elsewhere.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("imap", "imaps"):
        raise ConfigError("use imap://USER@HOST:PORT/FOLDER or imaps://...", key="URL")
    if parts.password is not None:
        raise ConfigError("put the password in EMAILD_IMAP_PASSWORD, not in the URL", key="URL")
    host = parts.hostname or ""
    user = urllib.parse.unquote(parts.username or "")
    if not host or not user:
        raise ConfigError("the URL needs a user and a host: imap://USER@HOST/FOLDER", key="URL")
    try:
        port = parts.port or 0
    except ValueError:
        raise ConfigError("the URL's port is not a number", key="URL") from None
    folder = urllib.parse.unquote(parts.path.lstrip("/")) or "INBOX"
    # Plain IMAP only where nothing crosses a network: the loopback interface.
    loopback_mode = "plain" if is_loopback(host) else "starttls"
    tls = "implicit" if parts.scheme == "imaps" else loopback_mode
    data: dict[str, Any] = {
        "name": _url_name(user, host, port),
        "host": host,
        "port": port,
        "tls": tls,
        "user": user,
        "folders": [folder],
        "password": env.get(PASSWORD_ENV, ""),
    }
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        data[key] = _query_value(value)
    try:
        return MailboxConfig.model_validate(data, strict=False)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "URL"
        raise ConfigError(err["msg"].removeprefix("Value error, "), key=where) from None


def _url_name(user: str, host: str, port: int) -> str:
    # The cursor is kept under this name, so the same URL resumes where it stopped.
    raw = f"url-{user}-{host}-{port}" if port else f"url-{user}-{host}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:64]


def _query_value(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if re.fullmatch(r"\d+", value):
        return int(value)
    if re.fullmatch(r"\d+\.\d*", value):
        return float(value)
    return value


# --- connecting ---------------------------------------------------------------------
def describe(box: MailboxConfig) -> str:
    """``user@host:port (TLS mode)`` for messages; never the password."""
    mode = {"implicit": "implicit TLS", "starttls": "STARTTLS", "plain": "plain"}[box.tls]
    return f"{box.user}@{box.host}:{box.effective_port} ({mode})"


def connect(box: MailboxConfig, credentials: Credentials) -> IMAPClient:
    """A logged-in client. ``ImapUnavailable`` for network and TLS trouble,
    ``MailboxProblem`` for what the operator must fix (login refused, no STARTTLS)."""
    context = ssl.create_default_context(cafile=box.ca_file or None)
    port = box.effective_port
    try:
        client = IMAPClient(
            box.host,
            port=port,
            ssl=box.tls == "implicit",
            ssl_context=context,
            timeout=box.timeout_seconds,
        )
    except (OSError, IMAPClientError) as exc:
        raise ImapUnavailable(f"cannot connect to {box.host}:{port}: {_why(exc)}") from None
    try:
        if box.tls == "starttls":
            if not client.has_capability("STARTTLS"):
                raise MailboxProblem(box.name, f"{box.host}:{port} does not offer STARTTLS")
            client.starttls(context)
        credentials.login(client)
    except MailboxProblem:
        _close(client)
        raise
    except (OSError, IMAPClientError) as exc:
        _close(client)
        raise ImapUnavailable(f"{box.host}:{port}: {_why(exc)}") from None
    return client


def _close(client: IMAPClient | None) -> None:
    if client is None:
        return
    try:
        client.logout()
    except Exception:  # the connection is being dropped anyway
        with contextlib.suppress(Exception):
            client.shutdown()


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message} (set ca_file?)"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror})"
    text = str(exc).strip() or type(exc).__name__
    return text.replace("b'", "").replace('b"', "")


# --- one pass over a mailbox ----------------------------------------------------------
@dataclass
class PollSummary:
    """What one or more passes did; ``as_json`` is what ``emaild poll --json`` prints."""

    fetched: int = 0
    cases: int = 0
    appended: int = 0
    duplicates: int = 0
    quarantined: int = 0
    too_large: int = 0
    held: int = 0
    dropped: int = 0
    rejected: int = 0
    after_store_failed: int = 0
    uidvalidity_resets: int = 0

    def count(self, outcome: Outcome) -> None:
        """Count one stored outcome."""
        name = {
            Outcome.NEW_CASE: "cases",
            Outcome.APPENDED: "appended",
            Outcome.DUPLICATE: "duplicates",
            Outcome.QUARANTINED: "quarantined",
            Outcome.HELD: "held",
            Outcome.DROPPED: "dropped",
            Outcome.REJECTED: "rejected",
        }[outcome]
        setattr(self, name, getattr(self, name) + 1)

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
                    f"folder {folder!r} is missing and cannot be created: {_why(exc)}",
                ) from None

    def close(self) -> None:
        """Log out (best effort)."""
        client, self.client = self.client, None
        _close(client)

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
            raise ImapUnavailable(f"{describe(self.box)}: connection lost: {_why(exc)}") from None
        except IMAPClientError as exc:
            self.close()
            raise ImapUnavailable(f"{describe(self.box)}: {_why(exc)}") from None
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
                self.box.name, f"cannot open folder {folder!r}: {_why(exc)}"
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
                    error=_why(exc),
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


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def too_large_notice(
    parsed: ParsedMessage, *, from_address: str, size: int, limit: int, domain: str, now: datetime
) -> EmailMessage:
    """The "your message was too large" notice, marked as an automatic reply (RFC 3834)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = from_address
    msg["To"] = parsed.from_addr
    subject = _one_line(parsed.subject) or "(no subject)"
    msg["Subject"] = f"Message not received: too large ({subject})"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("emaild.too-large", domain=domain)
    if parsed.message_id:
        msg["In-Reply-To"] = f"<{parsed.message_id}>"
        msg["References"] = f"<{parsed.message_id}>"
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg[LOOP_HEADER] = from_address
    mib = 1024 * 1024
    sent = f", sent {format_datetime(parsed.date)}" if parsed.date else ""
    msg.set_content(
        f"Your message to {from_address} with the subject\n\n    {subject}\n\n"
        f"was not received{sent}: it is {size / mib:.1f} MB and we accept messages "
        f"up to {limit / mib:.1f} MB.\n\nPlease send it again with smaller or fewer "
        "attachments, or share large files as a link.\n\nThis is an automatic notice; "
        "it is sent once for this message.\n"
    )
    return msg


# --- serialised polls, health and backoff -------------------------------------------
class MailboxWorker:
    """Runs the polls of one mailbox, one at a time, and keeps its health.

    ``poll()`` is safe to call from any thread: a call while a poll runs
    returns at once (with ``again=True`` it asks the running poll for one
    more pass, so mail announced by IDLE mid-pass is not left waiting).
    """

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
        self.poller = MailboxPoller(app, box, credentials=credentials, progress=progress, stop=stop)
        self.health = ChannelHealth(f"imap:{box.name}", "imap")
        self._state = threading.Lock()
        self._busy = False
        self._pending = False
        self._failures = 0
        self._retry_at = 0.0
        self.last_error = ""

    @property
    def stop(self) -> threading.Event:
        return self.poller.stop

    def retry_in(self) -> float | None:
        """Seconds until a failing mailbox may be polled again; None when it is healthy."""
        if not self._failures:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def poll(self, *, again: bool = False, force: bool = False) -> PollSummary | None:
        """Poll until no new mail was announced meanwhile; None if skipped.

        Skipped while another poll runs, and during the backoff after failures
        (unless ``force``). Failures are recorded, logged and not raised.
        """
        with self._state:
            if self._busy:
                self._pending = self._pending or again
                return None
            if not force and time.monotonic() < self._retry_at:
                return None
            self._busy = True
        total = PollSummary()
        released = False
        try:
            while not released:
                with self._state:
                    self._pending = False
                total.merge(self.poller.poll_once())
                with self._state:
                    # Decide and release under one lock, or a wake could slip between.
                    if not self._pending or self.stop.is_set():
                        self._busy = False
                        released = True
            self._succeeded(total)
        except (ImapUnavailable, MailboxProblem, TransientError) as exc:
            self._failed(exc)
        finally:
            if not released:
                with self._state:
                    self._busy = False
            self.health.flush(self.app.db)
        return total

    def poll_or_raise(self) -> PollSummary:
        """One pass for ``emaild poll --once``: errors are raised, health recorded."""
        try:
            summary = self.poller.poll_once()
        except (ImapUnavailable, MailboxProblem, TransientError) as exc:
            self._failed(exc)
            self.health.flush(self.app.db)
            raise
        self._succeeded(summary)
        self.health.flush(self.app.db)
        return summary

    def _succeeded(self, summary: PollSummary) -> None:
        if self._failures:
            log.info("imap.recovered", mailbox=self.box.name, after_failures=self._failures)
        self._failures = 0
        self._retry_at = 0.0
        self.last_error = ""
        self.health.success()
        if summary.fetched or summary.uidvalidity_resets:
            log.info("imap.polled", mailbox=self.box.name, **summary.as_json())

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        delay = min(BACKOFF_FIRST_SECONDS * 2 ** (self._failures - 1), BACKOFF_MAX_SECONDS)
        self._retry_at = time.monotonic() + delay
        self.last_error = str(exc)
        self.health.failure(str(exc))
        fields = {
            "mailbox": self.box.name,
            "error": str(exc),
            "failures": self._failures,
            "retry_in_seconds": round(delay, 1),
        }
        # A refused login or a broken token source will not mend itself: loud at once.
        if self._failures >= ERROR_AFTER_FAILURES or isinstance(exc, MailboxProblem):
            log.error("imap.poll_failed", **fields)
        else:
            log.warning("imap.poll_failed", **fields)


# --- IDLE -------------------------------------------------------------------------
class IdleWatcher(threading.Thread):
    """Keeps a connection in IDLE on the mailbox's first folder and calls
    ``on_mail`` when the server announces new messages (EXISTS).

    The IDLE is re-issued every ``idle_reissue_seconds`` (servers drop it after
    30 minutes) and the connection re-established before an OAuth2 token
    lapses. Without IDLE support the thread ends: interval polling carries on.
    """

    def __init__(
        self,
        box: MailboxConfig,
        credentials: Credentials,
        on_mail: Callable[[], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"imap-idle-{box.name}", daemon=True)
        self.box = box
        self.credentials = credentials
        self.on_mail = on_mail
        self.stop_event = stop
        self.client: IMAPClient | None = None
        self.idling = threading.Event()  # set while an IDLE is in progress (tests wait on it)
        self.supported: bool | None = None
        self.idle_commands = 0  # IDLEs issued so far (re-issues included)

    def run(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            try:
                self.client = connect(self.box, self.credentials)
                if not self.client.has_capability("IDLE"):
                    self.supported = False
                    log.info("imap.idle_unsupported", mailbox=self.box.name)
                    return
                self.supported = True
                self.client.select_folder(self.box.folders[0], readonly=True)
                failures = 0
                self._idle(self.client)
            except (OSError, IMAPClientError, ImapUnavailable, MailboxProblem) as exc:
                if self.stop_event.is_set():
                    break
                failures += 1
                delay = min(BACKOFF_FIRST_SECONDS * 2 ** (failures - 1), BACKOFF_MAX_SECONDS)
                level = log.error if failures >= ERROR_AFTER_FAILURES else log.warning
                level(
                    "imap.idle_failed",
                    mailbox=self.box.name,
                    error=_why(exc),
                    retry_in_seconds=delay,
                )
                self.stop_event.wait(delay)
            finally:
                self.idling.clear()
                client, self.client = self.client, None
                _close(client)

    def _idle(self, client: IMAPClient) -> None:
        log.info("imap.idle_started", mailbox=self.box.name, folder=self.box.folders[0])
        fresh = True
        while not self.stop_event.is_set():
            started = time.monotonic()
            limit = self.box.idle_reissue_seconds
            deadline = self.credentials.session_deadline()
            if deadline is not None:
                to_deadline = (deadline - utcnow()).total_seconds()
                if to_deadline <= 0 and not fresh:
                    return  # log in again with a fresh token
                # A token the source does not refresh: retry each minute, not in a tight loop.
                limit = min(limit, max(to_deadline, 60.0))
            fresh = False
            client.idle()
            self.idle_commands += 1
            self.idling.set()
            try:
                while not self.stop_event.is_set():
                    left = limit - (time.monotonic() - started)
                    if left <= 0:
                        break
                    if _announces_mail(client.idle_check(timeout=min(left, 5.0))):
                        self.on_mail()
            finally:
                self.idling.clear()
            if self.stop_event.is_set():
                return
            # News that arrived while ending the IDLE comes with DONE's answer.
            if _announces_mail(client.idle_done()[1]):
                self.on_mail()

    def interrupt(self) -> None:
        """Wake the thread out of its IDLE wait (on shutdown)."""
        client = self.client
        if client is not None:
            with contextlib.suppress(OSError):
                client.socket().shutdown(socket.SHUT_RDWR)


def _announces_mail(responses: list[Any]) -> bool:
    return any(len(r) > 1 and r[1] == b"EXISTS" for r in responses)


# --- running: foreground (``emaild poll``) and inside the daemon -----------------------
class MailboxRunner:
    """Polls one mailbox in the foreground (``emaild poll`` without ``--once``):
    IDLE when possible, else every interval, until ``stop()``."""

    def __init__(
        self, app: App, box: MailboxConfig, *, credentials: Credentials | None = None
    ) -> None:
        self.app = app
        self.box = box
        self.stopping = threading.Event()
        self.wakeup = threading.Event()
        self.worker = MailboxWorker(app, box, credentials=credentials, stop=self.stopping)

    def stop(self) -> None:
        """End ``run`` soon (after the message in hand); safe from signal handlers."""
        self.stopping.set()
        self.wakeup.set()

    def run(self) -> None:
        """Poll until ``stop()``."""
        box, worker = self.box, self.worker
        watcher: IdleWatcher | None = None
        if box.idle:
            watcher = IdleWatcher(box, worker.poller.credentials, self.wakeup.set, self.stopping)
            watcher.start()
        try:
            while not self.stopping.is_set():
                self.wakeup.clear()
                worker.poll(again=True)
                retry = worker.retry_in()
                # After a failure, try again when the backoff ends, not an interval later.
                wait = box.poll_interval_seconds
                self.wakeup.wait(wait if retry is None else min(retry, wait))
        finally:
            self.stopping.set()
            if watcher is not None:
                watcher.interrupt()
                watcher.join(10)
            worker.poller.close()
            worker.health.flush(self.app.db)


class ImapComponent:
    """The daemon's IMAP part: a scheduled poll per mailbox plus its IDLE watcher.

    Polls run in this component's own threads (one per mailbox), not the
    daemon's worker pool, so a long catch-up never takes workers the SMTP
    listener needs, and never runs on the event loop.
    """

    name = "imap"

    def __init__(self, app: App) -> None:
        self.app = app
        self.stop_event = threading.Event()
        boxes = [box for box in app.config.mailbox if box.enabled]
        self.workers = [MailboxWorker(app, box, stop=self.stop_event) for box in boxes]
        self.watchers: list[IdleWatcher] = []
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, len(self.workers)), thread_name_prefix="emaild-imap"
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, daemon: Daemon) -> None:
        """Schedule each mailbox's poll (first one now) and start the IDLE watchers."""
        self.loop = asyncio.get_running_loop()
        for worker in self.workers:
            box = worker.box
            daemon.scheduler.add_job(
                self._poll,
                "interval",
                args=[worker, False],
                seconds=box.poll_interval_seconds,
                id=f"imap:{box.name}",
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(UTC),
                misfire_grace_time=None,
            )
            if box.idle:
                watcher = IdleWatcher(
                    box, worker.poller.credentials, self._waker(worker), self.stop_event
                )
                watcher.start()
                self.watchers.append(watcher)
            log.info("imap.mailbox_started", mailbox=box.name, server=describe(box), idle=box.idle)

    def _waker(self, worker: MailboxWorker) -> Callable[[], None]:
        def wake() -> None:  # runs in the watcher's thread
            loop = self.loop
            if loop is not None and not self.stop_event.is_set():
                loop.call_soon_threadsafe(self._spawn_poll, worker)

        return wake

    def _spawn_poll(self, worker: MailboxWorker) -> None:
        if self.loop is not None and not self.stop_event.is_set():
            task = self.loop.create_task(self._poll(worker, True))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _poll(self, worker: MailboxWorker, again: bool) -> None:
        if self.stop_event.is_set():
            return
        loop = asyncio.get_running_loop()
        try:
            summary = await loop.run_in_executor(self.executor, lambda: worker.poll(again=again))
        except RuntimeError:
            if not self.stop_event.is_set():  # only "executor shut down" is expected
                raise
            return
        retry = worker.retry_in()
        if summary is not None and retry is not None:
            # It failed: try again when the backoff ends, not a whole interval later.
            loop.call_later(retry + 0.01, self._spawn_poll, worker)

    async def stop(self) -> None:
        """Finish the message in hand, log out, stop the watchers."""
        self.stop_event.set()
        for watcher in self.watchers:
            watcher.interrupt()
        loop = asyncio.get_running_loop()

        def finish() -> None:
            for watcher in self.watchers:
                watcher.join(10)
            self.executor.shutdown(wait=True)
            for worker in self.workers:
                worker.poller.close()

        await loop.run_in_executor(None, finish)


def imap_component(app: App) -> ImapComponent | None:
    """The daemon's factory: a component when any mailbox is configured and enabled."""
    if not any(box.enabled for box in app.config.mailbox):
        return None
    return ImapComponent(app)
