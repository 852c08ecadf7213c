"""RecordWriter against the real broker: placement, order and batches larger than one request."""

import asyncio
from collections.abc import Callable

import pytest

from stream.worker.output import MAX_BATCH_BYTES, OutgoingRecord, RecordWriter, key_partition
from tests.integration.harness import read_all

pytestmark = pytest.mark.integration

PARTITIONS = 4


def write(bootstrap_servers: str, records: list[OutgoingRecord]) -> None:
    async def run() -> None:
        writer = RecordWriter(bootstrap_servers, client_id="output-test")
        try:
            await writer.write(records)
        finally:
            await writer.stop()

    asyncio.run(run())


@pytest.fixture
def topic(new_topic: Callable[[str, int], str]) -> str:
    return new_topic("output", PARTITIONS)


def test_keyed_records_follow_key_partition(kafka_bootstrap: str, topic: str) -> None:
    keys = [f"tenant-{number}".encode() for number in range(200)]

    write(kafka_bootstrap, [OutgoingRecord(topic, key, b"v") for key in keys])

    records = read_all(kafka_bootstrap, topic)
    assert sorted(record.key for record in records) == sorted(keys)
    for record in records:
        assert record.partition == key_partition(record.key, PARTITIONS)


def test_records_keep_their_order_per_partition(kafka_bootstrap: str, topic: str) -> None:
    sent = [
        OutgoingRecord(topic, None, f"{number}".encode(), partition=number % 2)
        for number in range(1_000)
    ]

    write(kafka_bootstrap, sent)

    records = read_all(kafka_bootstrap, topic)
    for partition in (0, 1):
        values = [int(record.value) for record in records if record.partition == partition]
        assert values == list(range(partition, 1_000, 2))


def test_unkeyed_records_spread_over_partitions(kafka_bootstrap: str, topic: str) -> None:
    write(kafka_bootstrap, [OutgoingRecord(topic, None, b"v") for _ in range(40)])

    records = read_all(kafka_bootstrap, topic)
    per_partition = [sum(record.partition == p for record in records) for p in range(PARTITIONS)]
    assert per_partition == [10] * PARTITIONS


def test_oversize_batch_arrives_in_order(kafka_bootstrap: str, topic: str) -> None:
    # Five records of 300 KB fill more than one client batch of one partition.
    size = 300_000
    sent = [
        OutgoingRecord(topic, f"{number}".encode(), bytes([number]) * size, partition=3)
        for number in range(5)
    ]
    assert len(sent) * size > MAX_BATCH_BYTES

    write(kafka_bootstrap, sent)

    records = read_all(kafka_bootstrap, topic)
    assert [record.key for record in records] == [f"{number}".encode() for number in range(5)]
    assert [record.value for record in records] == [record.value for record in sent]


def test_headers_are_written(kafka_bootstrap: str, topic: str) -> None:
    headers = [("adoption.reason", b"invalid_json"), ("adoption.source.offset", b"7")]

    write(kafka_bootstrap, [OutgoingRecord(topic, b"k", b"v", headers=headers, partition=0)])

    (record,) = read_all(kafka_bootstrap, topic)
    assert list(record.headers) == headers
