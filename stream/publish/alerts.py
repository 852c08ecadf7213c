"""Drop detection in the stream, for platforms that do not run Prometheus.

Each final window record of the watched window size is checked against two
rules, with the same volume guard as the Prometheus alert rules: the rate
below a floor, and the rate fallen by a fraction against the mean of the same
tenant's previous final windows. An alert record is published when a rule
starts to hold and again when it stops.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from stream.timeutil import ms_to_rfc3339
from stream.windows.counts import WindowCounts

SCHEMA_VERSION = 1
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class AlertRules:
    """Thresholds of the in-stream alerts."""

    window: str
    floor: float
    min_interactions: int
    drop_fraction: float
    baseline_windows: int


@dataclass(slots=True)
class _TenantHistory:
    rates: deque[float]
    active: set[str] = field(default_factory=set)
    last_end_ms: int = -(2**62)


class AlertDetector:
    """Keeps recent final rates per tenant and decides when alerts start and stop."""

    def __init__(self, rules: AlertRules) -> None:
        self.rules = rules
        self._history: dict[str, _TenantHistory] = {}

    def check(
        self, tenant: str, window: str, end_ms: int, counts: WindowCounts, *, now_ms: int
    ) -> list[dict[str, Any]]:
        """Take one final window and return the alert records it starts or resolves."""
        rules = self.rules
        if window != rules.window:
            return []
        history = self._history.get(tenant)
        if history is None:
            history = self._history[tenant] = _TenantHistory(deque(maxlen=rules.baseline_windows))
        if end_ms <= history.last_end_ms:
            return []
        history.last_end_ms = end_ms

        rate = counts.rate
        enough = rate is not None and counts.total >= rules.min_interactions
        baseline = (
            sum(history.rates) / len(history.rates)
            if len(history.rates) == rules.baseline_windows
            else None
        )
        holding = {
            "rate_below_floor": enough and rate is not None and rate < rules.floor,
            "rate_dropped": enough
            and rate is not None
            and baseline is not None
            and rate < baseline * (1 - rules.drop_fraction),
        }
        thresholds = {
            "rate_below_floor": rules.floor,
            "rate_dropped": baseline * (1 - rules.drop_fraction) if baseline is not None else None,
        }

        records: list[dict[str, Any]] = []
        for alert, holds in holding.items():
            if holds and alert not in history.active:
                history.active.add(alert)
                state = "started"
            elif not holds and alert in history.active and enough:
                history.active.discard(alert)
                state = "resolved"
            else:
                continue
            records.append(
                {
                    "schema_version": SCHEMA_VERSION,
                    "alert": alert,
                    "state": state,
                    "tenant": tenant,
                    "window": window,
                    "window_end": ms_to_rfc3339(end_ms),
                    "rate": rate,
                    "baseline": baseline,
                    "threshold": thresholds[alert],
                    "total": counts.total,
                    "at": ms_to_rfc3339(now_ms),
                }
            )
        if enough and rate is not None:
            history.rates.append(rate)
        return records

    def forget(self, tenants: set[str]) -> None:
        """Drop the history of tenants whose partition left this worker."""
        for tenant in tenants:
            self._history.pop(tenant, None)


def encode_alert(record: dict[str, Any]) -> bytes:
    """Serialise an alert record as compact JSON."""
    return _encoder.encode(record)
