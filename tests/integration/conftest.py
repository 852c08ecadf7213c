"""Fixtures of the integration tests: deployments with fresh topics, and workers."""

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.integration.harness import Deployment, WorkerProcess


@pytest.fixture
def launch() -> Iterator[Callable[..., WorkerProcess]]:
    """Function ``launch(deployment, wait_ready=True, **env)`` that starts a worker and stops it after the test."""
    started: list[WorkerProcess] = []

    def start(deployment: Deployment, *, wait_ready: bool = True, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(deployment, **extra_env)
        started.append(worker)
        return worker.start(wait_ready=wait_ready)

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def new_deployment(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Callable[..., Deployment]:
    """Function ``new_deployment(prefix, input_partitions=4, **settings)`` with fresh topics."""

    def create(prefix: str, *, input_partitions: int = 4, **settings: str) -> Deployment:
        workdir = tmp_path / prefix
        workdir.mkdir()
        return Deployment.create(
            kafka_bootstrap,
            unique_name(prefix),
            workdir,
            input_partitions=input_partitions,
            settings=settings,
        )

    return create


@pytest.fixture
def new_topic(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    create_topics: Callable[[str, Mapping[str, int]], None],
) -> Callable[[str, int], str]:
    """Function ``new_topic(prefix, partitions)`` that creates a topic with a fresh name."""

    def create(prefix: str, partitions: int) -> str:
        name = unique_name(prefix)
        create_topics(kafka_bootstrap, {name: partitions})
        return name

    return create
