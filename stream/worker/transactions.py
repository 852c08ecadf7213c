"""Writers of each agent batch: acknowledged writes, or one Kafka transaction per batch.

With ``processing_guarantee = "at_least_once"`` records, and after them the
table changelog records, go through the worker's producer, and Faust
commits the offsets of acknowledged records.

With ``"exactly_once"`` every agent batch is one Kafka transaction on a
transactional producer owned by that agent. The records the batch sends, its
table changelog records and the offsets after its input records commit
together or not at all. Faust itself stays in at-least-once mode. Its own
transaction manager (faust-streaming 0.15.3) names a transaction after the
destination partition and commits it only with offsets read from the same
partition number. That does not fit a worker that repartitions by tenant.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition
from faust.types import TP, TopicT

from stream.settings import Settings
from stream.worker import fencing
from stream.worker.output import OutgoingRecord, RecordWriter, new_producer, send_in_batches

logger = logging.getLogger(__name__)

ABORT_TIMEOUT_SECONDS = 10.0


class ChangelogTable(Protocol):
    """The parts of a Faust table that a batch writes to."""

    @property
    def data(self) -> Any: ...

    @property
    def changelog_topic(self) -> TopicT: ...


@dataclass(frozen=True, slots=True)
class TableChange:
    """A key set, or deleted when ``value`` is None, in a table's partition."""

    table: ChangelogTable
    partition: int
    key: bytes
    value: bytes | None


@dataclass(slots=True)
class BatchOutput:
    """Records and table changes of one agent batch, written in that order.

    The table changes reach Kafka only after every record is acknowledged, so
    a journal record that marks windows closed never becomes durable before
    their final records.
    """

    records: list[OutgoingRecord] = field(default_factory=list)
    changes: list[TableChange] = field(default_factory=list)


def store_in_table(table: ChangelogTable, key: bytes, value: bytes | None) -> None:
    """Set or delete a key in the table's in-memory data, without a changelog record."""
    if value is None:
        table.data.pop(key, None)
    else:
        table.data[key] = value


def changelog_record(change: TableChange) -> OutgoingRecord:
    """Return the changelog record of a table change: the key and partition Faust would use."""
    return OutgoingRecord(
        change.table.changelog_topic.get_topic_name(),
        change.key,
        change.value,
        partition=change.partition,
    )


def transactional_id(settings: Settings, agent: str) -> str:
    """Return the transactional id of one agent of this worker.

    It is stable while the worker keeps its identity, so a restarted worker
    fences its predecessor and aborts the transaction that one left open.
    """
    return f"{settings.app_id}-{settings.effective_worker_id}-{agent}"


