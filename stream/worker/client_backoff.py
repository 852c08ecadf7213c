"""A pause between failed metadata requests of the Kafka client.

aiokafka 0.14.0 sends the next metadata request as soon as one fails when
it has a record batch for a partition without a known leader. A broker
that stops leaves its partitions without a leader, and every request then
fails at once with "connection refused". The producer's sender loop and the
client's metadata task then retry without pause: an idle worker made about
7,000 attempts a second and used a whole core until the broker came back.
:func:`pause_failed_metadata_updates` makes a client wait before it sends
another request after a failed one.

The pause works on the client's own pending update (``_md_update_fut`` and
``_md_update_waiter``), which are private to aiokafka. NOTE: only 0.14.0
was read and tested, while pyproject.toml allows 0.11 to 0.14. A request
during the pause creates the pending update at once, so code that waits
for a pending update still waits. The client's metadata task is woken when
the pause ends.
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
    """Request a metadata update now, or when the pause after a failed one ends.

    Returns a future of whether the update succeeded, as the client's own
    method does.
    """
    failed_at: float | None = getattr(client, "_metadata_failed_at", None)
    wait = 0.0 if failed_at is None else failed_at + METADATA_RETRY_PAUSE_SECONDS - time.monotonic()
    if wait > 0 and client._md_update_fut is None:
        # The update is pending from now on, so waiters wait for it. The metadata
        # task runs it when the pause ends.
        client._md_update_fut = client._loop.create_future()
        client._metadata_wake = client._loop.call_later(wait, _wake_metadata_task, client)
    future: asyncio.Future[bool]
    if client._md_update_fut is not None and not client._md_update_waiter.done():
        # An update is pending and the metadata task has not been woken for it yet.
        future = asyncio.shield(client._md_update_fut)
    else:
        future = _original_update(client)
    future.add_done_callback(functools.partial(_note_result, client))
    return future


def _wake_metadata_task(client: Any) -> None:
    if not client._md_update_waiter.done():
        client._md_update_waiter.set_result(None)


def _note_result(client: Any, future: "asyncio.Future[bool]") -> None:
    if future.cancelled() or future.exception() is not None:
        return
    client._metadata_failed_at = None if future.result() else time.monotonic()
