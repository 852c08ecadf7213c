"""Shared fixtures: one Kafka broker for the test session, fresh names and topic creation.

``kafka_bootstrap`` picks its broker in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (``.ci/run`` sets it after starting the local broker);
2. an ``apache/kafka`` container, when ``docker info`` succeeds;
3. a :class:`LocalBroker` on free loopback ports in a temporary home. Its
   jars come from the default broker home, so they are fetched once per
   machine, not once per run.

A broker that fails to start fails the tests that use it, with the broker's
error; nothing is skipped.
"""

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from stream.broker.admin import create_topics as create_topics_async
from stream.broker.admin import probe_broker
from stream.broker.local import LocalBroker, default_home
from stream.broker.process import free_ports
from stream.errors import BrokerError

KAFKA_IMAGE = "apache/kafka:4.1.1"
BROKER_START_TIMEOUT_SECONDS = 180.0
DOCKER_INFO_TIMEOUT_SECONDS = 10.0

CreateTopics = Callable[[str, Mapping[str, int]], None]
UniqueName = Callable[[str], str]


def docker_engine_available() -> bool:
    """Return whether ``docker info`` reaches a Docker engine within a few seconds."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        result = subprocess.run(
            [docker, "info"],
            capture_output=True,
            timeout=DOCKER_INFO_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _wait_for_kafka(bootstrap_servers: str, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if asyncio.run(probe_broker(bootstrap_servers)):
            return True
        time.sleep(0.5)
    return False


def _container_broker() -> Iterator[str]:
    """Run Kafka in an ``apache/kafka`` container whose client port is published on loopback.

    testcontainers' ``KafkaContainer`` runs Confluent's start scripts, which the
    ``apache/kafka`` image lacks, so this uses a plain container configured
    through the image's ``KAFKA_*`` variables.
    """
    # NOTE: these container settings have not been run against a Docker engine yet.
    from testcontainers.core.container import DockerContainer

    (port,) = free_ports(1)
    bootstrap_servers = f"127.0.0.1:{port}"
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(port, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS=f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{bootstrap_servers}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_NUM_PARTITIONS="1",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="true",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        )
    )
    with container:
        if not _wait_for_kafka(bootstrap_servers, BROKER_START_TIMEOUT_SECONDS):
            stdout, stderr = container.get_logs()
            last_lines = (stdout + stderr).decode(errors="replace").splitlines()[-20:]
            raise BrokerError(
                f"Kafka container {KAFKA_IMAGE} did not respond on {bootstrap_servers} within "
                f"{BROKER_START_TIMEOUT_SECONDS:.0f} s. Last lines of its log:\n"
                + "\n".join(last_lines)
            )
        yield bootstrap_servers


def _local_broker(home: Path) -> Iterator[str]:
    # NOTE: if pytest itself is killed (SIGKILL), this teardown does not run and the
    # broker keeps running; stop it with 'adoption-rate broker stop --home <its home>'.
    port, controller_port = free_ports(2)
    broker = LocalBroker(
        home,
        port=port,
        controller_port=controller_port,
        cache_dir=default_home(),
    )
    broker.start(timeout_seconds=BROKER_START_TIMEOUT_SECONDS)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the session's Kafka broker, like ``127.0.0.1:9092``."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        yield configured
    elif docker_engine_available():
        yield from _container_broker()
    else:
        yield from _local_broker(tmp_path_factory.mktemp("kafka-home"))


def _unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def unique_name() -> UniqueName:
    """Function that returns ``prefix`` plus a random suffix, for topic names and app ids."""
    return _unique_name


def _create_topics(bootstrap_servers: str, partitions_by_topic: Mapping[str, int]) -> None:
    asyncio.run(create_topics_async(bootstrap_servers, partitions_by_topic))


@pytest.fixture
def create_topics() -> CreateTopics:
    """Function ``create_topics(bootstrap, {name: partitions})`` that waits for partition leaders.

    It runs its own event loop, so call it from synchronous test code. Async
    code can await :func:`stream.broker.admin.create_topics` instead.
    """
    return _create_topics
