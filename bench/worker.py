"""Contender (b): the worker as shipped, run as ``python -m stream worker``, read through /metrics."""

import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import Contender
from stream.broker.process import free_ports

DEFAULT_WINDOWS = "5m/1m,1h/5m,24h/1h"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9eE+.\-]+|NaN)$", re.M)


def parse_metrics(text: str) -> dict[str, float]:
    """Return samples of the exposition text, summed over their labels, by metric name.

    ``name{label="value"}`` keys are kept as well, so callers can read one series.
    """
    values: dict[str, float] = {}
    for name, labels, number in _SAMPLE.findall(text):
        value = float(number)
        values[name] = values.get(name, 0.0) + value
        if labels:
            values[name + labels] = value
    return values


@dataclass
class WorkerContender:
    """A worker process with its own app id, topics, web port and data folder."""

    bootstrap_servers: str
    app_id: str
    input_topic: str
    workdir: Path
    windows: str = DEFAULT_WINDOWS
    extra_environment: Mapping[str, str] = field(default_factory=dict)
    # Worker processes of the app id; more than one runs bench.worker_group.
    processes: int = 1
    web_ports: list[int] = field(default_factory=list)
    scrape_interval_seconds: float = 0.5
    full_scrape_interval_seconds: float = 15.0
    history: list[tuple[float, float, float]] = field(default_factory=list)
    scrape_seconds: list[float] = field(default_factory=list)
    full_scrapes: int = 0
    _last_full_scrape: float = field(default=float("-inf"), repr=False)

    def __post_init__(self) -> None:
        if not self.web_ports:
            self.web_ports = free_ports(self.processes)

    @property
    def web_port(self) -> int:
        """Return the web port of the first worker process."""
        return self.web_ports[0]

    @property
    def output_topic(self) -> str:
        return f"{self.app_id}-out"

    @property
    def changelog_topics(self) -> list[str]:
        return [f"{self.app_id}-journal-changelog", f"{self.app_id}-all-tenants-changelog"]

    def contender(self, name: str = "b") -> Contender:
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("ADOPTION_", "KAFKA_"))
        }
        environment = {
            **inherited,
            "ADOPTION_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "ADOPTION_APP_ID": self.app_id,
            "ADOPTION_INPUT_TOPICS": self.input_topic,
            "ADOPTION_OUTPUT_TOPIC": self.output_topic,
            "ADOPTION_DEAD_LETTER_TOPIC": f"{self.app_id}-dlq",
            "ADOPTION_ALERTS_TOPIC": f"{self.app_id}-alerts",
            "ADOPTION_WEB_PORT": str(self.web_port),
            "BENCH_WORKER_WEB_PORTS": ",".join(str(port) for port in self.web_ports),
            "ADOPTION_DATA_DIR": str(self.workdir / "data"),
            "ADOPTION_WINDOWS": self.windows,
            **self.extra_environment,
        }
        module = "stream" if self.processes == 1 else "bench.worker_group"
        command = [sys.executable, "-m", module] + (["worker"] if self.processes == 1 else [])
        return Contender(
            name=name,
            command=command,
            environment=environment,
            log_path=self.workdir / "worker.log",
        )

    def http_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback only
                f"http://127.0.0.1:{self.web_port}{path}", timeout=2
            ) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return None

    def metrics(self, names: tuple[str, ...] = ()) -> dict[str, float] | None:
        """Return the parsed /metrics, or None unless the worker returns 200.

        With ``names``, only those series are asked for (``name[]`` parameters).
        With several worker processes the values are summed over the processes
        that respond, and None means that none responded.
        """
        query = "&".join(f"name[]={name}" for name in names)
        started = time.monotonic()
        summed: dict[str, float] | None = None
        for port in self.web_ports:
            try:
                with urllib.request.urlopen(  # noqa: S310 - loopback only
                    f"http://127.0.0.1:{port}/metrics" + (f"?{query}" if query else ""),
                    timeout=10,
                ) as response:
                    body = response.read().decode()
            except (urllib.error.URLError, OSError):
                continue
            summed = summed if summed is not None else {}
            for name, value in parse_metrics(body).items():
                summed[name] = summed.get(name, 0.0) + value
        if summed is not None and not names:
            self.scrape_seconds.append(time.monotonic() - started)
        return summed

    def counted(self) -> int | None:
        """Return ``adoption_events_counted_total``; keep consumed too.

        It polls those two series at most once per ``scrape_interval_seconds``
        and returns the last value in between. Once per
        ``full_scrape_interval_seconds`` it scrapes the whole of /metrics, as
        Prometheus would, so the cost of the per-tenant gauges is measured too.
        """
        if self.history and time.time() - self.history[-1][0] < self.scrape_interval_seconds:
            return int(self.history[-1][2])
        if time.monotonic() - self._last_full_scrape >= self.full_scrape_interval_seconds:
            values = self.metrics()
            if values is not None:
                self._last_full_scrape = time.monotonic()
                self.full_scrapes += 1
        else:
            values = self.metrics(("adoption_events_counted_total",
                                   "adoption_events_consumed_total"))
        if values is None:
            return None
        counted = values.get("adoption_events_counted_total", 0.0)
        consumed = values.get("adoption_events_consumed_total", 0.0)
        self.history.append((time.time(), consumed, counted))
        return int(counted)

    def interval(self, target: int) -> tuple[float | None, float | None]:
        """Estimate when consuming started and when ``target`` events were counted.

        Each is the midpoint between the last scrape before the change and the
        first after it, so each is off by at most half the scrape interval.
        """
        start = end = None
        previous: tuple[float, float, float] | None = None
        for sample in self.history:
            at, consumed, counted = sample
            if start is None and consumed > 0:
                start = (previous[0] + at) / 2 if previous else at
            if end is None and counted >= target:
                end = (previous[0] + at) / 2 if previous else at
            previous = sample
        return start, end

    def wait_for_quiet(self, metric: str, quiet_seconds: float, timeout_seconds: float) -> float:
        """Wait until ``metric`` is above 0 and has not changed for ``quiet_seconds``."""
        deadline = time.monotonic() + timeout_seconds
        last_value = -1.0
        changed_at = time.monotonic()
        while time.monotonic() < deadline:
            value = (self.metrics() or {}).get(metric, 0.0)
            if value != last_value:
                last_value, changed_at = value, time.monotonic()
            elif value > 0 and time.monotonic() - changed_at >= quiet_seconds:
                break
            time.sleep(0.5)
        return last_value
