"""OffsetReader against the real broker: end and first offsets, and the last stable offset."""

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from stream.worker.offsets import OffsetReader

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(new_topic: Callable[[str, int], str]) -> str:
    return new_topic("offsets", 2)


def test_offsets_of_written_and_empty_partitions(kafka_bootstrap: str, topic: str) -> None:
    partitions = [TP(topic, 0), TP(topic, 1)]

    async def run() -> tuple[dict[TP, int], dict[TP, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for _ in range(3):
                await producer.send_and_wait(topic, b"v", partition=0)
        finally:
            await producer.stop()
        reader = OffsetReader(kafka_bootstrap, client_id="offsets-test",
                              isolation_level="read_uncommitted")
        try:
            return await reader.end_offsets(partitions), await reader.first_offsets(partitions)
        finally:
            await reader.stop()

    ends, firsts = asyncio.run(run())

    assert ends == {TP(topic, 0): 3, TP(topic, 1): 0}
    assert firsts == {TP(topic, 0): 0, TP(topic, 1): 0}


def test_read_committed_end_stops_at_open_transaction(kafka_bootstrap: str, topic: str) -> None:
    partition = TP(topic, 1)

    async def run() -> tuple[int, int]:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=f"{topic}-open"
        )
        committed = OffsetReader(kafka_bootstrap, client_id="offsets-committed",
                                 isolation_level="read_committed")
        everything = OffsetReader(kafka_bootstrap, client_id="offsets-everything",
                                  isolation_level="read_uncommitted")
        await producer.start()
        try:
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"v", partition=1)
            await producer.send_and_wait(topic, b"v", partition=1)
            stable = (await committed.end_offsets([partition]))[partition]
            end = (await everything.end_offsets([partition]))[partition]
            await producer.abort_transaction()
            return stable, end
        finally:
            await producer.stop()
            await committed.stop()
            await everything.stop()

    stable, end = asyncio.run(run())

    assert stable == 0
    assert end == 2
