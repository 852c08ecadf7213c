"""Creation of the topics the worker reads and writes, when they are missing."""

import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream.errors import ConfigError
from stream.settings import Settings

logger = logging.getLogger(__name__)

CHANGELOG_SEGMENT_MS = 10 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """How many partitions a topic gets, and its configuration, when the worker creates it."""

    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def internal_topics(settings: Settings) -> dict[str, TopicSpec]:
    """Return the worker's internal topics: repartition, all-tenants and changelog topics.

    Faust would create them when it starts, but a record written before that,
    such as the last tick of a worker stopped early, makes a broker with
    automatic topic creation create one with its default partition count.
    """
    app_id = settings.app_id
    partitions = settings.internal_partitions
    # Kafka compacts closed segments only and closes one after 7 days by default.
    # A restart reads the whole changelog, so its segments close every 10 minutes.
    compact = {"cleanup.policy": "compact", "segment.ms": str(CHANGELOG_SEGMENT_MS)}
    return {
        f"{app_id}-by-tenant": TopicSpec(partitions),
        f"{app_id}-all-tenants": TopicSpec(1),
        f"{app_id}-journal-changelog": TopicSpec(partitions, compact),
        f"{app_id}-all-tenants-changelog": TopicSpec(1, compact),
    }


async def ensure_topics(settings: Settings) -> None:
    """Create the topics that do not exist yet, and check the internal ones' partitions.

    The input, output and dead-letter topics belong to the platform, so
    existing ones are left exactly as they are. Raises ConfigError when an
    internal topic exists with another partition count than the settings
    give it: its state is spread over partitions the worker would not read.
    """
    platform = {
        name: TopicSpec(settings.internal_partitions)
        for name in (
            *settings.input_topics,
            settings.output_topic,
            settings.dead_letter_topic,
            settings.alerts_topic,
        )
    }
    internal = internal_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = sorted(name for name in internal if name in existing)
        if present:
            for description in await admin.describe_topics(present):
                name = description["topic"]
                found = len(description["partitions"])
                expected = internal[name].partitions
                if found != expected:
                    raise ConfigError(
                        f"internal topic {name} has {found} partitions, but this deployment "
                        f"needs {expected} (internal_partitions = {settings.internal_partitions}). "
                        "Keep internal_partitions as it was, or use a new app_id"
                    )
        missing = {
            name: spec for name, spec in {**platform, **internal}.items() if name not in existing
        }
        if not missing:
            return
        logger.info("creating topics %s", sorted(missing))
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=spec.partitions,
                        replication_factor=settings.replication_factor,
                        topic_configs=spec.config,
                    )
                    for name, spec in sorted(missing.items())
                ]
            )
        except TopicAlreadyExistsError:
            logger.info("topics %s were created concurrently", sorted(missing))
    finally:
        await admin.close()
