"""``GET /metrics``: the process's instruments plus the figures read at scrape time.

The text is ``REGISTRY``'s families (``emaild.observe.metrics``) followed by
those built here for each scrape: ``emaild_messages_total`` (this process's
counts plus the spooled ones of ``emaild ingest``/``import``), and the
database figures of ``emaild.observe.figures``. When the database cannot be
read, ``emaild_database_up`` is 0 and the database figures are left out (a
missing series, not a misleading zero).

In a worker of ``emaild run --workers N`` (``metrics.multiprocess_dir``) the
instruments are those of all workers, summed from their files
(prometheus_client's multiprocess mode), and the process_* series are left
out: they would describe whichever worker took the scrape.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from emaild.errors import TransientError
from emaild.observe import metrics, spool
from emaild.observe.figures import Figures, FiguresCache

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Scrape:
    """What one scrape reads: the cached database figures and the spool file."""

    cache: FiguresCache
    spool_file: Path


def render(scrape: Scrape) -> bytes:
    """The whole ``/metrics`` body (blocking: run it off the event loop)."""
    try:
        figures: Figures | None = scrape.cache.get()
    except TransientError:
        figures = None
    registry = CollectorRegistry(auto_describe=False)
    spooled = spool.read_counts(scrape.spool_file)
    shared = metrics.multiprocess_dir()
    if shared is None:
        registry.register(_ScrapeCollector(figures, spooled, metrics.local_message_counts()))
        return generate_latest(metrics.REGISTRY) + generate_latest(registry)
    workers = _WorkersCollector(shared)
    registry.register(workers)
    registry.register(_ScrapeCollector(figures, spooled, workers.message_counts))
    return generate_latest(registry)


class _WorkersCollector(Collector):
    """Every worker's instruments, summed; ``emaild_messages`` kept aside for merging."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.message_counts: dict[tuple[str, str], float] = {}

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        for metric in MultiProcessCollector(None, self.path).collect():  # type: ignore[no-untyped-call]
            if metric.name != "emaild_messages":
                yield metric
                continue
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["channel"], sample.labels["outcome"])
                    self.message_counts[key] = self.message_counts.get(key, 0.0) + sample.value


class _ScrapeCollector(Collector):
    def __init__(
        self,
        figures: Figures | None,
        spooled: dict[tuple[str, str], float],
        counts: dict[tuple[str, str], float],
    ) -> None:
        self.figures = figures
        self.spooled = spooled
        # This process's counts, or (with workers) filled in by the collector before.
        self.counts = counts

    def collect(self) -> Iterable[Metric]:
        counts = dict(self.counts)
        for key, value in self.spooled.items():
            counts[key] = counts.get(key, 0.0) + value
        messages = CounterMetricFamily(
            "emaild_messages",
            "Messages handed to the pipeline, by channel and outcome.",
            labels=["channel", "outcome"],
        )
        for (channel, outcome), value in sorted(counts.items()):
            messages.add_metric([channel, outcome], value)
        yield messages
        up = GaugeMetricFamily(
            "emaild_database_up", "1 when the database answered the last scrape's queries."
        )
        up.add_metric([], 0 if self.figures is None else 1)
        yield up
        if self.figures is not None:
            yield from _database_families(self.figures)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _database_families(f: Figures) -> Iterable[Metric]:
    outbox = _gauge("emaild_outbox_messages", "Outbox items by status.", ["status"])
    for status, n in sorted(f.outbox.items()):
        outbox.add_metric([status], n)
    yield outbox
    age = _gauge(
        "emaild_outbox_oldest_queued_age_seconds",
        "Age of the oldest queued outbox item (0 when none is queued).",
    )
    age.add_metric([], (f.taken_at - f.oldest_queued).total_seconds() if f.oldest_queued else 0.0)
    yield age
    hooks = _gauge("emaild_webhook_deliveries", "Webhook deliveries by status.", ["status"])
    for status, n in sorted(f.webhooks.items()):
        hooks.add_metric([status], n)
    yield hooks
    hook_age = _gauge(
        "emaild_webhook_oldest_pending_age_seconds",
        "Age of the oldest pending webhook delivery (0 when none is pending).",
    )
    oldest = f.oldest_webhook
    hook_age.add_metric([], (f.taken_at - oldest).total_seconds() if oldest else 0.0)
    yield hook_age
    quarantine = _gauge(
        "emaild_quarantine_held_messages", "Quarantine entries held, by reason.", ["reason"]
    )
    for reason, n in sorted(f.quarantine_held.items()):
        quarantine.add_metric([reason], n)
    yield quarantine
    held = _gauge("emaild_held_messages", "Messages held (an unverified address, a policy hold).")
    held.add_metric([], f.held_messages)
    yield held
    blobs = _gauge(
        "emaild_blob_bytes",
        "Bytes in the blob store the database refers to, by kind.",
        ["kind"],
    )
    for kind, n in sorted(f.blob_bytes.items()):
        blobs.add_metric([kind], n)
    yield blobs
    yield from _channel_families(f)


def _channel_families(f: Figures) -> Iterable[Metric]:
    labels = ["channel", "kind"]
    up = _gauge("emaild_channel_up", "1 when the channel's last attempt worked.", labels)
    success = _gauge(
        "emaild_channel_last_success_timestamp_seconds",
        "When the channel last worked (Unix time).",
        labels,
    )
    failure = _gauge(
        "emaild_channel_last_failure_timestamp_seconds",
        "When the channel last failed (Unix time).",
        labels,
    )
    failing = _gauge(
        "emaild_channel_failing_seconds",
        "How long the channel has been failing without a success (0 when it works).",
        labels,
    )
    for c in f.channels:
        key = [c.name, c.kind]
        up.add_metric(key, 0 if c.consecutive_failures else 1)
        if c.last_success is not None:
            success.add_metric(key, c.last_success.timestamp())
        if c.last_failure is not None:
            failure.add_metric(key, c.last_failure.timestamp())
        failing.add_metric(key, c.failing_for(f.taken_at))
    yield from (up, success, failure, failing)
