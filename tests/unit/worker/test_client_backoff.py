"""The pause between failed metadata requests of the Kafka client."""

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiokafka.client import AIOKafkaClient

from stream.worker import client_backoff


class ScriptedUpdates:
    """Stands in for the client's own metadata update: results from a list, with call times."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.called_at: list[float] = []

    def __call__(self, client: object) -> "asyncio.Future[bool]":
        self.called_at.append(time.monotonic())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        # The client resolves the future after a request to the broker, never at once.
        loop.call_soon(future.set_result, self.answers.pop(0))
        return future


@pytest.fixture
def updates(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedUpdates]:
    scripted = ScriptedUpdates([False, False, True, True])
    monkeypatch.setattr(client_backoff, "_original_update", scripted)
    monkeypatch.setattr(client_backoff, "METADATA_RETRY_PAUSE_SECONDS", 0.2)
    monkeypatch.setattr(AIOKafkaClient, "force_metadata_update", AIOKafkaClient.force_metadata_update)
    client_backoff.pause_failed_metadata_updates()
    yield scripted


def test_retry_after_failure_waits(updates: ScriptedUpdates) -> None:
    client = object.__new__(AIOKafkaClient)

    async def update_four_times() -> list[bool]:
        return [await client.force_metadata_update() for _ in range(4)]

    results = asyncio.run(update_four_times())

    gaps = [later - earlier for earlier, later in zip(updates.called_at, updates.called_at[1:])]
    assert results == [False, False, True, True]
    # After each failure the next request waits; after a success it does not.
    assert gaps[0] >= 0.19
    assert gaps[1] >= 0.19
    assert gaps[2] < 0.1
