"""Generated interaction events, produced fast to a fresh topic, and their true counts.

The events follow the input-event contract: ``event_id``, ``occurred_at``
(RFC 3339 with ``Z``), ``channel``, ``tenant``, ``customer_id``, ``segment``
and ``resolved``, about 195 bytes each. Event time rises evenly over the span,
and each event is moved back by up to ``DISORDER_MS`` so the stream is in order
only up to 30 s. Records are keyed by tenant.

After the events, one flush event per partition is appended with an event
time 26 hours past the last event. It closes every window of every contender:
the worker's watermark passes it, and Quix Streams' ``final()`` with the
``partition`` closing strategy closes windows when partition time moves. Its
tenants start with ``FLUSH_TENANT_PREFIX`` and are left out of every
comparison.
"""

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from stream.broker.admin import create_topics

PARTITIONS = 4
DISORDER_MS = 30_000
SPAN_MS = 3 * 3_600_000
# The load ends this long before the wall clock, so the flush events, which
# are 26 h later than the last event, are still in the past.
LOAD_ENDS_BEFORE_NOW_MS = 27 * 3_600_000
FLUSH_AFTER_LAST_MS = 26 * 3_600_000
FLUSH_TENANT_PREFIX = "bench-flush-"

SELF_SERVICE_MIX = {"knowledge_base": 15, "faq": 10, "chatbot": 10, "community": 5}
ASSISTED_MIX = {"email": 20, "phone": 15, "live_chat": 15, "ticket": 10}
SELF_SERVICE_CHANNELS = frozenset(SELF_SERVICE_MIX)
SEGMENTS = ("smb", "mid_market", "enterprise")

BATCH_BYTES = 1_000_000
MAX_BATCHES_IN_FLIGHT = 32


@dataclass
class Load:
    """A loaded topic and the true counts that contenders are compared against."""

    topic: str
    events: int
    tenants: int
    start_ms: int
    span_ms: int
    flush_events: int
    load_seconds: float
    truth: dict[str, list[int]] = field(default_factory=dict)

    @property
    def target(self) -> int:
        """Return how many records a contender must count: the events plus the flush events."""
        return self.events + self.flush_events

    def to_json(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "events": self.events,
            "tenants": self.tenants,
            "start_ms": self.start_ms,
            "span_ms": self.span_ms,
            "flush_events": self.flush_events,
            "load_seconds": self.load_seconds,
            "events_per_second": self.events / self.load_seconds if self.load_seconds else None,
            "truth": self.truth,
        }


def rfc3339_ms(epoch_ms: int) -> str:
    """Format epoch milliseconds as ``2026-12-03T14:07:12.345Z``."""
    moment = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def tenant_names(count: int) -> list[str]:
    return [f"tenant-{number:04d}" for number in range(count)]


def encode_event(
    event_id: str, occurred_at_ms: int, channel: str, tenant: str, customer: int, segment: str,
    resolved: bool,
) -> bytes:
    """Return one input event as compact JSON, built by hand because json.dumps is slower."""
    return (
        f'{{"event_id":"{event_id}","occurred_at":"{rfc3339_ms(occurred_at_ms)}",'
        f'"channel":"{channel}","tenant":"{tenant}","customer_id":"cust-{customer:07d}",'
        f'"segment":"{segment}","resolved":{"true" if resolved else "false"}}}'
    ).encode()


def partition_of(key: bytes, partitions: int = PARTITIONS) -> int:
    """Return the partition the Java client and aiokafka pick for a key (murmur2)."""
    return int(DefaultPartitioner()(key, list(range(partitions)), list(range(partitions))))


