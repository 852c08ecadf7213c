"""Kafka admin requests through aiokafka: readiness probe and topic creation."""

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code

from stream.errors import BrokerError

logger = logging.getLogger(__name__)


async def probe_broker(bootstrap_servers: str, request_timeout_ms: int = 5_000) -> bool:
    """Return whether a broker at ``bootstrap_servers`` responds to a metadata request.

    A broker counts as ready once the metadata lists at least one broker, which
    a KRaft node does only after it has registered with its controller.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=request_timeout_ms,
    )
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError) as exc:
        logger.debug("Kafka at %s is not ready: %r", bootstrap_servers, exc)
        return False
    finally:
        await admin.close()
    return bool(cluster.get("brokers"))


async def create_topics(
    bootstrap_servers: str,
    partitions_by_topic: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout_seconds: float = 30.0,
) -> None:
    """Create topics with the given partition counts and wait until every partition has a leader.

    Raises :class:`BrokerError` if the broker rejects a topic, including one
    that already exists, or if a leader is still missing after ``timeout_seconds``.
    """
    new_topics = [
        NewTopic(name=name, num_partitions=partitions, replication_factor=replication_factor)
        for name, partitions in partitions_by_topic.items()
    ]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=int(timeout_seconds * 1000),
    )
    try:
        await admin.start()
        response = await admin.create_topics(new_topics, timeout_ms=int(timeout_seconds * 1000))
        _raise_for_topic_errors(bootstrap_servers, response.topic_errors)
        await _wait_for_leaders(admin, partitions_by_topic, timeout_seconds)
    except KafkaError as exc:
        raise BrokerError(
            f"failed to create topics {sorted(partitions_by_topic)} on {bootstrap_servers}: "
            f"{exc!r}; check that the broker is running"
        ) from exc
    finally:
        await admin.close()
    logger.info("created topics %s on %s", dict(partitions_by_topic), bootstrap_servers)


def _raise_for_topic_errors(bootstrap_servers: str, topic_errors: Sequence[Sequence[Any]]) -> None:
    failures = []
    for topic_error in topic_errors:
        topic, error_code = topic_error[0], topic_error[1]
        if error_code == 0:
            continue
        message = topic_error[2] if len(topic_error) > 2 else None
        error_name = for_code(error_code).__name__
        failures.append(f"{topic}: {error_name} {message or ''}".rstrip())
    if failures:
        raise BrokerError(
            f"broker {bootstrap_servers} rejected topic creation: {'; '.join(failures)}"
        )


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, partitions_by_topic: Mapping[str, int], timeout_seconds: float
) -> None:
    deadline = time.monotonic() + timeout_seconds
    pending = dict(partitions_by_topic)
    while pending:
        topics = await admin.describe_topics(list(pending))
        for topic in topics:
            partitions = topic.get("partitions", [])
            with_leader = [p for p in partitions if p.get("leader", -1) >= 0]
            if topic.get("error_code") == 0 and len(with_leader) == pending.get(topic["topic"]):
                pending.pop(topic["topic"], None)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"topics {sorted(pending)} have partitions without a leader after "
                f"{timeout_seconds} s; check the broker log"
            )
        await asyncio.sleep(0.1)
