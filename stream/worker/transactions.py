"""Writers of each agent batch: through Faust, or as one Kafka transaction per batch.

With ``processing_guarantee = "at_least_once"`` records go through Faust's
producer and Faust commits the offsets of acknowledged records.

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
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.types import TP, TopicT

from stream.settings import Settings

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
ABORT_TIMEOUT_SECONDS = 10.0


class ChangelogTable(Protocol):
    """The parts of a Faust table that a writer uses."""

    @property
    def data(self) -> Any: ...

    @property
    def changelog_topic(self) -> TopicT: ...

    def send_changelog(self, partition: int | None, key: Any, value: Any) -> Any: ...


class BatchWriter(Protocol):
    """Destination of the records and table changes of one agent batch."""

    async def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        """Send one record to ``topic``."""

    async def write_changelog(
        self, table: ChangelogTable, partition: int, key: bytes, value: bytes | None
    ) -> None:
        """Set or, with ``value`` None, delete a table key and send the change to its changelog."""

    async def flush(self) -> None:
        """Make the records sent so far durable before any sent later."""


def store_in_table(table: ChangelogTable, key: bytes, value: bytes | None) -> None:
    """Set or delete a key in the table's in-memory data, without a changelog record."""
    if value is None:
        table.data.pop(key, None)
    else:
        table.data[key] = value


class FaustWriter:
    """A writer through Faust's producer, for at-least-once mode."""

    def __init__(self, app: faust.App, topics: Mapping[str, TopicT]) -> None:
        self._app = app
        self._topics = topics

    async def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        await self._topics[topic].send(key=key, value=value, headers=headers, partition=partition)

    async def write_changelog(
        self, table: ChangelogTable, partition: int, key: bytes, value: bytes | None
    ) -> None:
        store_in_table(table, key, value)
        table.send_changelog(partition, key, value)

    async def flush(self) -> None:
        await self._app.producer.flush()


class TransactionWriter:
    """A writer into the open transaction of one agent's producer."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._deliveries: list[asyncio.Future[RecordMetadata]] = []

    async def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        delivery = await self._producer.send(
            topic, value, key=key, partition=partition, headers=headers
        )
        self._deliveries.append(delivery)

    async def write_changelog(
        self, table: ChangelogTable, partition: int, key: bytes, value: bytes | None
    ) -> None:
        # Faust's table API would send the change through Faust's producer,
        # outside the transaction, so the record goes to the changelog topic
        # here, with the key and partition Faust would use.
        store_in_table(table, key, value)
        await self.send(
            table.changelog_topic.get_topic_name(), key=key, value=value, partition=partition
        )

    async def flush(self) -> None:
        """Do nothing: a transaction's records become readable together, at its commit."""

    async def wait_delivered(self) -> None:
        """Wait until the broker has stored every record sent, raising the first failure."""
        await asyncio.gather(*self._deliveries)


class Message(Protocol):
    """The parts of a consumed Faust message that set the offsets to commit."""

    @property
    def tp(self) -> TP: ...

    @property
    def offset(self) -> int: ...


class Event(Protocol):
    """A consumed Faust event."""

    @property
    def message(self) -> Message: ...


def next_offsets(events: Iterable[Event]) -> dict[TP, int]:
    """Return the offset after the last of the events in each partition: the offsets to commit."""
    offsets: dict[TP, int] = {}
    for event in events:
        message = event.message
        offsets[message.tp] = max(offsets.get(message.tp, 0), message.offset + 1)
    return offsets


def transactional_id(settings: Settings, agent: str) -> str:
    """Return the transactional id of one agent of this worker.

    It is stable while the worker keeps its identity, so a restarted worker
    fences its predecessor and aborts the transaction that one left open.
    """
    return f"{settings.app_id}-{settings.effective_worker_id}-{agent}"


class BatchTransactions:
    """The writer of each agent batch, in the configured processing mode."""

    def __init__(
        self, settings: Settings, app: faust.App, topics: Mapping[str, TopicT]
    ) -> None:
        self.settings = settings
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        self._app = app
        self._faust_writer = FaustWriter(app, topics)
        self._producers: dict[str, AIOKafkaProducer] = {}
        self._starting = asyncio.Lock()

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
    async def batch(self, agent: str, events: Sequence[Event]) -> AsyncIterator[BatchWriter]:
        """Yield the writer of one batch; in exactly-once mode, commit it as one transaction.

        On leaving without an error, the transaction commits the batch's
        records with the offsets after its events. On an error it is aborted
        and the error re-raised, so the caller can stop the process and a
        restarted worker reads the batch again from the committed offsets.
        """
        if not self.exactly_once:
            yield self._faust_writer
            return

        producer = await self._producer(agent)
        offsets = next_offsets(events)
        await producer.begin_transaction()
        writer = TransactionWriter(producer)
        try:
            yield writer
            await writer.wait_delivered()
            if offsets:
                positions = {
                    TopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()
                }
                await producer.send_offsets_to_transaction(positions, self._app.conf.id)
            await producer.commit_transaction()
        except BaseException as exc:
            await self._abort(agent, producer, exc)
            raise

    async def _producer(self, agent: str) -> AIOKafkaProducer:
        async with self._starting:
            producer = self._producers.get(agent)
            if producer is not None:
                return producer
            settings = self.settings
            producer = AIOKafkaProducer(
                bootstrap_servers=[
                    server.strip() for server in settings.bootstrap_servers.split(",")
                ],
                transactional_id=transactional_id(settings, agent),
                transaction_timeout_ms=settings.transaction_timeout_ms,
                acks="all",
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
