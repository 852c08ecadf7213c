"""Creation of the topics the worker reads and writes, when they are missing."""

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream.settings import Settings

logger = logging.getLogger(__name__)


async def ensure_topics(settings: Settings) -> None:
    """Create the input, output and dead-letter topics that do not exist yet.

    Faust creates its internal topics itself; the others belong to the
    platform, so existing ones are left exactly as they are.
    """
    wanted = {
        *settings.input_topics,
        settings.output_topic,
        settings.dead_letter_topic,
        settings.alerts_topic,
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(wanted - existing)
        if not missing:
            return
        logger.info("creating topics %s with %d partitions", missing, settings.internal_partitions)
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=settings.internal_partitions,
                        replication_factor=settings.replication_factor,
                    )
                    for name in missing
                ]
            )
        except TopicAlreadyExistsError:
            logger.info("topics %s were created concurrently", missing)
    finally:
        await admin.close()
