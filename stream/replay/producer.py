"""Replay of a CSV or JSON-lines file to a Kafka topic, in event-time order.

The whole file is read and mapped first, because 311 exports are not in time
order. The events are then sorted by event time and produced with an
idempotent producer. The sort is stable, so rows with the same time keep their
file order.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tqdm import tqdm

from stream.errors import BrokerError, InputFileError, MappingError
from stream.replay.mapping import MappedEvent, SourceMapping, check_event
from stream.replay.reader import detect_format, read_csv_header, read_rows
from stream.timeutil import ms_to_rfc3339

logger = logging.getLogger(__name__)

KeyBy = Literal["tenant", "customer", "none"]

CLIENT_ID = "adoption-rate-replay"
# Maximum wait for a batch to fill, short so that a paced replay sends promptly.
LINGER_MS = 20
MAX_BATCH_BYTES = 256 * 1024
# Sends are awaited in groups of this many, which bounds the futures held in memory.
MAX_PENDING_SENDS = 10_000
# Skipped rows logged one by one for each reason. Further rows are only counted.
LOGGED_SKIPS_PER_REASON = 5


@dataclass
class ReplayReport:
    """Counts and event-time span of one replay."""

    source: str
    rows_read: int = 0
    events_produced: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    unmapped_channels: Counter[str] = field(default_factory=Counter)
    duplicate_event_ids: int = 0
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    elapsed_seconds: float = 0.0

    @property
    def rows_skipped(self) -> int:
        """Rows that were read but not mapped to an event."""
        return sum(self.skipped.values())

    def format(self) -> str:
        """Format the report as aligned lines for a terminal."""
        lines = [
            f"source:           {self.source}",
            f"rows read:        {self.rows_read}",
            f"events produced:  {self.events_produced}",
            f"rows skipped:     {self.rows_skipped}",
        ]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  {reason}: {count}")
        lines.append(f"first event time: {_format_ms(self.first_event_ms)}")
        lines.append(f"last event time:  {_format_ms(self.last_event_ms)}")
        lines.append(f"duplicate ids:    {self.duplicate_event_ids}")
        if self.unmapped_channels:
            lines.append("channel values missing from the mapping, sent normalised:")
            for raw, count in self.unmapped_channels.most_common():
                lines.append(f"  {raw!r}: {count}")
        lines.append(f"elapsed:          {self.elapsed_seconds:.1f} s")
        return "\n".join(lines)


def _format_ms(epoch_ms: int | None) -> str:
    return "-" if epoch_ms is None else ms_to_rfc3339(epoch_ms)


def load_events(
    path: Path, mapping: SourceMapping | None, *, limit: int | None = None
) -> tuple[list[MappedEvent], ReplayReport]:
    """Read and map the first ``limit`` records of a file and sort the events by event time.

    ``limit`` counts records in file order, before sorting. Without a mapping,
    the file must be JSON lines whose records are already events. Rows that
    cannot be mapped are counted by reason in the report and logged.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"invalid limit {limit}: must be 0 or more")
    file_format = detect_format(path)
    if mapping is None and file_format == "csv":
        raise InputFileError(
            f"missing mapping for {path}: CSV rows are not events, so pass --mapping NAME"
        )
    if mapping is not None and file_format == "csv":
        mapping.check_columns(read_csv_header(path), str(path))

    report = ReplayReport(source=str(path))
    events: list[MappedEvent] = []
    seen_ids: set[str] = set()
    for row in read_rows(path):
        if limit is not None and report.rows_read >= limit:
            break
        report.rows_read += 1
        if row.error is not None:
            _count_skip(report, path, row.number, row.error)
            continue
        try:
            if mapping is None:
                mapped = check_event(row.fields)
            else:
                mapped = mapping.map_row(row.fields)
        except MappingError as exc:
            _count_skip(report, path, row.number, exc)
            continue

        event_id = str(mapped.event["event_id"])
        if event_id in seen_ids:
            report.duplicate_event_ids += 1
        seen_ids.add(event_id)
        if mapped.unmapped_channel is not None:
            report.unmapped_channels[mapped.unmapped_channel] += 1
        events.append(mapped)

    events.sort(key=lambda item: item.occurred_at_ms)
    if events:
        report.first_event_ms = events[0].occurred_at_ms
        report.last_event_ms = events[-1].occurred_at_ms
    if report.skipped:
        logger.warning(
            "skipped %d of %d rows of %s: %s",
            report.rows_skipped, report.rows_read, path, dict(report.skipped),
        )
    if report.unmapped_channels:
        logger.warning(
            "channel values of %s missing from the mapping, sent normalised: %s",
            path, dict(report.unmapped_channels),
        )
    return events, report


def _count_skip(report: ReplayReport, path: Path, line: int, error: MappingError) -> None:
    report.skipped[error.reason] += 1
    if report.skipped[error.reason] <= LOGGED_SKIPS_PER_REASON:
        logger.warning("skipped %s line %d (%s): %s", path, line, error.reason, error)


