"""Helpers for integration tests: a worker in its own process, and Kafka I/O.

The worker runs as ``python -m stream worker`` so tests can kill it with
SIGKILL and start it again, as an operator's supervisor would.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from stream.broker.admin import create_topics
from stream.broker.process import free_ports
from stream.worker import messages

READY_TIMEOUT_SECONDS = 120.0

# Short timers, so windows close within seconds of a test's last event.
FAST_SETTINGS = {
    "ADOPTION_IDLE_TIMEOUT_MS": "3s",
    "ADOPTION_TICK_INTERVAL_MS": "300ms",
    "ADOPTION_BATCH_WITHIN_MS": "100ms",
    "ADOPTION_COMMIT_INTERVAL_MS": "500ms",
    "ADOPTION_PUBLISH_INTERVAL_MS": "500ms",
    "ADOPTION_LOG_LEVEL": "INFO",
}


@dataclass
class Deployment:
    """Topic names and settings shared by the workers of one test."""

    bootstrap_servers: str
    app_id: str
    input_topic: str
    output_topic: str
    dead_letter_topic: str
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        bootstrap_servers: str,
        name: str,
        workdir: Path,
        *,
        input_partitions: int = 4,
        settings: Mapping[str, str] | None = None,
    ) -> "Deployment":
        """Create the deployment's topics and return it."""
        deployment = cls(
            bootstrap_servers=bootstrap_servers,
            app_id=name,
            input_topic=f"{name}-in",
            output_topic=f"{name}-out",
            dead_letter_topic=f"{name}-dlq",
            workdir=workdir,
            settings={**FAST_SETTINGS, **(settings or {})},
        )
        asyncio.run(
            create_topics(
                bootstrap_servers,
                {
                    deployment.input_topic: input_partitions,
                    deployment.output_topic: 1,
                    deployment.dead_letter_topic: 1,
                    f"{name}-alerts": 1,
                },
            )
        )
        return deployment

    def environment(self, web_port: int, index: int) -> dict[str, str]:
        """Return the environment of one worker process."""
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "ADOPTION_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "ADOPTION_APP_ID": self.app_id,
            "ADOPTION_INPUT_TOPICS": self.input_topic,
            "ADOPTION_OUTPUT_TOPIC": self.output_topic,
            "ADOPTION_DEAD_LETTER_TOPIC": self.dead_letter_topic,
            "ADOPTION_ALERTS_TOPIC": f"{self.app_id}-alerts",
            "ADOPTION_WEB_PORT": str(web_port),
            "ADOPTION_DATA_DIR": str(self.workdir / f"worker-{index}-data"),
            **self.settings,
        }


class WorkerProcess:
    """One ``adoption-rate worker`` process."""

    _count = 0

    def __init__(self, deployment: Deployment, **extra_env: str) -> None:
        WorkerProcess._count += 1
        self.index = WorkerProcess._count
        self.deployment = deployment
        self.web_port = free_ports(1)[0]
        self.log_path = deployment.workdir / f"worker-{self.index}.log"
        self.environment = {**deployment.environment(self.web_port, self.index), **extra_env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_ready: bool = True) -> "WorkerProcess":
        """Start the process and, by default, wait until /readyz returns 200."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"],
            env=self.environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until the worker reports ready, failing with its log when it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.http_status("/readyz") == 200:
                return
            time.sleep(0.3)
        raise AssertionError(f"worker not ready within {timeout} s:\n{self.log_tail()}")

    def http_status(self, path: str) -> int | None:
        """Return the HTTP status of ``path``, or ``None`` when nothing listens on the port."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback only
                f"http://127.0.0.1:{self.web_port}{path}", timeout=2
            ) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return None

    def metrics_text(self, query: str = "") -> str:
        """Return the body of /metrics, with a query string such as ``?name[]=...`` if given."""
        with urllib.request.urlopen(  # noqa: S310 - loopback only
            f"http://127.0.0.1:{self.web_port}/metrics{query}", timeout=5
        ) as response:
            return str(response.read().decode())

    def kill(self) -> None:
        """Kill the worker with SIGKILL, as a crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the worker with SIGTERM, then SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def is_running(self) -> bool:
        """Tell whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """Return the end of the worker's log."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def event(event_id: str, tenant: str, channel: str, occurred_at: str | int, **extra: Any) -> bytes:
    """Return one interaction event as JSON bytes."""
    body = {"event_id": event_id, "tenant": tenant, "channel": channel, "occurred_at": occurred_at}
    body.update(extra)
    return json.dumps(body).encode()


def produce(
    bootstrap_servers: str,
    topic: str,
    values: Iterable[bytes | None],
    *,
    key: bytes | None = None,
    partition: int | None = None,
    keys: Iterable[bytes | None] | None = None,
) -> None:
    """Produce values in order, each acknowledged before the next is sent."""

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
        await producer.start()
        try:
            key_list = list(keys) if keys is not None else None
            for number, value in enumerate(values):
                record_key = key_list[number] if key_list is not None else key
                await producer.send_and_wait(topic, value, key=record_key, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(run())


def consume_until(
    bootstrap_servers: str,
    topics: list[str],
    done: Callable[[list[ConsumerRecord]], bool],
    *,
    timeout: float = 90.0,
) -> list[ConsumerRecord]:
    """Read the topics from the start until ``done(records)`` or the timeout; return all records."""

    async def run() -> list[ConsumerRecord]:
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for partition_records in batch.values():
                    records.extend(partition_records)
                if done(records):
                    break
        finally:
            await consumer.stop()
        return records

    return asyncio.run(run())


def decode_records(records: Iterable[ConsumerRecord]) -> list[dict[str, Any]]:
    """Decode output records as JSON objects."""
    return [json.loads(record.value) for record in records if record.value is not None]


def final_records(records: Iterable[ConsumerRecord]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Return the final output records by (tenant, window, window_end); the latest wins."""
    finals: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in decode_records(records):
        if record["final"]:
            finals[(record["tenant"], record["window"], record["window_end"])] = record
    return finals


