"""Writing the worker's records to Kafka in per-partition batches.

Faust's ``Topic.send`` builds a message object, a future and a callback chain
for every record. The counting stage writes about one output record per input
event when windows are small and tenants many, and on that path the per-record
machinery cost more CPU than the counting itself. :class:`RecordWriter` fills
the Kafka client's record batches directly and waits once per call for the
broker's acknowledgement of all of them.
"""

import asyncio
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

# Upper bound of one client-side record batch. Internal and journal records
# are at most about 512 KiB, and the broker's default limit on a batch is 1 MiB.
MAX_BATCH_BYTES = 1024 * 1024 - 64 * 1024


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to produce.

    Without ``partition``, a keyed record goes where Kafka's default
    partitioner puts its key, and an unkeyed one to any partition.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None = None
    partition: int | None = None


@functools.lru_cache(maxsize=65_536)
def key_partition(key: bytes, partitions: int) -> int:
    """Return the partition Kafka's default partitioner picks for ``key``: murmur2, as the Java client."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def new_producer(bootstrap_servers: str, **options: Any) -> AIOKafkaProducer:
    """Return an unstarted producer of acknowledged, idempotent writes in large batches."""
    return AIOKafkaProducer(
        bootstrap_servers=[server.strip() for server in bootstrap_servers.split(",")],
        acks="all",
        enable_idempotence=True,
        max_batch_size=MAX_BATCH_BYTES,
        max_request_size=MAX_BATCH_BYTES + 64 * 1024,
        **options,
    )


async def send_in_batches(
    producer: AIOKafkaProducer, records: Iterable[OutgoingRecord]
) -> list["asyncio.Future[Any]"]:
    """Queue ``records`` in one client batch per topic partition; return the delivery futures.

    Records to one partition keep their order. Without a partition, a keyed
    record goes where Kafka's default partitioner puts its key, and unkeyed
    ones are spread over the partitions.
    """
    builders: dict[tuple[str, int], Any] = {}
    deliveries: list[asyncio.Future[Any]] = []
    partition_counts: dict[str, int] = {}
    unkeyed = 0
    for record in records:
        partition = record.partition
        if partition is None:
            partitions = partition_counts.get(record.topic)
            if partitions is None:
                partitions = len(await producer.partitions_for(record.topic))
                partition_counts[record.topic] = partitions
            if record.key is None:
                partition = unkeyed % partitions
                unkeyed += 1
            else:
                partition = key_partition(record.key, partitions)
        destination = (record.topic, partition)
        builder = builders.get(destination)
        if builder is None:
            builder = builders[destination] = producer.create_batch()
        headers = record.headers or []
        if builder.append(timestamp=None, key=record.key, value=record.value,
                          headers=headers) is None:
            # The batch is full: send it and start the next with this record.
            deliveries.append(await producer.send_batch(builder, record.topic,
                                                        partition=partition))
            builder = builders[destination] = producer.create_batch()
            builder.append(timestamp=None, key=record.key, value=record.value, headers=headers)
    for (topic, partition), builder in builders.items():
        deliveries.append(await producer.send_batch(builder, topic, partition=partition))
    return deliveries


class RecordWriter:
    """A producer of acknowledged writes outside transactions, started on first use.

    The producer starts on the first write, so agents and timers can write as
    soon as Faust runs them; :meth:`stop` closes it.
    """

    def __init__(self, bootstrap_servers: str, *, client_id: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        # The Kafka client binds to the running event loop, so it is made on start.
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def write(self, records: Iterable[OutgoingRecord]) -> None:
        """Send ``records`` and return once the broker has acknowledged every one.

        A failed delivery raises the Kafka client's error.
        """
        producer = self._producer or await self._start()
        deliveries = await send_in_batches(producer, records)
        if deliveries:
            await asyncio.gather(*deliveries)

    async def stop(self) -> None:
        """Close the producer, if it started."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def _start(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = new_producer(self._bootstrap_servers, client_id=self._client_id)
                await producer.start()
                self._producer = producer
            return self._producer