class BatchTransactions:
    """Writes each agent batch in the configured processing mode."""

    def __init__(self, settings: Settings, app: faust.App, writer: RecordWriter) -> None:
        self.settings = settings
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        self._app = app
        self._writer = writer
        self._producers: dict[str, AIOKafkaProducer] = {}
        self._starting = asyncio.Lock()
        if self.exactly_once:
            fencing.install()

    async def start(self, agents: Iterable[str]) -> None:
        """Start the transactional producers of the agents, in exactly-once mode.

        Starting one fences an earlier producer with the same transactional
        id and aborts the transaction that it left open, so readers of the
        topics it wrote to need not wait for the transaction timeout.
        """
        if self.exactly_once:
            for agent in agents:
                await self._producer(agent)

    async def stop(self) -> None:
        """Stop the transactional producers."""
        producers, self._producers = self._producers, {}
        for producer in producers.values():
            await producer.stop()

    @contextlib.asynccontextmanager
    async def batch(self, agent: str, offsets: Mapping[TP, int]) -> AsyncIterator[BatchOutput]:
        """Yield the output of one batch to fill, and write it when the block ends.

        At least once, the records go out through the worker's producer and,
        once acknowledged, the table changes; Faust commits the offsets of
        the batch after the agent acknowledges its records. Exactly
        once, records, changelog records and ``offsets``, the offsets after the
        batch's records, commit as one transaction. On an error the transaction is
        aborted and the error re-raised, so the caller can stop the process
        and a restarted worker reads the batch again from the committed offsets.
        """
        output = BatchOutput()
        if not self.exactly_once:
            yield output
            await self._writer.write(output.records)
            # Faust's table API sends each changelog record on its own, and after
            # a history replay its commit waited a minute for all of them.
            await self._writer.write(changelog_record(change) for change in output.changes)
            for change in output.changes:
                store_in_table(change.table, change.key, change.value)
            return

        producer = await self._producer(agent)
        # The generation the batch's records were read in: a worker that
        # stalls mid-batch and rejoins must not commit them as a new member.
        generation, member_id = self._group_member()
        await producer.begin_transaction()
        try:
            yield output
            # Faust's table API would send the changes through Faust's producer,
            # outside the transaction, so they go to the changelog topics here.
            changelog = [changelog_record(change) for change in output.changes]
            deliveries = await send_in_batches(producer, [*output.records, *changelog])
            if deliveries:
                await asyncio.gather(*deliveries)
            for change in output.changes:
                store_in_table(change.table, change.key, change.value)
            if offsets:
                positions = {
                    TopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()
                }
                await fencing.send_offsets(
                    producer, positions, self._app.conf.id, generation, member_id
                )
            await producer.commit_transaction()
        except BaseException as exc:
            await self._abort(agent, producer, exc)
            raise

    def _group_member(self) -> tuple[int, str]:
        """Return this worker's consumer group generation and member id, or -1 and "" if unknown.

        The group coordinator rejects offsets committed under a generation
        it has left behind, as those of a worker that stalled while its
        partitions moved. Both are read from the Kafka client's group
        coordinator, private to aiokafka.
        """
        try:
            consumer: Any = self._app.consumer
            coordinator = consumer._thread._ensure_consumer()._coordinator
            return int(coordinator.generation), str(coordinator.member_id)
        except AttributeError as exc:
            logger.warning("consumer group generation unknown, committing without it: %r", exc)
            return -1, ""

    async def _producer(self, agent: str) -> AIOKafkaProducer:
        async with self._starting:
            producer = self._producers.get(agent)
            if producer is not None:
                return producer
            settings = self.settings
            producer = new_producer(
                settings.bootstrap_servers,
                transactional_id=transactional_id(settings, agent),
                transaction_timeout_ms=settings.transaction_timeout_ms,
            )
            await producer.start()
            self._producers[agent] = producer
            logger.info(
                "started transactional producer of agent %s with id %s",
                agent,
                transactional_id(settings, agent),
            )
            return producer

    async def _abort(self, agent: str, producer: AIOKafkaProducer, cause: BaseException) -> None:
        if isinstance(cause, fencing.STALE_MEMBER_ERRORS):
            logger.error(
                "transaction of agent %s rejected by consumer group %s: this worker's "
                "generation is no longer current, so its partitions have moved to another "
                "worker. The transaction is aborted and the worker stops",
                agent,
                self._app.conf.id,
            )
        if isinstance(cause, ProducerFenced):
            logger.error(
                "transaction of agent %s failed: transactional id %s was fenced by a newer "
                "producer. Another worker runs with the same worker_id, or this one was "
                "replaced; give each worker of a deployment its own worker_id",
                agent,
                transactional_id(self.settings, agent),
            )
            return
        try:
            await asyncio.wait_for(producer.abort_transaction(), ABORT_TIMEOUT_SECONDS)
        except (KafkaError, asyncio.TimeoutError) as exc:
            # The broker aborts the transaction itself after transaction_timeout_ms.
            logger.error(
                "failed to abort the transaction of agent %s after %r: %r",
                agent,
                cause,
                exc,
            )
        else:
            logger.warning("aborted the transaction of agent %s after %r", agent, cause)
