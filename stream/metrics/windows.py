"""Scrape-time gauges of the newest window of each size, per tenant.

For each tenant and window size the collector reports the newest window that
has ended by its partition's event-time clock. A window without classified
interactions exports no rate and no counts: absence, not zero, is how the
service says "no data". At most ``max_tenant_series`` tenants keep their own
label; the rest are summed under ``other``.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stream.ingest.channels import ChannelClass
from stream.timeutil import wall_clock_ms
from stream.windows.counts import WindowCounts
from stream.windows.spec import WindowSpec

OTHER_TENANTS = "other"


@dataclass(frozen=True, slots=True)
class WindowSample:
    """One tenant's newest ended window of one size."""

    tenant: str
    spec: WindowSpec
    end_ms: int
    counts: WindowCounts


@dataclass(frozen=True, slots=True)
class TenantSample:
    """One tenant's newest event time."""

    tenant: str
    newest_event_ms: int


@dataclass(slots=True)
class TenantLabels:
    """Assigns each tenant its own label until the limit, then ``other``.

    Tenants keep the label they got first, so a series never changes name
    while the process runs. The all-tenants figure always keeps its label. A
    tenant named ``other`` takes no label of its own: its counts are part of
    the ``other`` series, with those of the tenants beyond the limit.
    """

    max_tenants: int
    always: frozenset[str] = frozenset()
    assigned: set[str] = field(default_factory=set)

    def label(self, tenant: str) -> str:
        """Return the label value for a tenant."""
        if tenant in self.assigned or tenant in self.always:
            return tenant
        if tenant == OTHER_TENANTS:
            return OTHER_TENANTS
        if len(self.assigned) < self.max_tenants:
            self.assigned.add(tenant)
            return tenant
        return OTHER_TENANTS


# Name, help text and labels of each gauge family, in the order they are exported.
_WINDOW_LABELS = ["tenant", "window"]
_GAUGES = (
    (
        "self_service_adoption_ratio",
        "Self-service share of classified interactions in the newest ended window (0..1).",
        _WINDOW_LABELS,
    ),
    (
        "self_service_interactions",
        "Self-service interactions in the newest ended window.",
        _WINDOW_LABELS,
    ),
    (
        "support_interactions",
        "Self-service plus assisted interactions in the newest ended window.",
        _WINDOW_LABELS,
    ),
    (
        "self_service_resolved_interactions",
        "Self-service interactions marked resolved in the newest ended window.",
        _WINDOW_LABELS,
    ),
    (
        "support_channel_interactions",
        "Interactions per channel in the newest ended window.",
        [*_WINDOW_LABELS, "channel", "class"],
    ),
    (
        "adoption_newest_event_age_seconds",
        "Wall-clock seconds since the newest counted event of the tenant.",
        ["tenant"],
    ),
)


class WindowCollector(Collector):
    """Builds the per-tenant window gauges from the state at each scrape."""

    def __init__(
        self,
        windows: Callable[[], Iterable[WindowSample]],
        tenants: Callable[[], Iterable[TenantSample]],
        labels: TenantLabels,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._windows = windows
        self._tenants = tenants
        self._labels = labels
        self._clock_ms = clock_ms

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauge families without samples.

        The registry reads the collector's metric names from them. Without
        those names, ``/metrics?name[]=...`` cannot select these gauges.
        """
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauge families."""
        ratio, self_service, total, resolved, channels, newest_age = self._families()

        folded: dict[tuple[str, str], WindowCounts] = {}
        for sample in self._windows():
            key = (self._labels.label(sample.tenant), sample.spec.name)
            target = folded.get(key)
            if target is None:
                target = folded[key] = WindowCounts()
            target.add(sample.counts)

        for (tenant, window), counts in sorted(folded.items()):
            if counts.total == 0:
                continue
            labels = [tenant, window]
            ratio.add_metric(labels, counts.self_service / counts.total)
            self_service.add_metric(labels, counts.self_service)
            total.add_metric(labels, counts.total)
            resolved.add_metric(labels, counts.self_service_resolved)
            for channel, number in sorted(counts.channels.items()):
                channel_class = ChannelClass(counts.channel_classes[channel])
                if channel_class in (ChannelClass.SELF_SERVICE, ChannelClass.ASSISTED):
                    channels.add_metric([tenant, window, channel, channel_class.label], number)

        newest: dict[str, int] = {}
        for tenant_sample in self._tenants():
            label = self._labels.label(tenant_sample.tenant)
            newest[label] = max(newest.get(label, tenant_sample.newest_event_ms),
                                tenant_sample.newest_event_ms)
        now_ms = self._clock_ms()
        for label, newest_ms in sorted(newest.items()):
            newest_age.add_metric([label], max(0.0, (now_ms - newest_ms) / 1000))

        yield from (ratio, self_service, total, resolved, channels, newest_age)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        """Return new, empty gauge families, in the order ``collect`` yields them."""
        return tuple(
            GaugeMetricFamily(name, documentation, labels=labels)
            for name, documentation, labels in _GAUGES
        )
