"""Offset look-ups on the worker's own event loop.

Faust's consumer runs ``highwaters`` and ``earliest_offsets`` in its
consumer thread, whose method queue also carries the fetch loop's long polls
of up to a second. A look-up there often took over a second, so the tick timer
overran its interval and an ingest batch with an idle input partition waited
as long. :class:`OffsetReader` reads them from the broker with a client of its own.
"""

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP


class OffsetReader:
    """A consumer without group or assignment that reads partitions' first and end offsets.

    It starts on first use. With ``isolation_level="read_committed"`` the end
    offset is the last stable offset, as for the worker's consumer in
    exactly-once mode.
    """

    def __init__(self, bootstrap_servers: str, *, client_id: str, isolation_level: str) -> None:
        self._bootstrap_servers = [server.strip() for server in bootstrap_servers.split(",")]
        self._client_id = client_id
        self._isolation_level = isolation_level
        self._consumer: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()

    async def end_offsets(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """Return the offset after the last record of each partition."""
        consumer = self._consumer or await self._start()
        requested = {TopicPartition(tp.topic, tp.partition): tp for tp in partitions}
        offsets = await consumer.end_offsets(list(requested))
        return {requested[partition]: offset for partition, offset in offsets.items()}

    async def first_offsets(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """Return the offset of the first record still kept in each partition."""
        consumer = self._consumer or await self._start()
        requested = {TopicPartition(tp.topic, tp.partition): tp for tp in partitions}
        offsets = await consumer.beginning_offsets(list(requested))
        return {requested[partition]: offset for partition, offset in offsets.items()}

    async def stop(self) -> None:
        """Close the client, if it started."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _start(self) -> AIOKafkaConsumer:
        async with self._starting:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap_servers,
                    client_id=self._client_id,
                    enable_auto_commit=False,
                    isolation_level=self._isolation_level,
                )
                await consumer.start()
                self._consumer = consumer
            return self._consumer