class BatchSender:
    """Append records to one batch per partition and send full batches, several in flight."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
        self.producer = producer
        self.topic = topic
        self.batches = [producer.create_batch() for _ in range(partitions)]
        self.in_flight: list[asyncio.Future[object]] = []

    async def append(self, partition: int, key: bytes, value: bytes) -> None:
        batch = self.batches[partition]
        if batch.append(key=key, value=value, timestamp=None) is None:
            await self._send(partition)
            self.batches[partition].append(key=key, value=value, timestamp=None)

    async def _send(self, partition: int) -> None:
        batch = self.batches[partition]
        self.batches[partition] = self.producer.create_batch()
        self.in_flight.append(await self.producer.send_batch(batch, self.topic, partition=partition))
        if len(self.in_flight) >= MAX_BATCHES_IN_FLIGHT:
            await asyncio.gather(*self.in_flight)
            self.in_flight.clear()

    async def flush(self) -> None:
        for partition, batch in enumerate(self.batches):
            if batch.record_count():
                await self._send(partition)
        await asyncio.gather(*self.in_flight)
        self.in_flight.clear()


async def load_topic(
    bootstrap_servers: str,
    topic: str,
    events: int,
    *,
    tenants: int = 1_000,
    seed: int = 1,
    span_ms: int = SPAN_MS,
    flush: bool = True,
    ends_before_now_ms: int = LOAD_ENDS_BEFORE_NOW_MS,
) -> Load:
    """Create ``topic`` with 4 partitions and produce ``events`` events, then the flush events.

    Without ``flush`` the windows stay open, as in a service that has
    processed a history and waits for more. ``ends_before_now_ms`` places the
    last event that long before the wall clock.
    """
    await create_topics(bootstrap_servers, {topic: PARTITIONS})
    now_ms = time.time_ns() // 1_000_000
    start_ms = now_ms - ends_before_now_ms - span_ms
    start_ms -= start_ms % 60_000
    generator = random.Random(seed)
    names = tenant_names(tenants)
    # A mildly skewed tenant mix: tenant i has weight 1 / sqrt(i + 1).
    tenant_weights = [1 / (rank + 1) ** 0.5 for rank in range(tenants)]
    keys = [name.encode() for name in names]
    partitions = [partition_of(key) for key in keys]
    channels = list(SELF_SERVICE_MIX) + list(ASSISTED_MIX)
    channel_weights = list(SELF_SERVICE_MIX.values()) + list(ASSISTED_MIX.values())
    truth = {name: [0, 0] for name in names}
    started = time.monotonic()

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        max_batch_size=BATCH_BYTES,
        max_request_size=4 * BATCH_BYTES,
    )
    await producer.start()
    try:
        sender = BatchSender(producer, topic, PARTITIONS)
        chunk = 50_000
        for first in range(0, events, chunk):
            size = min(chunk, events - first)
            tenant_picks = generator.choices(range(tenants), weights=tenant_weights, k=size)
            channel_picks = generator.choices(channels, weights=channel_weights, k=size)
            for offset in range(size):
                number = first + offset
                tenant_index = tenant_picks[offset]
                tenant = names[tenant_index]
                channel = channel_picks[offset]
                occurred_at_ms = (
                    start_ms + number * span_ms // events - generator.randrange(DISORDER_MS)
                )
                value = encode_event(
                    f"ev-{seed}-{number:010d}",
                    occurred_at_ms,
                    channel,
                    tenant,
                    generator.randrange(10_000_000),
                    SEGMENTS[number % 3],
                    generator.random() < 0.7,
                )
                counts = truth[tenant]
                counts[0] += 1
                if channel in SELF_SERVICE_CHANNELS:
                    counts[1] += 1
                await sender.append(partitions[tenant_index], keys[tenant_index], value)

        # Every event is acknowledged before the flush events are sent, so
        # each flush event is the last record of its partition.
        await sender.flush()
        flush_ms = start_ms + span_ms + FLUSH_AFTER_LAST_MS
        for partition in range(PARTITIONS if flush else 0):
            tenant = f"{FLUSH_TENANT_PREFIX}{partition}"
            value = encode_event(
                f"flush-{seed}-{partition}", flush_ms, "faq", tenant, 0, "smb", False
            )
            await sender.append(partition, tenant.encode(), value)
        await sender.flush()
    finally:
        await producer.stop()

    return Load(
        topic=topic,
        events=events,
        tenants=tenants,
        start_ms=start_ms,
        span_ms=span_ms,
        flush_events=PARTITIONS if flush else 0,
        load_seconds=time.monotonic() - started,
        truth=truth,
    )
