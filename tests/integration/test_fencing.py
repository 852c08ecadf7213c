"""Transactional offset commits name the group generation, on the real broker."""

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import IllegalGenerationError
from aiokafka.structs import TopicPartition

from stream.worker import fencing

pytestmark = pytest.mark.integration

JOIN_TIMEOUT_SECONDS = 60.0


async def wait_for_generation(consumers: list[AIOKafkaConsumer], after: int) -> None:
    """Poll every consumer until all have joined a generation newer than ``after``."""
    deadline = asyncio.get_running_loop().time() + JOIN_TIMEOUT_SECONDS
    while any(consumer._coordinator.generation <= after for consumer in consumers):
        assert asyncio.get_running_loop().time() < deadline, "the group did not rebalance"
        await asyncio.gather(*(consumer.getmany(timeout_ms=200) for consumer in consumers))


def group_member(consumer: AIOKafkaConsumer) -> tuple[int, str]:
    return consumer._coordinator.generation, consumer._coordinator.member_id


def test_commit_of_old_generation_rejected(
    kafka_bootstrap: str, new_topic: Callable[[str, int], str], unique_name: Callable[[str], str]
) -> None:
    source = new_topic("fencing-in", 2)
    output = new_topic("fencing-out", 1)
    group = unique_name("fencing-group")
    fencing.install()

    async def run() -> tuple[list[bytes], int | None]:
        def member() -> AIOKafkaConsumer:
            return AIOKafkaConsumer(
                source,
                bootstrap_servers=kafka_bootstrap,
                group_id=group,
                enable_auto_commit=False,
                session_timeout_ms=30_000,
            )

        first, second = member(), member()
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("fencing-txn")
        )
        await first.start()
        await producer.start()
        try:
            await wait_for_generation([first], after=0)
            stale = group_member(first)
            # A second member joins: the group moves to a new generation, as
            # when a stalled worker's partitions move.
            await second.start()
            await wait_for_generation([first, second], after=stale[0])

            await producer.begin_transaction()
            await producer.send_and_wait(output, b"stale")
            with pytest.raises(IllegalGenerationError):
                await fencing.send_offsets(
                    producer, {TopicPartition(source, 0): 5}, group, *stale
                )
            await producer.abort_transaction()

            await producer.begin_transaction()
            await producer.send_and_wait(output, b"current")
            await fencing.send_offsets(
                producer, {TopicPartition(source, 0): 7}, group, *group_member(first)
            )
            await producer.commit_transaction()

            reader = AIOKafkaConsumer(
                output,
                bootstrap_servers=kafka_bootstrap,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
            )
            await reader.start()
            try:
                values: list[bytes] = []
                while b"current" not in values:
                    batch = await reader.getmany(timeout_ms=1_000)
                    values.extend(record.value for records in batch.values() for record in records)
            finally:
                await reader.stop()
            return values, await first.committed(TopicPartition(source, 0))
        finally:
            await producer.stop()
            await second.stop()
            await first.stop()

    values, committed = asyncio.run(asyncio.wait_for(run(), 120))

    assert values == [b"current"]
    assert committed == 7
