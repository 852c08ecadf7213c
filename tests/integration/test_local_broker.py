"""Tests that start a real local Kafka broker (Java, and jars from Maven Central on first run).

Each test runs its own broker on free loopback ports in a temporary home. The
jars come from the default broker home, so only the first run fetches them.
"""

import asyncio
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from stream.broker.local import LocalBroker, default_home
from stream.broker.process import free_ports, port_in_use
from stream.errors import BrokerError

pytestmark = pytest.mark.integration

START_TIMEOUT_SECONDS = 180.0
CONSUME_TIMEOUT_SECONDS = 60.0

CreateTopics = Callable[[str, Mapping[str, int]], None]
UniqueName = Callable[[str], str]


def new_broker(home: Path, heap_max: str = "512m") -> LocalBroker:
    port, controller_port = free_ports(2)
    return LocalBroker(
        home,
        port=port,
        controller_port=controller_port,
        cache_dir=default_home(),
        heap_max=heap_max,
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A started broker that is stopped after the test, whatever the test did."""
    local = new_broker(tmp_path / "kafka")
    local.start(timeout_seconds=START_TIMEOUT_SECONDS)
    try:
        yield local
    finally:
        local.stop()


async def produce_one(bootstrap_servers: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"key-1")
    finally:
        await producer.stop()


async def consume_one(bootstrap_servers: str, topic: str, group_id: str) -> tuple[bytes, bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), CONSUME_TIMEOUT_SECONDS)
    finally:
        await consumer.stop()
    assert record.key is not None
    assert record.value is not None
    return record.key, record.value


async def list_topics(bootstrap_servers: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        topics: list[str] = await admin.list_topics()
    finally:
        await admin.close()
    return topics


def test_local_broker_round_trip(tmp_path: Path, unique_name: UniqueName) -> None:
    local = new_broker(tmp_path / "kafka")
    topic = unique_name("local-broker")

    assert local.start(timeout_seconds=START_TIMEOUT_SECONDS) is True
    try:
        status = local.status()
        assert status.running is True
        assert status.pid is not None
        assert status.port == local.layout.port
        assert local.layout.pid_file.read_text().strip() == str(status.pid)
        assert local.layout.server_log.stat().st_size > 0

        asyncio.run(produce_one(local.bootstrap_servers, topic, b"hello"))
        received = asyncio.run(consume_one(local.bootstrap_servers, topic, unique_name("group")))
        assert received == (b"key-1", b"hello")
    finally:
        stopped = local.stop()

    assert stopped is True
    assert local.status().running is False
    assert not local.layout.pid_file.exists()
    assert not port_in_use(local.layout.port)


def test_start_twice_reuses_running_broker(broker: LocalBroker) -> None:
    pid = broker.status().pid

    assert broker.start(timeout_seconds=30) is False
    assert broker.status().pid == pid


def test_other_object_stops_broker(broker: LocalBroker) -> None:
    same_home = LocalBroker(broker.layout.home)

    assert same_home.status().running is True
    assert same_home.status().port == broker.layout.port
    assert same_home.stop() is True
    assert broker.status().running is False


def test_restart_keeps_topics(
    broker: LocalBroker, create_topics: CreateTopics, unique_name: UniqueName
) -> None:
    topic = unique_name("kept")
    create_topics(broker.bootstrap_servers, {topic: 3})
    broker.stop()

    assert broker.start(timeout_seconds=START_TIMEOUT_SECONDS) is True
    assert topic in asyncio.run(list_topics(broker.bootstrap_servers))


def test_second_broker_on_taken_port(broker: LocalBroker, tmp_path: Path) -> None:
    rival = LocalBroker(
        tmp_path / "rival",
        port=broker.layout.port,
        controller_port=free_ports(1)[0],
        cache_dir=default_home(),
    )

    with pytest.raises(BrokerError, match=f"port {broker.layout.port} on 127.0.0.1 is already"):
        rival.start(timeout_seconds=30)


def test_start_quotes_jvm_error(tmp_path: Path) -> None:
    local = new_broker(tmp_path / "kafka", heap_max="not-a-size")

    with pytest.raises(BrokerError, match="exited during start") as error:
        local.start(timeout_seconds=60)

    assert "Invalid maximum heap size" in str(error.value)
    assert local.status().running is False


def test_session_broker_creates_topics(
    kafka_bootstrap: str, create_topics: CreateTopics, unique_name: UniqueName
) -> None:
    topic = unique_name("session")
    create_topics(kafka_bootstrap, {topic: 4})

    assert topic in asyncio.run(list_topics(kafka_bootstrap))
