"""The pause between failed metadata requests of the Kafka client."""

import asyncio
import time

import pytest
from aiokafka.client import AIOKafkaClient

from stream.worker import client_backoff

PAUSE_SECONDS = 0.2


@pytest.fixture(autouse=True)
def paused_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_backoff, "METADATA_RETRY_PAUSE_SECONDS", PAUSE_SECONDS)
    monkeypatch.setattr(
        AIOKafkaClient, "force_metadata_update", AIOKafkaClient.force_metadata_update
    )
    client_backoff.pause_failed_metadata_updates()


class ScriptedBroker:
    """Stands in for the broker's metadata responses: results from a list, with request times."""

    def __init__(self, results: list[bool]) -> None:
        self.results = results
        self.requested_at: list[float] = []

    async def update(self, cluster: object, topics: object) -> bool:
        self.requested_at.append(time.monotonic())
        await asyncio.sleep(0)
        return self.results.pop(0)


def test_request_after_failure_waits_for_pause() -> None:
    broker = ScriptedBroker([False, True, True])

    async def scenario() -> tuple[list[bool], bool]:
        # A client that never connects. Its own metadata task runs the scripted requests.
        client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1")
        client._metadata_update = broker.update
        task = asyncio.create_task(client._md_synchronizer())
        try:
            failed = await client.force_metadata_update()
            during_pause = client.force_metadata_update()
            # Code that waits for a pending update, as the group leader does
            # before it assigns partitions, must see this one.
            pending_visible = client._md_update_fut is not None
            retried = await during_pause
            after_success = await client.force_metadata_update()
        finally:
            task.cancel()
        return [failed, retried, after_success], pending_visible

    results, pending_visible = asyncio.run(scenario())

    first, second, third = broker.requested_at
    assert results == [False, True, True]
    assert pending_visible is True
    assert second - first >= PAUSE_SECONDS - 0.01
    assert third - second < PAUSE_SECONDS / 2
