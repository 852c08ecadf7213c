"""Faust's aiokafka consumer with seeks that no fetch runs across.

After each rebalance Faust seeks the stream partitions back to their
committed offsets. faust-streaming 0.15.3 resumes those partitions before the
seek, and table recovery leaves the fetcher running, so records are fetched
and delivered while the seek is in progress. aiokafka's ``seek_to_committed``
looks up and seeks one partition after another, and Faust overwrites its
record of the last delivered offset of every partition only when all are
done. A fetch that overlaps this moves the position past records that no
stream receives, and Faust marks them as a gap, which it commits as if
processed. In tests of a restart under load, single records and runs of a
hundred were lost this way, in both processing modes.

:class:`SeekingConsumer` stops the flow of records for the seek, and Faust
resumes it once it has emptied its streams' buffers. Because the seek goes
back to the committed offsets, records delivered before it are delivered
again afterwards. The ingest task skips the offsets
it has processed (see ``AdoptionApp._unprocessed``).

When the flow stops, the consumer drops the rest of its fetch and the
records waiting in the buffers, and the seek that follows must fetch them
again. A seek to the committed offsets does so only for partitions whose
committed offset is above 0. aiokafka leaves the others past the dropped
records: every changelog partition, and an input partition whose first
records are read before any commit. In a test of two workers, one worker
never counted the dropped first records of its input partitions. A table
recovery left past dropped changelog records waits for them forever. So the
consumer notes the first dropped offset of each partition, and the seek
moves partitions without a committed offset back to it
(:meth:`SeekingConsumer.perform_seek`).

The consumer also delivers each fetch's records in one task instead of one
task per record (see :meth:`SeekingConsumer._drain_messages`), and hands the
records of the worker's topics to its stages in lists, past Faust's streams
(see :mod:`stream.worker.input_buffer`).
"""

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer, Transport
from faust.types import TP
from faust.types import tuples as faust_tuples
from mode.utils.futures import notify

from stream.worker.input_buffer import InputBuffer, Record, RecordBatch

# Records delivered between two chances for other tasks to run.
YIELD_EVERY = 100
# Faust's lock around its acknowledgement books (faust-streaming 0.15.3);
# earlier versions keep the books without one.
ACK_LOCK: contextlib.AbstractContextManager[Any] = getattr(
    faust_tuples, "ack_lock", contextlib.nullcontext()
)


