"""Contender (b): the worker as shipped, run as ``python -m stream worker``, read through /metrics."""

import asyncio
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.kafka_io import end_offsets
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
    web_port: int = field(default_factory=lambda: free_ports(1)[0])
    history: list[tuple[float, float, float]] = field(default_factory=list)
    offsets: "OffsetProgress | None" = None
    progress_source: str | None = None

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
            "ADOPTION_DATA_DIR": str(self.workdir / "data"),
            "ADOPTION_WINDOWS": self.windows,
            **self.extra_environment,
        }
        return Contender(
            name=name,
            command=[sys.executable, "-m", "stream", "worker"],
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

    def metrics(self) -> dict[str, float] | None:
        """Return the parsed /metrics, or None unless the worker answers 200."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback only
                f"http://127.0.0.1:{self.web_port}/metrics", timeout=10
            ) as response:
                return parse_metrics(response.read().decode())
        except (urllib.error.URLError, OSError):
            return None

    def counted(self) -> int | None:
        """Return how many input records the worker has counted, and keep consumed too.

        This reads ``adoption_events_counted_total`` from /metrics. While
        /metrics does not answer 200, it falls back to committed offsets, see
        :class:`OffsetProgress`.
        """
        values = self.metrics()
        if values is not None:
            counted = values.get("adoption_events_counted_total", 0.0)
            consumed = values.get("adoption_events_consumed_total", 0.0)
            self.progress_source = "metrics"
        else:
            if self.offsets is None:
                self.offsets = OffsetProgress(self.bootstrap_servers, self.app_id,
                                              self.input_topic)
            progress = self.offsets.read()
            if progress is None:
                return None
            consumed, counted = progress
            self.progress_source = "committed offsets"
        self.history.append((time.time(), consumed, counted))
        return int(counted)

    def close(self) -> None:
        if self.offsets is not None:
            self.offsets.close()
            self.offsets = None

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

    def wait_for_quiet(
        self, metric: str, topics: list[str], quiet_seconds: float, timeout_seconds: float
    ) -> float:
        """Wait until ``metric`` is above 0 and has not changed for ``quiet_seconds``.

        Where /metrics does not answer, the sum of the end offsets of ``topics``
        stands in for the metric.
        """
        deadline = time.monotonic() + timeout_seconds
        last_value = -1.0
        changed_at = time.monotonic()
        while time.monotonic() < deadline:
            values = self.metrics()
            if values is not None:
                value = values.get(metric, 0.0)
            else:
                value = float(sum(asyncio.run(end_offsets(self.bootstrap_servers, topics)).values()))
            if value != last_value:
                last_value, changed_at = value, time.monotonic()
            elif value > 0 and time.monotonic() - changed_at >= quiet_seconds:
                break
            time.sleep(0.5)
        return last_value

class OffsetProgress:
    """Progress of a worker read from its consumer group's committed offsets.

    ``consumed`` is the committed offset sum of the input topic. ``counted``
    equals the input records once the input is committed to its end and the
    counting agent has committed the internal ``<app id>-by-tenant`` topic up
    to the end offsets it had at that moment; until then it is the consumed
    count minus one, so a target is not reached early. Faust commits every
    ``commit_interval`` (1 s by default), so both trail the work by up to that.
    """

    def __init__(self, bootstrap_servers: str, app_id: str, input_topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.app_id = app_id
        self.input_topic = input_topic
        self.loop = asyncio.new_event_loop()
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.by_tenant_target: dict[TopicPartition, int] | None = None

    def read(self) -> tuple[int, int] | None:
        try:
            return self.loop.run_until_complete(self._read())
        except KafkaError:
            return None

    async def _read(self) -> tuple[int, int] | None:
        if self.admin is None:
            self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
            await self.admin.start()
            self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers,
                                             enable_auto_commit=False)
            await self.consumer.start()
        assert self.consumer is not None
        committed = await self.admin.list_consumer_group_offsets(self.app_id)
        by_tenant = f"{self.app_id}-by-tenant"
        inputs = {tp: meta.offset for tp, meta in committed.items() if tp.topic == self.input_topic}
        consumed = sum(max(offset, 0) for offset in inputs.values())
        if not inputs:
            return 0, 0
        input_ends = await self.consumer.end_offsets(
            [TopicPartition(self.input_topic, partition) for partition in
             sorted(self.consumer.partitions_for_topic(self.input_topic) or range(4))]
        )
        if self.by_tenant_target is None:
            if any(inputs.get(tp, 0) < end for tp, end in input_ends.items()):
                return consumed, consumed - 1
            await self.consumer._client.force_metadata_update()  # noqa: SLF001
            partitions = [TopicPartition(by_tenant, partition) for partition in
                          sorted(self.consumer.partitions_for_topic(by_tenant) or ())]
            self.by_tenant_target = await self.consumer.end_offsets(partitions)
        done = all(
            committed.get(tp) is not None and committed[tp].offset >= end
            for tp, end in self.by_tenant_target.items()
        )
        return consumed, consumed if done else consumed - 1

    def close(self) -> None:
        async def stop() -> None:
            if self.consumer is not None:
                await self.consumer.stop()
            if self.admin is not None:
                await self.admin.close()

        self.loop.run_until_complete(stop())
        self.loop.close()
