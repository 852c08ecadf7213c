"""Comparison of each contender's counts with the true counts of the load.

Two checks, per tenant (flush tenants left out):

* totals: all events and self-service events over the whole load. The
  aiokafka loop reports them from its minute buckets. For a windowed
  contender they are the largest window of the 24h/1h size: the load spans
  3 hours, so one 24-hour window contains every event of a tenant.
* window sums: for each window size, the counts summed over all of the
  tenant's windows equal size/step times the totals, because every event lies
  in exactly size/step windows. This fails if any window is missing, counted
  twice or cut short.

A window's count is its final record where the contender emits one, else the
newest provisional record.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.workload import FLUSH_TENANT_PREFIX

# Window name -> how many windows of that size contain one instant (size / step).
WINDOWS_PER_INSTANT = {"5m": 5, "1h": 12, "24h": 24}
COVERING_WINDOW = "24h"


@dataclass
class WindowAggregate:
    """A tenant's counts over all its windows of one size."""

    sum_total: int = 0
    sum_self_service: int = 0
    max_total: int = 0
    max_self_service: int = 0


@dataclass
class WindowTable:
    """The newest counts per (window name, tenant, window end)."""

    counts: dict[tuple[str, str, float], tuple[int, int, bool]] = field(default_factory=dict)

    def add(self, window: str, tenant: str, end: float, total: int, self_service: int,
            final: bool) -> None:
        """Keep a record unless a final one for the same window is already kept."""
        key = (window, tenant, end)
        kept = self.counts.get(key)
        if kept is not None and kept[2] and not final:
            return
        self.counts[key] = (total, self_service, final)

    def aggregates(self) -> dict[str, dict[str, WindowAggregate]]:
        result: dict[str, dict[str, WindowAggregate]] = {}
        for (window, tenant, _), (total, self_service, _) in self.counts.items():
            aggregate = result.setdefault(window, {}).setdefault(tenant, WindowAggregate())
            aggregate.sum_total += total
            aggregate.sum_self_service += self_service
            aggregate.max_total = max(aggregate.max_total, total)
            aggregate.max_self_service = max(aggregate.max_self_service, self_service)
        return result


def _real_tenants(truth: Mapping[str, list[int]]) -> dict[str, list[int]]:
    return {tenant: counts for tenant, counts in truth.items() if counts[0] > 0}


def check_totals(truth: Mapping[str, list[int]], totals: Mapping[str, list[int]]) -> dict[str, Any]:
    """Compare per-tenant [total, self-service] pairs with the truth."""
    expected = _real_tenants(truth)
    reported = {
        tenant: list(counts)
        for tenant, counts in totals.items()
        if not tenant.startswith(FLUSH_TENANT_PREFIX)
    }
    wrong = sorted(
        tenant for tenant in expected.keys() | reported.keys()
        if expected.get(tenant) != reported.get(tenant)
    )
    return {
        "tenants": len(expected),
        "tenants_wrong": len(wrong),
        "examples": [[tenant, expected.get(tenant), reported.get(tenant)] for tenant in wrong[:5]],
    }


def check_windows(truth: Mapping[str, list[int]], table: WindowTable) -> dict[str, Any]:
    """Run the totals check on the 24h windows and the window-sum check on every size."""
    aggregates = table.aggregates()
    covering = aggregates.get(COVERING_WINDOW, {})
    result: dict[str, Any] = {
        "windows_compared": len(table.counts),
        "totals": check_totals(
            truth,
            {tenant: [agg.max_total, agg.max_self_service] for tenant, agg in covering.items()},
        ),
    }
    expected = _real_tenants(truth)
    for window, per_instant in WINDOWS_PER_INSTANT.items():
        by_tenant = aggregates.get(window, {})
        wrong = []
        for tenant, (total, self_service) in expected.items():
            aggregate = by_tenant.get(tenant, WindowAggregate())
            if (aggregate.sum_total, aggregate.sum_self_service) != (
                per_instant * total,
                per_instant * self_service,
            ):
                wrong.append(tenant)
        result[f"window_sums_{window}"] = {"tenants_wrong": len(wrong), "examples": wrong[:5]}
    return result


def passed(check: Mapping[str, Any]) -> bool:
    """Tell whether every part of a check result found no wrong tenant."""
    if "tenants_wrong" in check:
        return check["tenants_wrong"] == 0 and check.get("tenants", 1) > 0
    parts = [value for value in check.values() if isinstance(value, Mapping)]
    return bool(parts) and all(passed(part) for part in parts)


def add_worker_record(table: WindowTable, record: Mapping[str, Any]) -> None:
    """Add one output record of the worker, unless it is for a flush tenant or all tenants."""
    tenant = record["tenant"]
    if tenant.startswith(FLUSH_TENANT_PREFIX) or tenant == "*":
        return
    table.add(record["window"], tenant, record["window_end"], record["total"],
              record["self_service"], record["final"])


def quix_table(records: Iterable[tuple[str, dict[str, Any]]]) -> WindowTable:
    """Return the window counts of the Quix Streams peer's final records (key, value)."""
    table = WindowTable()
    for tenant, value in records:
        if tenant.startswith(FLUSH_TENANT_PREFIX):
            continue
        table.add(value["window"], tenant, value["end"], value["total"], value["self_service"],
                  True)
    return table


def faust_table(windows: Mapping[str, list[list[Any]]]) -> WindowTable:
    """Return the window counts of the Faust peer's table dump."""
    self_service: dict[tuple[str, str, float], int] = {}
    totals: dict[tuple[str, str, float], int] = {}
    for window, rows in windows.items():
        for key, _start, end, value in rows:
            tenant, _, suffix = str(key).partition("|")
            target = self_service if suffix else totals
            target[(window, tenant, round(end))] = value
    table = WindowTable()
    for (window, tenant, end), total in totals.items():
        if not tenant.startswith(FLUSH_TENANT_PREFIX):
            table.add(window, tenant, end, total, self_service.get((window, tenant, end), 0), True)
    return table
