"""A pause between failed metadata requests of the Kafka client.

aiokafka 0.14.0 sends the next metadata request as soon as one fails when
it holds a record batch for a partition without a known leader.
A broker that stops leaves its partitions without a leader, and every
request then fails at once with "connection refused". The producer's sender
loop and the metadata task then retry without pause: a worker with no input
made about 7,000 attempts a second and used a whole core until the broker
came back. :func:`pause_failed_metadata_updates` makes a client wait before
it asks again after a failed request.
"""

import asyncio
import functools
import time
from typing import Any

from aiokafka.client import AIOKafkaClient

# The Kafka client's own default pause between retries (retry_backoff_ms) is 100 ms.
METADATA_RETRY_PAUSE_SECONDS = 0.5

_original_update = AIOKafkaClient.force_metadata_update


def pause_failed_metadata_updates() -> None:
    """Make every Kafka client of this process wait a moment after a failed metadata request.

    Calling it again changes nothing.
    """
    AIOKafkaClient.force_metadata_update = _force_metadata_update


def _force_metadata_update(client: AIOKafkaClient) -> "asyncio.Future[bool]":
    """Request a metadata update now, or after the pause if the last one failed.

    Returns a future of whether the update succeeded, as the client's own
    method does.
    """
    failed_at: float | None = getattr(client, "_metadata_failed_at", None)
    wait = 0.0 if failed_at is None else failed_at + METADATA_RETRY_PAUSE_SECONDS - time.monotonic()
    if wait > 0:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            return loop.create_task(_update_after(client, wait))
    future: asyncio.Future[bool] = _original_update(client)
    future.add_done_callback(functools.partial(_note_result, client))
    return future


async def _update_after(client: AIOKafkaClient, wait: float) -> bool:
    await asyncio.sleep(wait)
    return await _force_metadata_update(client)


def _note_result(client: Any, future: "asyncio.Future[bool]") -> None:
    if future.cancelled() or future.exception() is not None:
        return
    client._metadata_failed_at = None if future.result() else time.monotonic()