def has_final(tenant: str, window: str, end: str) -> Callable[[list[ConsumerRecord]], bool]:
    """Return a predicate: a final record for the tenant, window name and end exists."""

    def check(records: list[ConsumerRecord]) -> bool:
        return (tenant, window, end) in final_records(records)

    return check


def headers_of(record: ConsumerRecord) -> dict[str, str]:
    """Return a dead-letter record's headers as text."""
    return {name: value.decode() for name, value in record.headers}


# Scenarios of the hard-case and recovery tests

DAY = "2025-06-02"
COUNTING_PARTITIONS = 4
SELF_SERVICE_CHANNELS = ("knowledge_base", "faq", "chatbot", "community")
ASSISTED_CHANNELS = ("email", "phone", "live_chat", "ticket")
PACER_TENANT = "pacer"
WAIT_SECONDS = 120.0


# Times


def at(clock: str) -> str:
    """Return an RFC 3339 time on the test day, like ``2025-06-02T08:00:10Z``."""
    return f"{DAY}T{clock}Z"


def epoch_ms(clock: str) -> int:
    """Return epoch milliseconds of a UTC time of day on the test day."""
    return int(datetime.fromisoformat(at(clock)).timestamp() * 1000)


def rfc3339(epoch_ms: int) -> str:
    """Return epoch milliseconds as the output records write them."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def stamp(clock: str) -> str:
    """Return a time of day as the output records write it, like ``2025-06-02T08:05:00.000Z``."""
    return f"{DAY}T{clock}.000Z"


# Kafka I/O


@dataclass(frozen=True)
class Sent:
    """One produced record: its bytes and where the broker stored it."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


Outgoing = tuple[int | None, bytes | None, bytes | None]  # (partition, key, value)


def send(
    bootstrap_servers: str,
    topic: str,
    records: Sequence[Outgoing],
    *,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> list[Sent]:
    """Produce records in order, each with ``headers``, and return where each landed.

    Records are sent without waiting for each acknowledgement, so thousands
    go out in a few batches. The producer keeps the order within a partition.
    """

    async def run() -> list[Sent]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [
                await producer.send(topic, value, key=key, partition=partition, headers=headers)
                for partition, key, value in records
            ]
            metadata = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return [
            Sent(key, value, meta.partition, meta.offset)
            for (_, key, value), meta in zip(records, metadata, strict=True)
        ]

    return asyncio.run(run())


def read_all(
    bootstrap_servers: str,
    topic: str,
    *,
    timeout: float = 60.0,
    isolation_level: str = "read_committed",
) -> list[ConsumerRecord]:
    """Read every record of a topic up to its current end, by default committed ones only."""

    async def run() -> list[ConsumerRecord]:
        # Without a group id the consumer is assigned every partition of the topic.
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
        )
        await consumer.start()
        records: list[ConsumerRecord] = []
        try:
            deadline = time.monotonic() + timeout
            while not consumer.assignment() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            partitions = sorted(consumer.assignment())
            assert partitions, f"topic {topic} not found"
            ends = await consumer.end_offsets(partitions)
            while time.monotonic() < deadline:
                positions = {tp: await consumer.position(tp) for tp in partitions}
                if all(positions[tp] >= ends[tp] for tp in partitions):
                    break
                batch = await consumer.getmany(timeout_ms=500)
                for partition_records in batch.values():
                    records.extend(partition_records)
        finally:
            await consumer.stop()
        return records

    return asyncio.run(run())


