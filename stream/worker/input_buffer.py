"""Fetched input records waiting for the ingest task, handed over in batches.

Faust turns every fetched record into an event, queues it for its stream,
and acknowledges it when the agent asks for the next one. For the input
topics, which carry every event the worker counts, that path cost more CPU
than parsing the events. The consumer instead appends the input topics'
records to an :class:`InputBuffer` (see ``SeekingConsumer._deliver``), and
the ingest task takes them as lists and acknowledges each list at once.

The consumer empties the buffer whenever it stops the flow of records, as
when a rebalance starts; the seek back to the committed offsets that
follows every stop fetches those records again. It tracks records as in
flight when the ingest task takes them, not before, so a rebalance waits
for the batch being processed and not for records dropped from the buffer.
"""

import asyncio
from collections.abc import Iterable

from faust.types import Message


class InputBuffer:
    """Records of the input topics between the consumer's fetch loop and the ingest task.

    It holds at most ``max_records``: the fetch loop waits for room before
    it appends to a full buffer.
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
        """Tell whether the buffer holds fewer than ``max_records`` records."""
        return len(self._records) < self.max_records

    async def wait_for_room(self) -> None:
        """Wait until the buffer holds fewer than ``max_records`` records."""
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
            taken = records[:max_records]
            del records[:max_records]
            if len(records) < self.max_records:
                self._room.set()
            if not records:
                self._filled.clear()
            if taken:
                return taken
