"""The process's instruments: what the channels, the pipeline and the store count and time.

Every instrument lives in ``REGISTRY`` (not prometheus_client's global one),
with the process collector's facts (CPU, memory, open files, start time).
Hot paths call the small functions below; each looks up a label child bound
once (a dict hit) and does nothing at all when metrics are switched off
(``[metrics] enabled = false``, ``set_enabled``).

``emaild_messages_total`` is kept out of ``REGISTRY``: the scrape merges this
process's counts with those short-lived processes left in the spool
(``emaild.observe.spool``), so the pipe channel shows in the daemon's figures.

Under ``emaild run --workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR``
for its workers (``multiprocess_dir``): prometheus_client then keeps every
value in a per-process file there, and whichever worker answers a scrape
reports the sum over all of them (``emaild.observe.exposition``). A gauge
shows the most recent value any live worker set.
"""

from __future__ import annotations

import os
import threading
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# ``*_created`` series double the output and no dashboard here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY: Final = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Channels and outcomes bound up front, so every series exists (at 0) from the start.
CHANNELS = ("smtp", "lmtp", "imap", "pipe", "api", "import", "release", "quarantine")
OUTCOMES = (
    "new_case",
    "appended",
    "duplicate",
    "quarantined",
    "held",
    "dropped",
    "rejected",
    # Not stored: storage unavailable (the sender retries), unusable input.
    "tempfail",
    "invalid",
)
# Stages and commits take milliseconds; a slow rule or a busy disk, seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

MESSAGES: Final = Counter(
    "emaild_messages",
    "Messages handed to the pipeline, by channel and outcome.",
    ["channel", "outcome"],
    registry=None,
)
INGEST_SECONDS: Final = Histogram(
    "emaild_ingest_seconds",
    "Time for one message from the channel's hand-off to its durable outcome.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_SECONDS: Final = Histogram(
    "emaild_stage_seconds",
    "Time spent in each pipeline stage.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
SMTP_REPLIES: Final = Counter(
    "emaild_smtp_replies",
    "Replies sent by the SMTP/LMTP listeners, by listener kind and reply code.",
    ["kind", "code"],
    registry=REGISTRY,
)
DB_COMMIT_SECONDS: Final = Histogram(
    "emaild_db_commit_seconds",
    "Time of a database COMMIT (on SQLite one commit may carry several messages).",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
IMAP_BACKLOG: Final = Gauge(
    "emaild_imap_backlog_messages",
    "Messages waiting on the IMAP server, not yet stored, as of the mailbox's last poll.",
    ["mailbox"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
FORWARDING_OK: Final = Gauge(
    "emaild_forwarding_test_success",
    "1 when the last scheduled forwarding self-test came back, 0 when it failed.",
    ["address"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
FORWARDING_LAST_RUN: Final = Gauge(
    "emaild_forwarding_test_last_run_timestamp_seconds",
    "When the last scheduled forwarding self-test finished (Unix time).",
    ["address"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
FORWARDING_ROUND_TRIP: Final = Gauge(
    "emaild_forwarding_test_round_trip_seconds",
    "How long the last successful forwarding self-test took to come back.",
    ["address"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)

_on = True
_lock = threading.Lock()
_messages: dict[tuple[str, str], Counter] = {}
_ingest: dict[str, Histogram] = {}
_stages: dict[str, Histogram] = {}
_replies: dict[tuple[str, str], Counter] = {}


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory the worker processes share their values through, if any (read by
    prometheus_client once, when it is first imported)."""
    return os.environ.get(MULTIPROC_ENV) or None


def set_enabled(on: bool) -> None:
    """Count (the default) or not; ``[metrics] enabled``, applied at start and on reload."""
    global _on
    _on = on


def enabled() -> bool:
    return _on


def _bind_messages(channel: str) -> None:
    with _lock:
        for outcome in OUTCOMES:
            _messages.setdefault((channel, outcome), MESSAGES.labels(channel, outcome))
        _ingest.setdefault(channel, INGEST_SECONDS.labels(channel))


for _channel in CHANNELS:
    _bind_messages(_channel)
for _kind in ("smtp", "lmtp"):
    for _code in ("220", "221", "250", "354", "421", "451", "452", "550", "552", "554"):
        _replies[(_kind, _code)] = SMTP_REPLIES.labels(_kind, _code)


def message(channel: str, outcome: str, seconds: float) -> None:
    """One message handed to the pipeline ended in ``outcome`` after ``seconds``."""
    if not _on:
        return
    child = _messages.get((channel, outcome))
    if child is None:
        if outcome not in OUTCOMES:
            outcome = "invalid"
        _bind_messages(channel)
        child = _messages[(channel, outcome)]
    child.inc()
    _ingest[channel].observe(seconds)


def stage(name: str, seconds: float) -> None:
    """A pipeline stage took ``seconds``."""
    if not _on:
        return
    child = _stages.get(name)
    if child is None:
        with _lock:
            child = _stages.setdefault(name, STAGE_SECONDS.labels(name))
    child.observe(seconds)


def smtp_reply(kind: str, reply: str | bytes) -> None:
    """Count the replies in ``reply`` (several for LMTP's per-recipient answers)."""
    if not _on:
        return
    text = reply.decode("ascii", "replace") if isinstance(reply, bytes) else reply
    for line in text.split("\r\n"):
        # Only a reply's last line ("250 ok", not "250-PIPELINING") counts.
        if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] == "-"):
            continue
        key = (kind, line[:3])
        child = _replies.get(key)
        if child is None:
            with _lock:
                child = _replies.setdefault(key, SMTP_REPLIES.labels(*key))
        child.inc()


def commit(seconds: float) -> None:
    """A database commit took ``seconds``."""
    if _on:
        DB_COMMIT_SECONDS.observe(seconds)


def imap_backlog(mailbox: str, waiting: int) -> None:
    if _on:
        IMAP_BACKLOG.labels(mailbox).set(waiting)


def forwarding_test(address: str, *, ok: bool, finished: float, round_trip: float | None) -> None:
    """The result of a scheduled forwarding self-test (``finished``: Unix time)."""
    FORWARDING_OK.labels(address).set(1 if ok else 0)
    FORWARDING_LAST_RUN.labels(address).set(finished)
    if round_trip is not None:
        FORWARDING_ROUND_TRIP.labels(address).set(round_trip)


def local_message_counts() -> dict[tuple[str, str], float]:
    """This process's ``emaild_messages_total``, by (channel, outcome)."""
    out: dict[tuple[str, str], float] = {}
    for family in MESSAGES.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["channel"], sample.labels["outcome"])
                out[key] = out.get(key, 0.0) + sample.value
    return out