def pacers(clock: str, name: str, partitions: int = 4) -> list[Outgoing]:
    """Return one event of the pacer tenant per input partition, all at ``clock``.

    The worker's input watermark is the oldest, over its input partitions, of
    the newest event time read, so an event on every partition moves it.
    """
    return [
        (
            partition,
            f"{name}-{partition}".encode(),
            event(f"{name}-{partition}", PACER_TENANT, "email", at(clock)),
        )
        for partition in range(partitions)
    ]


def counting_partition(tenant: str, partitions: int = COUNTING_PARTITIONS) -> int:
    """Return the partition of the repartition topic that counts ``tenant``."""
    return messages.counting_partition(tenant, partitions)


# Output records


def window_records(
    records: Sequence[ConsumerRecord], tenant: str, window: str, end: str
) -> list[dict[str, Any]]:
    """Return every output record of one tenant, window name and end, in order."""
    return [
        record
        for record in decode_records(records)
        if (record["tenant"], record["window"], record["window_end"]) == (tenant, window, end)
    ]


def finals_of(
    records: Sequence[ConsumerRecord], tenant: str, window: str, end: str
) -> list[dict[str, Any]]:
    """Return every final output record of one tenant, window name and end."""
    return [record for record in window_records(records, tenant, window, end) if record["final"]]


def has_finals(*keys: tuple[str, str, str]) -> Callable[[list[ConsumerRecord]], bool]:
    """Return a predicate: every (tenant, window, end) has a final record."""

    def check(records: list[ConsumerRecord]) -> bool:
        found = {
            (record["tenant"], record["window"], record["window_end"])
            for record in decode_records(records)
            if record["final"]
        }
        return set(keys) <= found

    return check


def counts_of(record: dict[str, Any]) -> tuple[int, int]:
    """Return (self-service, total) of an output record."""
    return record["self_service"], record["total"]


# Metrics


@dataclass(frozen=True)
class Sample:
    """One sample of a /metrics scrape."""

    name: str
    labels: dict[str, str]
    value: float


def scrape(worker: WorkerProcess) -> list[Sample]:
    """Return every sample of the worker's /metrics."""
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(worker.metrics_text())
        for sample in family.samples
    ]


def values_of(samples: Sequence[Sample], name: str, **labels: str) -> list[float]:
    """Return the values of the samples named ``name`` whose labels include ``labels``."""
    return [
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def counter_value(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """Return one counter's value, or 0 when the labelled series was never incremented."""
    values = values_of(samples, name, **labels)
    assert len(values) <= 1, f"{name}{labels} has {len(values)} series: {values}"
    return values[0] if values else 0.0


def rate_values(samples: Sequence[Sample], tenant: str, window: str = "5m") -> list[float]:
    """Return the ``self_service_adoption_ratio`` samples of one tenant and window."""
    return values_of(samples, "self_service_adoption_ratio", tenant=tenant, window=window)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
    """Poll ``condition`` and return whether it became true before the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)


def partition_clocks_ms(worker: WorkerProcess) -> dict[int, float]:
    """Return each counting partition's event-time clock, read from the lag gauge."""
    samples = scrape(worker)
    now_ms = time.time() * 1000
    return {
        int(sample.labels["partition"]): now_ms - sample.value * 1000
        for sample in samples
        if sample.name == "adoption_event_time_lag_seconds"
    }


def wait_for_clock(
    worker: WorkerProcess, clock: str, *, partitions: int = COUNTING_PARTITIONS
) -> None:
    """Wait until every counting partition's clock has reached ``clock`` on the test day.

    The worker refreshes the lag gauge every 5 s, so the clock read from it
    may run a few seconds ahead. Callers pass the time of the newest event
    they produced, and every earlier clock value is minutes behind it, so
    that error cannot pass for the target. A clock that has jumped to the
    wall clock fails at once, because the input went idle and the scenario's
    arrival order no longer holds.
    """
    target_ms = epoch_ms(clock)
    tolerance_ms = 2_000
    day_ms = 86_400_000
    clocks: dict[int, float] = {}

    def reached() -> bool:
        nonlocal clocks
        clocks = partition_clocks_ms(worker)
        jumped = {p: c for p, c in clocks.items() if c > target_ms + day_ms}
        assert not jumped, f"partition clocks {jumped} moved to the wall clock before {clock}"
        return len(clocks) == partitions and all(
            value >= target_ms - tolerance_ms for value in clocks.values()
        )

    assert wait_until(reached, timeout=60), (
        f"partition clocks {clocks} (epoch ms) did not reach {at(clock)}:\n{worker.log_tail()}"
    )