class SeekingConsumer(Consumer):
    """Faust's aiokafka consumer, pausing the flow of records while it seeks."""

    # The first offset of each partition's records dropped since the last seek.
    _dropped: dict[TP, int]

    def __post_init__(self) -> None:
        super().__post_init__()
        self._dropped = {}

    @property
    def buffers(self) -> dict[str, InputBuffer]:
        """Where the records of each buffered topic go instead of Faust's streams, by topic."""
        buffers: dict[str, InputBuffer] = getattr(self.transport, "buffers", {})
        return buffers

    def track_batch(self, batch: RecordBatch) -> None:
        """Mark a batch taken from a buffer as in flight until acknowledged.

        A rebalance waits for it (Faust's ``wait_empty``), as for the events
        an agent is processing.
        """
        self._unacked_messages.add(batch)  # type: ignore[arg-type]
        # Faust's stall check logs an error for a partition with unread records
        # whose stream has taken no event since start, so note the take for it.
        now = time.monotonic()
        inbound = self.app.monitor.stream_inbound_time
        for run in batch.runs:
            inbound[run.tp] = now

    def ack_batch(self, batch: RecordBatch) -> None:
        """Acknowledge processed records, so that Faust commits the offsets after them.

        It keeps the books as Faust's ``Consumer.ack`` does, record by
        record, but takes Faust's lock once for the batch.
        """
        acks_enabled_for = self.app.topics.acks_enabled_for
        committed_offsets = self._committed_offset
        acked_indexes = self._acked_index
        acked_offsets = self._acked
        added = 0
        with ACK_LOCK:
            if batch.acked:
                return
            batch.acked = True
            for tp, records in batch.runs:
                if not acks_enabled_for(tp.topic):
                    continue
                committed = committed_offsets[tp]
                acked_index = acked_indexes[tp]
                acked = acked_offsets[tp]
                for record in records:
                    offset = record.offset
                    if (committed is None or offset >= committed) and offset not in acked_index:
                        acked_index.add(offset)
                        acked.append(offset)
                        added += 1
            self._n_acked += added
            self._unacked_messages.discard(batch)  # type: ignore[arg-type]
            notify(self._waiting_for_ack)

    async def perform_seek(self) -> None:
        """Seek every assigned partition to its committed offset, with no fetch running.

        Stopping the flow makes the fetch loop drop the rest of its current
        fetch, cancel the delivery in progress, and wait. The seek goes back
        to the committed offsets, or, for a partition without one, to its
        first dropped record, so all of it is fetched again. The flow
        stays stopped. Faust's table recovery, which calls this, resumes it
        right after it has emptied the streams' buffers. Records delivered
        before that would be dropped from those buffers with their offsets
        marked as read, and no seek would fetch them again. The fetch loop
        calls this too, when it finds the flow stopped.
        """
        self.stop_flow()
        committed = await self.seek_to_committed()
        # Update the read and committed offsets as Faust's own perform_seek does.
        self._read_offset.update(
            {
                tp: offset if offset is not None and offset >= 0 else None
                for tp, offset in committed.items()
            }
        )
        self._committed_offset.update(
            {tp: offset or None for tp, offset in committed.items() if offset is not None}
        )
        await self._seek_back_to_dropped(committed)

    async def _seek_back_to_dropped(self, committed: Mapping[TP, int | None]) -> None:
        """Seek partitions without a committed offset back to their first dropped record.

        aiokafka seeks a partition only to a committed offset above 0. The
        seek only goes back, because a rebalance since the drop may have reset
        the position to the earliest offset, before records not read yet.
        """
        dropped, self._dropped = self._dropped, {}
        if not dropped:
            return
        assigned = self.assignment()
        rewind: dict[TP, int] = {}
        for tp, offset in dropped.items():
            if tp not in assigned or committed.get(tp):
                continue
            position = await self.position(tp)
            if position is not None and offset < position:
                rewind[tp] = offset
        if rewind:
            self.log.info("fetching dropped records again from %s", _offsets_text(rewind))
            await self.seek_wait(rewind)

    def stop_flow(self) -> None:
        """Block the consumer from delivering records, and empty the input buffer.

        A seek back to the committed offsets follows every stop: the
        rebalance's, the one in :meth:`perform_seek`, or the fetch loop's
        when it finds the flow stopped. So the buffered records come again.
        """
        super().stop_flow()
        for buffer in set(self.buffers.values()):
            self._note_dropped(buffer.clear())

    def _note_dropped(self, first_offsets: Mapping[TP, int]) -> None:
        """Note the first offset of each partition's records that were fetched and dropped."""
        dropped = self._dropped
        for tp, offset in first_offsets.items():
            previous = dropped.get(tp)
            if previous is None or offset < previous:
                dropped[tp] = offset

    async def _drain_messages(self, fetcher: Any) -> None:
        """Fetch records and hand them to the streams until the consumer or fetcher stops.

        Faust's own loop races each record's delivery against a stop of the
        flow in a task of its own, four futures a record, which took more
        CPU than the whole counting stage. This loop races the delivery of a
        whole fetch instead, and checks before each record, as Faust's fetch
        iterator does, that the flow runs and no rebalance has happened since
        the fetch. Otherwise the rest of the fetch is dropped without being
        marked as read. Commits run outside the race, so a stop never cancels
        one half-way.
        """
        should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched = await self._fetch(timeout=1.0)
                generation = self.app.consumer_generation_id
                # getmany may return at once many times in a row without
                # giving the event loop a turn.
                await self.sleep(0)
                position = (0, 0)
                while position[0] < len(fetched) and self._may_deliver(generation):
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                        if not self._may_deliver(generation):
                            break
                    delivery = self._deliver(fetched, position, generation)
                    results = await self.wait_first(delivery, self.suspend_flow.wait())
                    if results.stopped or results.done != [delivery]:
                        break  # the flow stopped: drop the rest of the fetch
                    position = results.results[0]
                if position[0] < len(fetched):
                    # The rest of the fetch is dropped, not delivered.
                    self._note_dropped(undelivered(fetched, position, self._read_offset))
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _fetch(self, timeout: float) -> list[tuple[TP, list[Any]]]:
        """Return the records of the next fetch, partition after partition.

        Records of buffered topics stay as aiokafka returned them; the rest
        become Faust messages for Faust's streams. Faust's ``getmany`` yields
        one record at a time and checks before each that the flow runs and
        no rebalance has happened, since its reader may wait between two
        records. The fetch loop here takes a whole fetch without waiting and
        makes those checks before it delivers each partition's records
        (:meth:`_deliver`), so this makes them once per fetch, and notes each
        partition's end offset once instead of per record.
        """
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return []
        if not self.flow_active:
            # As in Faust's getmany: the flow stopped during the fetch, so seek back.
            self._note_dropped(
                {tp: tp_records[0].offset for tp, tp_records in records.items() if tp_records}
            )
            try:
                await self.perform_seek()
            except Exception as exc:  # noqa: BLE001 - as Faust, the next fetch seeks again
                self.log.warning("exception performing seek when flow not active %r", exc)
            return []
        buffered = self._buffered_partitions
        buffers = self.buffers
        to_message = self._to_message
        track_end_offset = self.app.monitor.track_tp_end_offset
        fetched: list[tuple[TP, list[Any]]] = []
        for tp, tp_records in records.items():
            if not tp_records:
                continue
            if active_partitions is None or tp in active_partitions or tp in buffered:
                track_end_offset(tp, self.highwater(tp))
                if tp.topic in buffers:
                    fetched.append((tp, list(tp_records)))
                else:
                    fetched.append((tp, [to_message(tp, record) for record in tp_records]))
        return fetched

    def _may_deliver(self, generation: int) -> bool:
        """Tell whether records fetched in consumer generation ``generation`` may go on."""
        return (
            self.flow_active
            and not self.should_stop
            and self.app.consumer_generation_id == generation
        )

    async def _deliver(
        self, fetched: list[tuple[TP, list[Any]]], position: tuple[int, int], generation: int
    ) -> tuple[int, int]:
        """Deliver fetched records from ``position`` on; return where it stopped.

        A position is the index of a partition's records in the fetch and of
        a record among them. It stops before a record when a commit is due
        or delivery may not go on. As in Faust's own loop, a record older
        than the partition's last delivered one is dropped, as after a seek
        back. A jump forward is recorded as a gap. The records of a buffered
        topic go to their buffer together, once it has room; the rest go to
        Faust's streams one by one. After each wait it checks again that
        delivery may go on.
        """
        callback = self.callback
        read_offset = self._read_offset
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        may_deliver = self._may_deliver
        buffer_of = self.buffers.get
        first_run, first_index = position
        since_yield = 0
        for run_index in range(first_run, len(fetched)):
            tp, records = fetched[run_index]
            start = first_index if run_index == first_run else 0
            buffer = buffer_of(tp.topic)
            if buffer is not None:
                if commit_every is not None and self._n_acked >= commit_every:
                    return run_index, start
                if not may_deliver(generation):
                    return run_index, start
                last = read_offset[tp]
                pending = records[start:] if start else records
                if last is not None and pending[0].offset < last:
                    pending = [record for record in pending if record.offset >= last]
                if not pending:
                    continue
                if acks_enabled_for(tp.topic):
                    gaps = offset_gaps(last, pending)
                    for gap_from, gap_to in gaps:
                        await self._add_gap(tp, gap_from, gap_to)
                    if gaps and not may_deliver(generation):
                        return run_index, start
                if not buffer.has_room():
                    await buffer.wait_for_room()
                    if not may_deliver(generation):
                        return run_index, start
                buffer.append(tp, pending)
                read_offset[tp] = pending[-1].offset
                since_yield += len(pending)
            else:
                for index in range(start, len(records)):
                    if commit_every is not None and self._n_acked >= commit_every:
                        return run_index, index
                    if not may_deliver(generation):
                        return run_index, index
                    message = records[index]
                    offset = message.offset
                    last = read_offset[tp]
                    if last is None or offset >= last:
                        if last and offset - last > 1 and acks_enabled_for(message.topic):
                            await self._add_gap(tp, last + 1, offset)
                            if not may_deliver(generation):
                                return run_index, index
                        await callback(message)
                        read_offset[tp] = offset
                    since_yield += 1
            if since_yield >= YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)
        return len(fetched), 0


