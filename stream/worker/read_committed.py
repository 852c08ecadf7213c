"""Faust classes for exactly-once mode: read committed records, commit no offsets.

faust-streaming 0.15.3 reads with ``isolation_level="read_committed"`` only
when its own transaction manager is on, which the worker does not use (see
:mod:`stream.worker.transactions`). These subclasses, which the app uses in
exactly-once mode only, change three things:

- The consumer reads committed records only, so agents never see records of
  an aborted or still open transaction.
- Faust commits no offsets. ``Stream.take_events`` acknowledges a whole batch
  in a ``finally`` block, also when the batch's task is cancelled part-way,
  and ``Consumer.on_stop`` and the rebalance path commit acknowledged
  offsets. Faust could then commit offsets past a transaction that was
  aborted. The offsets are committed by the worker's transactions instead.
- Table recovery reads changelogs up to the last committed record. Faust
  waits until it has read the record just below the end offset, but with
  transactions that offset contains a commit or abort marker, which a
  consumer never receives, so recovery would never end.
"""

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Transport, server_list
from faust.types import TP, ConsumerT

from stream.worker.consumer import SeekingConsumer, SeekingTransport

logger = logging.getLogger(__name__)

# Limit on reading the end of the changelog partitions at the start of a recovery.
TAIL_READ_TIMEOUT_SECONDS = 60.0
FIRST_TAIL_SPAN = 64


class ReadCommittedConsumerThread(AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread with a consumer that reads committed records only."""

    def _create_worker_consumer(self, transport: Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes isolation_level="read_committed" only with its own
        # transactions on. aiokafka 0.14.0 keeps the argument in this attribute
        # until start() creates the fetcher, so setting it before start() is
        # the same as passing it.
        consumer._isolation_level = "read_committed"
        return consumer


class ReadCommittedConsumer(SeekingConsumer):
    """Faust's aiokafka consumer, reading committed records and committing no offsets."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Skip the commit: each batch's transaction has committed its offsets already.

        Faust acknowledges a batch's events after the agent has handled the
        batch, so in the normal path these offsets are already committed. The
        time is recorded so that Faust's check for partitions without recent
        commits stays quiet.
        """
        now = time.monotonic()
        self._thread.tp_last_committed_at.update({tp: now for tp in offsets})
        return False


class ReadCommittedTransport(SeekingTransport):
    """Faust's aiokafka transport with :class:`ReadCommittedConsumer`."""

    Consumer = ReadCommittedConsumer


class OffsetReader(Protocol):
    """The parts of an aiokafka consumer that :func:`last_record_offset` uses."""

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def position(self, partition: TopicPartition) -> int: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]: ...


async def last_record_offset(
    consumer: OffsetReader, tp: TopicPartition, start: int, end: int, *, deadline: float
) -> int | None:
    """Return the offset of the last record that ``consumer`` receives in ``[start, end)``.

    The consumer reads committed records only, so markers and aborted records
    are skipped. It reads backwards from ``end`` in growing spans, so a
    changelog is read from the start only when its end contains no
    committed record. Returns None when the range contains none. Raises TimeoutError once
    ``deadline`` (a ``time.monotonic`` value) has passed.
    """
    span = FIRST_TAIL_SPAN
    lower = end
    while lower > start:
        lower = max(start, end - span)
        consumer.seek(tp, lower)
        last: int | None = None
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading {tp.topic}[{tp.partition}] from offset {lower} to {end} timed out"
                )
            batches = await consumer.getmany(tp, timeout_ms=500)
            for record in batches.get(tp, []):
                if record.offset < end:
                    last = record.offset
        if last is not None:
            return last
        span *= 8
    return None


class CommittedRecovery(Recovery):
    """Faust's table recovery, ending at the last committed record of each changelog partition."""

    async def _build_highwaters(
        self, consumer: ConsumerT, tps: set[TP], destination: Any, title: str
    ) -> None:
        # Faust sets each partition's highwater to the end offset minus one.
        # With the read_committed consumer the end offset is the last stable
        # offset, and the record below it may be a transaction marker.
        await super()._build_highwaters(consumer, tps, destination, title)
        pending = {tp: destination[tp] + 1 for tp in tps if destination[tp] >= 0}
        if not pending:
            return
        bootstrap_servers = server_list(
            self.app.conf.broker_consumer, Transport.default_port
        )
        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        await reader.start()
        try:
            partitions = {tp: TopicPartition(tp.topic, tp.partition) for tp in pending}
            reader.assign(list(partitions.values()))
            starts = await reader.beginning_offsets(list(partitions.values()))
            deadline = time.monotonic() + TAIL_READ_TIMEOUT_SECONDS
            for tp, end in pending.items():
                partition = partitions[tp]
                start = starts[partition]
                last = await last_record_offset(reader, partition, start, end, deadline=deadline)
                # With no committed record left, the highwater is just below
                # the first offset, where Faust's recovery starts reading.
                destination[tp] = last if last is not None else start - 1
        finally:
            await reader.stop()
        logger.info(
            "%s changelog partitions end at their last committed records: %s",
            title,
            ", ".join(f"{tp.topic}[{tp.partition}]={destination[tp]}" for tp in sorted(pending)),
        )


class CommittedTableManager(TableManager):
    """Faust's table manager with :class:`CommittedRecovery`."""

    @property
    def recovery(self) -> Recovery:
        """Recovery service used by this table manager."""
        if self._recovery is None:
            self._recovery = CommittedRecovery(
                self.app, self, beacon=self.beacon, loop=self.loop
            )
        return self._recovery
