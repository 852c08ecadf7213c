"""Tests of the scrape-time window gauges, each with a fresh registry."""

import math

from prometheus_client import CollectorRegistry

from stream.ingest.channels import ChannelClass
from stream.metrics.windows import (
    OTHER_TENANTS,
    TenantLabels,
    TenantSample,
    WindowCollector,
    WindowSample,
)
from stream.windows.counts import RESOLVED_BASE, WindowCounts
from stream.windows.spec import WindowSpec

FIVE_MINUTES = WindowSpec(name="5m", size_ms=300_000, step_ms=300_000)
ONE_HOUR = WindowSpec(name="1h", size_ms=3_600_000, step_ms=300_000)
END_MS = 1_748_873_100_000  # 2025-06-02T14:05:00Z
NOW_MS = END_MS + 90_000
ALL_TENANTS = "*"
SELF = int(ChannelClass.SELF_SERVICE)
ASSISTED = int(ChannelClass.ASSISTED)

WINDOW_SERIES = (
    "self_service_adoption_ratio",
    "self_service_interactions",
    "support_interactions",
    "self_service_resolved_interactions",
)


def counts(
    self_service: int = 0,
    assisted: int = 0,
    *,
    excluded: int = 0,
    unclassified: int = 0,
    resolved: int = 0,
) -> WindowCounts:
    """Build window sums with chatbot, phone, internal and fax_machine channels."""
    result = WindowCounts()
    slice_counts = {}
    if self_service:
        slice_counts[(SELF, "chatbot")] = self_service
    if assisted:
        slice_counts[(ASSISTED, "phone")] = assisted
    if excluded:
        slice_counts[(int(ChannelClass.EXCLUDED), "internal")] = excluded
    if unclassified:
        slice_counts[(int(ChannelClass.UNCLASSIFIED), "fax_machine")] = unclassified
    if resolved:
        slice_counts[(RESOLVED_BASE + SELF, "")] = resolved
    result.add_slice(slice_counts)
    return result


def collect(
    windows: list[WindowSample],
    *,
    max_tenants: int = 100,
    tenants: list[TenantSample] | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry()
    labels = TenantLabels(max_tenants, always=frozenset({ALL_TENANTS}))
    registry.register(
        WindowCollector(lambda: windows, lambda: tenants or [], labels, clock_ms=lambda: NOW_MS)
    )
    return registry


def value(registry: CollectorRegistry, name: str, tenant: str, window: str = "5m") -> float | None:
    return registry.get_sample_value(name, {"tenant": tenant, "window": window})


def all_samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
    ]


def test_collector_window_with_data() -> None:
    registry = collect([WindowSample("t1", FIVE_MINUTES, END_MS, counts(2, 1, resolved=1))])

    assert value(registry, "self_service_adoption_ratio", "t1") == 2 / 3
    assert value(registry, "self_service_interactions", "t1") == 2
    assert value(registry, "support_interactions", "t1") == 3
    assert value(registry, "self_service_resolved_interactions", "t1") == 1
    assert registry.get_sample_value(
        "support_channel_interactions",
        {"tenant": "t1", "window": "5m", "channel": "chatbot", "class": "self_service"},
    ) == 2
    assert registry.get_sample_value(
        "support_channel_interactions",
        {"tenant": "t1", "window": "5m", "channel": "phone", "class": "assisted"},
    ) == 1


def test_collector_empty_window_absent() -> None:
    registry = collect(
        [
            WindowSample("t1", FIVE_MINUTES, END_MS, counts(1, 1)),
            WindowSample("t2", FIVE_MINUTES, END_MS, counts(excluded=3, unclassified=2)),
            WindowSample("t3", FIVE_MINUTES, END_MS, counts()),
            WindowSample("t1", ONE_HOUR, END_MS, counts()),
        ]
    )
    samples = all_samples(registry)

    assert value(registry, "self_service_adoption_ratio", "t1") == 0.5
    for name in WINDOW_SERIES:
        assert value(registry, name, "t2") is None, name
        assert value(registry, name, "t3") is None, name
        assert value(registry, name, "t1", "1h") is None, name
    assert [sample for sample in samples if sample[1].get("tenant") in ("t2", "t3")] == []
    assert all(math.isfinite(sample[2]) for sample in samples)


