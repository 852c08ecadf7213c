"""Topic creation before the worker starts, against the real broker."""

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream.cli.main import main
from stream.errors import ConfigError
from stream.settings import Settings
from stream.worker.topics import ensure_topics, internal_topics

pytestmark = pytest.mark.integration


def settings_for(bootstrap_servers: str, app_id: str, tmp_path: Path, **extra: int) -> Settings:
    return Settings(
        bootstrap_servers=bootstrap_servers,
        app_id=app_id,
        input_topics=(f"{app_id}-in",),
        output_topic=f"{app_id}-out",
        dead_letter_topic=f"{app_id}-dlq",
        alerts_topic=f"{app_id}-alerts",
        data_dir=tmp_path,
        **extra,
    )


async def describe(bootstrap_servers: str, topics: list[str]) -> dict[str, tuple[int, str, str]]:
    """Return each topic's partition count, cleanup.policy and segment.ms.

    A broker that has just started may describe a new topic without its
    partitions or configs for a moment, so the requests are repeated for a while.
    """
    requested = [
        ConfigResource(
            ConfigResourceType.TOPIC, topic, {"cleanup.policy": None, "segment.ms": None}
        )
        for topic in topics
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + 30.0
        while True:
            described = await admin.describe_topics(topics)
            partitions = {entry["topic"]: len(entry["partitions"]) for entry in described}
            resources = [
                resource
                for response in await admin.describe_configs(requested)
                for resource in response.resources
            ]
            complete = all(partitions.get(topic) for topic in topics) and all(
                resource[0] == 0 for resource in resources
            )
            if complete or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        configs = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]} for resource in resources
        }
        return {
            topic: (
                partitions[topic],
                configs[topic]["cleanup.policy"],
                configs[topic]["segment.ms"],
            )
            for topic in topics
        }
    finally:
        await admin.close()


def test_internal_topics_created_with_their_partitions(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    app_id = unique_name("topics")
    settings = settings_for(kafka_bootstrap, app_id, tmp_path, internal_partitions=3)

    asyncio.run(ensure_topics(settings))

    found = asyncio.run(describe(kafka_bootstrap, sorted(internal_topics(settings))))
    # Kafka's default segment.ms is 7 days. Changelogs close a segment every 10 minutes.
    assert found == {
        f"{app_id}-by-tenant": (3, "delete", "604800000"),
        f"{app_id}-all-tenants": (1, "delete", "604800000"),
        f"{app_id}-journal-changelog": (3, "compact", "600000"),
        f"{app_id}-all-tenants-changelog": (1, "compact", "600000"),
    }


def test_internal_topic_with_other_partitions_rejected(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    create_topics: Callable[[str, Mapping[str, int]], None],
    tmp_path: Path,
) -> None:
    # A broker that creates topics on first write made this one with one partition.
    app_id = unique_name("topics")
    create_topics(kafka_bootstrap, {f"{app_id}-by-tenant": 1})
    settings = settings_for(kafka_bootstrap, app_id, tmp_path)

    with pytest.raises(ConfigError, match=rf"{app_id}-by-tenant has 1 partitions"):
        asyncio.run(ensure_topics(settings))


def test_worker_with_mismatched_topic_exits_2(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    create_topics: Callable[[str, Mapping[str, int]], None],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app_id = unique_name("topics")
    create_topics(kafka_bootstrap, {f"{app_id}-journal-changelog": 2})
    monkeypatch.setenv("ADOPTION_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ADOPTION_INPUT_TOPICS", f"{app_id}-in")

    status = main(["worker", "--bootstrap-servers", kafka_bootstrap, "--app-id", app_id])

    error = capsys.readouterr().err
    assert status == 2
    assert f"{app_id}-journal-changelog has 2 partitions" in error
    assert "Traceback" not in error