def record_key(event: dict[str, Any], key_by: KeyBy) -> bytes | None:
    """Return the Kafka record key of an event: its tenant, its customer id, or none.

    An event without the chosen field gets no key, so the producer's
    partitioner spreads those events over the partitions.
    """
    if key_by == "none":
        return None
    value = event.get("tenant" if key_by == "tenant" else "customer_id")
    if value is None or value == "":
        return None
    return str(value).encode()


async def replay(
    path: Path | str,
    mapping: SourceMapping | None,
    bootstrap_servers: str,
    topic: str,
    *,
    speed: float | None = None,
    limit: int | None = None,
    key_by: KeyBy = "tenant",
    progress: bool = True,
) -> ReplayReport:
    """Produce the events of a file to ``topic`` in event-time order and return the counts.

    ``speed=None`` sends as fast as the broker accepts. A number paces the
    sends by event time: ``3600`` sends one hour of event time per second of
    wall time. ``limit`` caps the records read, in file order. Every send is
    acknowledged by all in-sync replicas before this returns.

    Example::

        report = await replay("sf311_cases_sample.csv", load_mapping("sf311"),
                              "127.0.0.1:9092", "support-interactions", speed=86_400)
    """
    if speed is not None and speed <= 0:
        raise ValueError(f"invalid speed {speed}: use a positive event-time speed-up, like 3600")
    started = time.monotonic()
    path = Path(path)
    events, report = load_events(path, mapping, limit=limit)
    if not events:
        logger.warning("no events to replay from %s", path)
        report.elapsed_seconds = time.monotonic() - started
        return report

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=CLIENT_ID,
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise BrokerError(
            f"failed to connect to Kafka at {bootstrap_servers}: {exc}. Start the broker "
            f"or pass the right address with --bootstrap-servers"
        ) from exc

    logger.info(
        "replaying %d events from %s to topic %s at %s (speed %s, key by %s)",
        len(events), path, topic, bootstrap_servers, speed or "max", key_by,
    )
    bar = tqdm(total=len(events), unit="event", desc=f"replay {path.name}", disable=not progress)
    try:
        await _wait_for_topic(producer, topic, bootstrap_servers)
        report.events_produced = await send_events(
            producer.send, topic, events, speed=speed, key_by=key_by, on_delivered=bar.update
        )
        await producer.flush()
    except KafkaError as exc:
        raise BrokerError(
            f"failed to produce to topic {topic} at {bootstrap_servers}: {exc!r}. "
            f"Check that the broker is running and the topic is writable"
        ) from exc
    finally:
        bar.close()
        await producer.stop()

    report.elapsed_seconds = time.monotonic() - started
    logger.info(
        "replayed %d events from %s to topic %s in %.1f s",
        report.events_produced, path, topic, report.elapsed_seconds,
    )
    return report


async def _wait_for_topic(producer: AIOKafkaProducer, topic: str, bootstrap_servers: str) -> None:
    try:
        partitions = await producer.partitions_for(topic)
    except KafkaError as exc:
        raise BrokerError(
            f"topic {topic} not found at {bootstrap_servers} ({exc!r}). Create it, enable "
            f"automatic topic creation on the broker, or pass another --topic"
        ) from exc
    logger.info("topic %s has %d partitions", topic, len(partitions))


SendFunction = Callable[..., Awaitable["asyncio.Future[Any]"]]


async def send_events(
    send: SendFunction,
    topic: str,
    events: list[MappedEvent],
    *,
    speed: float | None,
    key_by: KeyBy,
    on_delivered: Callable[[int], object] = lambda count: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """Send events in order, paced by event time when ``speed`` is set, and return the count.

    ``send`` is :meth:`AIOKafkaProducer.send`: it queues one record and returns
    the future of its delivery. Each group of sends is awaited before the next,
    so a delivery failure raises here. ``clock`` and ``sleep`` are parameters
    so tests can pace without waiting.
    """
    encoder = msgspec.json.Encoder()
    start_seconds = clock()
    first_ms = events[0].occurred_at_ms if events else 0
    pending: list[asyncio.Future[Any]] = []
    delivered = 0

    for item in events:
        if speed is not None:
            due_seconds = start_seconds + (item.occurred_at_ms - first_ms) / 1000 / speed
            delay_seconds = due_seconds - clock()
            if delay_seconds > 0:
                await sleep(delay_seconds)

        # NOTE: the record timestamp stays the send time. Event times years in the
        # past would make the broker delete the records at once under time retention.
        future = await send(
            topic, value=encoder.encode(item.event), key=record_key(item.event, key_by)
        )
        future.add_done_callback(lambda done: _report_delivery(done, on_delivered))
        pending.append(future)
        if len(pending) >= MAX_PENDING_SENDS:
            delivered += len(await asyncio.gather(*pending))
            pending.clear()

    delivered += len(await asyncio.gather(*pending))
    return delivered


def _report_delivery(future: "asyncio.Future[Any]", on_delivered: Callable[[int], object]) -> None:
    if not future.cancelled() and future.exception() is None:
        on_delivered(1)
