"""Fixtures of the integration tests: deployments with fresh topics, and workers."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Deployment, WorkerProcess


@pytest.fixture
def launch() -> Iterator[Callable[..., WorkerProcess]]:
    """Function ``launch(deployment, **env)`` that starts a worker and stops it after the test."""
    started: list[WorkerProcess] = []

    def start(deployment: Deployment, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(deployment, **extra_env)
        started.append(worker)
        return worker.start()

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
