"""Fetched records waiting for the worker's stages, handed over in batches.

Faust turns every fetched record into an event, queues it for its stream,
and acknowledges it when the agent requests the next one. For the input
topics, which carry every event the worker counts, that path cost more CPU
than parsing the events. Its batches (``Stream.take_events``) are also
acknowledged when the worker stops in the middle of one, so Faust can commit
offsets of records whose output was never written. The consumer instead
appends the records of the input, repartition and all-tenants topics to an
:class:`InputBuffer` each (see ``SeekingConsumer._deliver``), as aiokafka
fetched them: in runs of consecutive records of one partition, without
turning each into a Faust message. The ingest, count and all-tenants stages
take them as a :class:`RecordBatch`, and acknowledge it once its output is
written.

The consumer empties the buffer whenever it stops the flow of records, as
when a rebalance starts. The seek back to the committed offsets that
follows every stop fetches those records again. The consumer tracks a
batch as in flight when a stage takes it, not before, so a rebalance waits
for the batch being processed and not for records dropped from the buffer.
"""

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple, TypeAlias

from aiokafka.structs import ConsumerRecord
from faust.types import TP

Record: TypeAlias = ConsumerRecord[Any, Any]


class Run(NamedTuple):
    """Records of one partition, in offset order, as one fetch returned them."""

    tp: TP
    records: list[Record]


class RecordBatch:
    """Runs taken from a buffer together, in flight until the stage acknowledges them.

    Faust keeps in-flight messages in a weak set and waits for them to be
    acknowledged before a rebalance goes on. The batch is put in that set in
    place of its records, so it has the two attributes Faust reads there.
    """

    __slots__ = ("runs", "acked", "refcount", "__weakref__")

    def __init__(self, runs: list[Run]) -> None:
        self.runs = runs
        self.acked = False
        self.refcount = 1



def next_offsets(runs: Iterable[Run]) -> dict[TP, int]:
    """Return the offset after the last record of each partition: the offsets to commit."""
    offsets: dict[TP, int] = {}
    for tp, records in runs:
        offsets[tp] = max(offsets.get(tp, 0), records[-1].offset + 1)
    return offsets


class InputBuffer:
    """Records of some topics between the consumer's fetch loop and the stage that reads them.

    It contains at most ``max_records`` plus one run, because the fetch
    loop waits for room before it appends to a full buffer.
    """

    def __init__(self, topics: Iterable[str], max_records: int) -> None:
        self.topics = frozenset(topics)
        self.max_records = max_records
        self._runs: deque[Run] = deque()
        self._size = 0
        self._filled = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return self._size

    def append(self, tp: TP, records: list[Record]) -> None:
        """Add fetched records of one partition, which the fetch loop adds in offset order."""
        if not records:
            return
        self._runs.append(Run(tp, records))
        self._size += len(records)
        if self._size >= self.max_records:
            self._room.clear()
        if not self._filled.is_set():
            self._filled.set()

    def has_room(self) -> bool:
        """Tell whether the buffer contains fewer than ``max_records`` records."""
        return self._size < self.max_records

    async def wait_for_room(self) -> None:
        """Wait until the buffer contains fewer than ``max_records`` records."""
        await self._room.wait()

    def clear(self) -> dict[TP, int]:
        """Drop every buffered record, and return the first dropped offset of each partition.

        The consumer calls it when it stops the flow, and fetches the records
        again from those offsets.
        """
        first: dict[TP, int] = {}
        for tp, records in self._runs:
            first.setdefault(tp, records[0].offset)
        self._runs.clear()
        self._size = 0
        self._filled.clear()
        self._room.set()
        return first

    async def take(self, max_records: int, within_seconds: float) -> RecordBatch:
        """Return up to ``max_records`` records, in the order they were fetched.

        It waits for the first record as long as it takes, then up to
        ``within_seconds`` for the batch to fill.
        """
        loop = asyncio.get_running_loop()
        while True:
            while not self._size:
                self._filled.clear()
                await self._filled.wait()
            deadline = loop.time() + within_seconds
            while self._size < max_records:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._filled.clear()
                try:
                    await asyncio.wait_for(self._filled.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            # A rebalance may have emptied the buffer meanwhile; then wait again.
            runs = self._take_runs(max_records)
            if self._size < self.max_records:
                self._room.set()
            if not self._size:
                self._filled.clear()
            if runs:
                return RecordBatch(runs)

    def _take_runs(self, max_records: int) -> list[Run]:
        """Remove and return the oldest runs, up to ``max_records`` records, splitting the last."""
        runs: list[Run] = []
        remaining = max_records
        buffered = self._runs
        while buffered and remaining > 0:
            run = buffered[0]
            if len(run.records) <= remaining:
                buffered.popleft()
                runs.append(run)
                remaining -= len(run.records)
            else:
                runs.append(Run(run.tp, run.records[:remaining]))
                buffered[0] = Run(run.tp, run.records[remaining:])
                remaining = 0
        self._size -= max_records - remaining
        return runs
