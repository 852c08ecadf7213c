"""Prometheus metrics of the worker.

Counters and process-wide gauges live in :class:`WorkerMetrics`. The window
gauges (rate and counts per tenant and window) are computed at scrape time
from the counting state by :class:`stream.metrics.windows.WindowCollector`,
so a series exists only while its window contains data and its partition is
assigned to this worker.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge


class WorkerMetrics:
    """Counters and gauges updated by the agents."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumed = Counter(
            "adoption_events_consumed",
            "Records read from the input topics.",
            ["topic"],
            registry=registry,
        )
        self.reread = Counter(
            "adoption_records_reread",
            "Input records delivered again after a seek and skipped by offset.",
            ["topic"],
            registry=registry,
        )
        self.rejected = Counter(
            "adoption_events_rejected",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.late = Counter(
            "adoption_events_late",
            "Events that arrived after their window closed (included in rejected).",
            ["tenant"],
            registry=registry,
        )
        self.duplicates = Counter(
            "adoption_events_duplicate",
            "Events skipped because their event_id was already counted, or because they were "
            "read again from an input offset already taken after their window closed.",
            ["tenant"],
            registry=registry,
        )
        self.counted = Counter(
            "adoption_events_counted",
            "Events added to a window.",
            registry=registry,
        )
        self.published = Counter(
            "adoption_records_published",
            "Window records written to the output topic.",
            ["kind"],
            registry=registry,
        )
        self.changelog_records = Counter(
            "adoption_changelog_records_written",
            "Records written to the state changelog topic, tombstones included.",
            registry=registry,
        )
        self.event_time_lag = Gauge(
            "adoption_event_time_lag_seconds",
            "Wall-clock time minus the partition's event-time clock.",
            ["partition"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "adoption_consumer_lag_records",
            "Records between the consumer's position and the partition's end.",
            ["topic", "partition"],
            registry=registry,
        )
        self.ready = Gauge(
            "adoption_worker_ready",
            "1 while the worker has partitions assigned, has restored state and is consuming.",
            registry=registry,
        )
        self.remembered_ids = Gauge(
            "adoption_dedup_remembered_ids",
            "Event ids held in memory for de-duplication.",
            registry=registry,
        )