def undelivered(
    fetched: list[tuple[TP, list[Any]]],
    position: tuple[int, int],
    read_offset: Mapping[TP, int | None],
) -> dict[TP, int]:
    """Return the first offset of each partition's undelivered records of ``fetched``.

    These are the records from ``position`` on, after the offset last
    delivered, because a delivery cut short by a stop of the flow may have
    delivered some records past ``position``.
    """
    first_run, first_index = position
    first: dict[TP, int] = {}
    for run_index in range(first_run, len(fetched)):
        tp, records = fetched[run_index]
        start = first_index if run_index == first_run else 0
        last = read_offset.get(tp)
        for record in records[start:]:
            if last is None or record.offset > last:
                first.setdefault(tp, record.offset)
                break
    return first


def _offsets_text(offsets: Mapping[TP, int]) -> str:
    """Format partitions and offsets for a log line, like ``topic[0]=12``."""
    return ", ".join(
        f"{tp.topic}[{tp.partition}]={offset}" for tp, offset in sorted(offsets.items())
    )


def offset_gaps(last: int | None, records: list[Record]) -> list[tuple[int, int]]:
    """Return the gaps before and between ``records`` as Faust's fetch loop records them.

    ``last`` is the offset last delivered from the partition. Faust records
    a jump from offset ``a`` to ``b`` as the gap ``(a + 1, b)`` and, as its
    loop does, none after a last offset of 0 or none.
    """
    gaps: list[tuple[int, int]] = []
    first = records[0].offset
    if last and first - last > 1:
        gaps.append((last + 1, first))
    if records[-1].offset - first != len(records) - 1:
        previous = first
        for record in records[1:]:
            offset = record.offset
            if previous and offset - previous > 1:
                gaps.append((previous + 1, offset))
            previous = offset
    return gaps


class SeekingTransport(Transport):
    """Faust's aiokafka transport with :class:`SeekingConsumer`."""

    Consumer = SeekingConsumer
    # Set by the app: the records of these topics skip Faust's streams.
    buffers: dict[str, InputBuffer] = {}


def use_transport(
    app: faust.App,
    transport: type[SeekingTransport] = SeekingTransport,
    buffers: Iterable[InputBuffer] = (),
) -> None:
    """Make ``app`` consume through ``transport``, and send each buffer's topics to that buffer.

    Call it right after creating the app, before anything creates Faust's
    default transport.
    """
    instance = transport(app.conf.broker_consumer, app)
    instance.buffers = {topic: buffer for buffer in buffers for topic in buffer.topics}
    app.transport = instance
