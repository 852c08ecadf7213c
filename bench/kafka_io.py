"""Kafka look-ups of the bench: end offsets by topic prefix, and reading a topic whole."""

import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def topics_with_prefix(bootstrap_servers: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        return sorted(name for name in await admin.list_topics() if name.startswith(prefix))
    finally:
        await admin.close()


async def end_offsets(bootstrap_servers: str, topics: list[str]) -> dict[str, int]:
    """Return, per topic, the sum of its partitions' end offsets (records ever written)."""
    if not topics:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        missing = [topic for topic in topics if not consumer.partitions_for_topic(topic)]
        if missing:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
            partitions = [
                TopicPartition(topic, partition)
                for topic in topics
                for partition in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    totals = dict.fromkeys(topics, 0)
    for tp, offset in ends.items():
        totals[tp.topic] += offset
    return totals


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    handle: Callable[[Any], None],
    *,
    timeout_seconds: float = 600.0,
) -> int:
    """Pass every record of ``topic`` up to its current end offsets to ``handle``; return the count."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    count = 0
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
        partitions = [
            TopicPartition(topic, partition)
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        deadline = time.monotonic() + timeout_seconds
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=1_000, max_records=50_000)
            for records in batch.values():
                for record in records:
                    handle(record)
                    count += 1
            # The position, not the last record's offset, because compaction and
            # transaction markers leave offsets without records.
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        if remaining:
            raise TimeoutError(f"reading {topic} timed out with partitions {remaining} unread")
    finally:
        await consumer.stop()
    return count
