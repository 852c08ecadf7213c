"""Fetched records waiting for the worker's stages, handed over in batches.

Faust turns every fetched record into an event, queues it for its stream,
and acknowledges it when the agent requests the next one. For the input
topics, which carry every event the worker counts, that path cost more CPU
than parsing the events. Its batches (``Stream.take_events``) are also
acknowledged when the worker stops in the middle of one, so Faust can commit
offsets of records whose output was never written. The consumer instead
appends the records of the input, repartition and all-tenants topics to an
:class:`InputBuffer` each (see ``SeekingConsumer._deliver``). The ingest,
count and all-tenants stages take them as lists, and acknowledge a list
once its output is written.

The consumer empties the buffer whenever it stops the flow of records, as
when a rebalance starts. The seek back to the committed offsets that
follows every stop fetches those records again. The consumer tracks a
batch as in flight when a stage takes it, not before, so a rebalance waits
for the batch being processed and not for records dropped from the buffer.
"""

import asyncio
from collections.abc import Iterable

from faust.types import Message


class InputBuffer:
    """Records of some topics between the consumer's fetch loop and the stage that reads them.

    It contains at most ``max_records``, because the fetch loop waits for
    room before it appends to a full buffer.
    """

    def __init__(self, topics: Iterable[str], max_records: int) -> None:
        self.topics = frozenset(topics)
        self.max_records = max_records
        self._records: list[Message] = []
        self._filled = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._records)

    def append(self, message: Message) -> None:
        """Add a fetched record; the fetch loop calls it in offset order per partition."""
        self._records.append(message)
        if len(self._records) >= self.max_records:
            self._room.clear()
        if not self._filled.is_set():
            self._filled.set()

    def has_room(self) -> bool:
        """Tell whether the buffer contains fewer than ``max_records`` records."""
        return len(self._records) < self.max_records

    async def wait_for_room(self) -> None:
        """Wait until the buffer contains fewer than ``max_records`` records."""
        await self._room.wait()

    def clear(self) -> None:
        """Drop every buffered record; the consumer calls it when it stops the flow."""
        self._records.clear()
        self._filled.clear()
        self._room.set()

    async def take(self, max_records: int, within_seconds: float) -> list[Message]:
        """Return up to ``max_records`` records, in the order they were fetched.

        It waits for the first record as long as it takes, then up to
        ``within_seconds`` for the batch to fill.
        """
        loop = asyncio.get_running_loop()
        records = self._records
        while True:
            while not records:
                self._filled.clear()
                await self._filled.wait()
            deadline = loop.time() + within_seconds
            while len(records) < max_records:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._filled.clear()
                try:
                    await asyncio.wait_for(self._filled.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            # A rebalance may have emptied the buffer meanwhile; then wait again.
            batch = records[:max_records]
            del records[:max_records]
            if len(records) < self.max_records:
                self._room.set()
            if not records:
                self._filled.clear()
            if batch:
                return batch