def test_collector_folds_tenants_beyond_limit() -> None:
    registry = collect(
        [
            WindowSample("t1", FIVE_MINUTES, END_MS, counts(1, 0)),
            WindowSample("t2", FIVE_MINUTES, END_MS, counts(0, 2)),
            WindowSample("t3", FIVE_MINUTES, END_MS, counts(1, 0)),
            WindowSample("t4", FIVE_MINUTES, END_MS, counts(1, 3)),
        ],
        max_tenants=2,
    )

    assert value(registry, "support_interactions", "t1") == 1
    assert value(registry, "support_interactions", "t2") == 2
    assert value(registry, "support_interactions", "t3") is None
    assert value(registry, "support_interactions", "t4") is None
    assert value(registry, "self_service_interactions", OTHER_TENANTS) == 2
    assert value(registry, "support_interactions", OTHER_TENANTS) == 5
    assert value(registry, "self_service_adoption_ratio", OTHER_TENANTS) == 2 / 5
    assert registry.get_sample_value(
        "support_channel_interactions",
        {"tenant": OTHER_TENANTS, "window": "5m", "channel": "phone", "class": "assisted"},
    ) == 3


def test_collector_labels_stable_between_scrapes() -> None:
    samples = [WindowSample("t1", FIVE_MINUTES, END_MS, counts(1, 1))]
    registry = CollectorRegistry()
    labels = TenantLabels(1, always=frozenset({ALL_TENANTS}))
    registry.register(WindowCollector(lambda: samples, lambda: [], labels, clock_ms=lambda: NOW_MS))

    first = value(registry, "support_interactions", "t1")
    samples.insert(0, WindowSample("t2", FIVE_MINUTES, END_MS, counts(0, 4)))
    second = value(registry, "support_interactions", "t1")

    assert first == 2
    assert second == 2
    assert value(registry, "support_interactions", OTHER_TENANTS) == 4


def test_tenant_named_other_takes_no_label() -> None:
    registry = collect(
        [
            WindowSample(OTHER_TENANTS, FIVE_MINUTES, END_MS, counts(1, 1)),
            WindowSample("t1", FIVE_MINUTES, END_MS, counts(0, 3)),
            WindowSample("t2", FIVE_MINUTES, END_MS, counts(2, 0)),
        ],
        max_tenants=1,
    )

    assert value(registry, "support_interactions", "t1") == 3
    assert value(registry, "support_interactions", "t2") is None
    assert value(registry, "support_interactions", OTHER_TENANTS) == 4


def test_collector_all_tenants_never_folded() -> None:
    registry = collect(
        [
            WindowSample("t1", FIVE_MINUTES, END_MS, counts(1, 1)),
            WindowSample("t2", FIVE_MINUTES, END_MS, counts(2, 0)),
            WindowSample(ALL_TENANTS, FIVE_MINUTES, END_MS, counts(3, 1)),
        ],
        max_tenants=1,
    )

    assert value(registry, "support_interactions", "t1") == 2
    assert value(registry, "support_interactions", OTHER_TENANTS) == 2
    assert value(registry, "support_interactions", ALL_TENANTS) == 4
    assert value(registry, "self_service_adoption_ratio", ALL_TENANTS) == 3 / 4


def test_collector_all_tenants_with_no_tenant_slots() -> None:
    registry = collect(
        [
            WindowSample(ALL_TENANTS, FIVE_MINUTES, END_MS, counts(1, 1)),
            WindowSample("t1", FIVE_MINUTES, END_MS, counts(1, 0)),
        ],
        max_tenants=0,
    )

    assert value(registry, "support_interactions", ALL_TENANTS) == 2
    assert value(registry, "support_interactions", "t1") is None
    assert value(registry, "support_interactions", OTHER_TENANTS) == 1


def test_collector_newest_event_age() -> None:
    registry = collect(
        [],
        max_tenants=1,
        tenants=[
            TenantSample("t1", NOW_MS - 30_000),
            TenantSample("t2", NOW_MS - 50_000),
            TenantSample("t3", NOW_MS - 10_000),
        ],
    )

    assert registry.get_sample_value("adoption_newest_event_age_seconds", {"tenant": "t1"}) == 30
    assert registry.get_sample_value(
        "adoption_newest_event_age_seconds", {"tenant": OTHER_TENANTS}
    ) == 10
