"""Tests that need no broker: seeks with the flow stopped, re-read records, fetch delivery."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from faust.types import Message as FaustMessage

from stream.settings import Settings
from stream.worker import app as app_module
from stream.worker.app import AdoptionApp
from stream.worker.consumer import SeekingConsumer, offset_gaps
from stream.worker.input_buffer import InputBuffer, RecordBatch, Run

INPUT = TP("in", 0)


@pytest.fixture
def app(tmp_path: Path) -> AdoptionApp:
    return AdoptionApp(Settings(data_dir=tmp_path))


def seek_recorder(
    consumer: SeekingConsumer, during: Callable[[], None] = lambda: None
) -> list[bool]:
    """Replace the consumer's seek with one that records whether records flowed during it."""
    flowing: list[bool] = []

    async def seek_to_committed() -> Mapping[TP, int]:
        flowing.append(consumer.flow_active)
        during()
        return {INPUT: 42}

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    return flowing


# Seeks


def test_app_consumes_through_seeking_consumer(app: AdoptionApp) -> None:
    assert isinstance(app.app.consumer, SeekingConsumer)


def test_seek_leaves_flow_stopped(app: AdoptionApp) -> None:
    # Faust's table recovery resumes the flow after the seek, once it has
    # emptied the streams' buffers. Records delivered before that would be
    # dropped from them with their offsets marked as read.
    consumer = app.app.consumer
    consumer.resume_flow()
    flowing = seek_recorder(consumer)

    asyncio.run(consumer.perform_seek())

    assert flowing == [False]
    assert not consumer.flow_active
    assert consumer._read_offset[INPUT] == 42


def test_seek_with_flow_stopped_leaves_it_stopped(app: AdoptionApp) -> None:
    consumer = app.app.consumer
    consumer.stop_flow()
    flowing = seek_recorder(consumer)

    asyncio.run(consumer.perform_seek())

    assert flowing == [False]
    assert not consumer.flow_active


# Records delivered again after a seek


@dataclass(frozen=True)
class Message:
    tp: TP
    offset: int

    @property
    def topic(self) -> str:
        return self.tp.topic


def run_of(tp: TP, offsets: Iterable[int]) -> Run:
    return Run(tp, [Message(tp, offset) for offset in offsets])  # type: ignore[misc]


def offsets_of(runs: list[Run]) -> list[tuple[int, int]]:
    return [(tp.partition, record.offset) for tp, records in runs for record in records]


def test_unprocessed_skips_offsets_already_processed(app: AdoptionApp) -> None:
    app._input_next_offset[INPUT] = 10
    runs = [run_of(INPUT, (8, 9, 10, 11)), run_of(TP("in", 1), [3])]

    assert offsets_of(app._unprocessed(runs)) == [(0, 10), (0, 11), (1, 3)]
    assert app.metrics.reread.labels("in")._value.get() == 2


def test_unprocessed_skips_repeats_within_a_batch(app: AdoptionApp) -> None:
    # After a seek the records delivered before it come again in the same batch.
    runs = [run_of(INPUT, (5, 6, 7)), run_of(INPUT, (5, 6, 7, 8)), run_of(INPUT, [7])]

    assert offsets_of(app._unprocessed(runs)) == [(0, 5), (0, 6), (0, 7), (0, 8)]
    assert app.metrics.reread.labels("in")._value.get() == 4


def test_unprocessed_keeps_gaps(app: AdoptionApp) -> None:
    # A read_committed consumer skips transaction markers and aborted records.
    app._input_next_offset[INPUT] = 10

    assert offsets_of(app._unprocessed([run_of(INPUT, (12, 20))])) == [(0, 12), (0, 20)]


# Delivering a fetch


def fetch_of(offsets: list[int]) -> list[Run]:
    return [run_of(INPUT, offsets)]


def flowing(app: AdoptionApp) -> SeekingConsumer:
    consumer: SeekingConsumer = app.app.consumer
    consumer.resume_flow()
    return consumer


def recorder() -> tuple[list[int], Callable[[Message], Awaitable[None]]]:
    """Return a list and a stream callback that appends each delivered offset to it."""
    delivered: list[int] = []

    async def callback(message: Message) -> None:
        delivered.append(message.offset)

    return delivered, callback


def run_drain(consumer: SeekingConsumer, fetches: list[list[Run]], callback: Any) -> None:
    """Run the fetch loop over ``fetches``, then stop it."""

    class Fetcher:
        def __init__(self) -> None:
            self._stopped = asyncio.Event()

    fetcher = Fetcher()

    async def fetch(timeout: float) -> list[Run]:
        if not fetches:
            fetcher._stopped.set()
            return []
        return fetches.pop(0)

    consumer._fetch = fetch  # type: ignore[method-assign]
    consumer.callback = callback
    consumer.loop.run_until_complete(consumer._drain_messages(fetcher))


def test_fetch_is_delivered_in_order_and_marked_read(app: AdoptionApp) -> None:
    consumer = flowing(app)
    delivered, callback = recorder()
    run_drain(consumer, [fetch_of([3, 4, 5]), fetch_of([3, 4, 6])], callback)

    # Records older than the last delivered one are dropped, as in Faust's loop.
    assert delivered == [3, 4, 5, 6]
    assert consumer._read_offset[INPUT] == 6


def test_flow_stopped_during_fetch_drops_rest_unread(app: AdoptionApp) -> None:
    consumer = flowing(app)
    delivered: list[int] = []

    async def callback(message: Message) -> None:
        delivered.append(message.offset)
        if message.offset == 12:
            consumer.stop_flow()
            await asyncio.sleep(0.05)

    run_drain(consumer, [fetch_of([10, 11, 12, 13, 14])], callback)

    # The records after the stop are neither delivered nor marked as read, so
    # nothing is counted as a gap and the seek that follows fetches them again.
    assert delivered == [10, 11, 12]
    assert consumer._read_offset[INPUT] == 11
    assert not consumer._gap.get(INPUT)
    # The delivery of 12 was cut short, so the seek goes back to it.
    assert consumer._dropped == {INPUT: 12}


def test_due_commit_runs_between_deliveries(app: AdoptionApp) -> None:
    consumer = flowing(app)
    consumer._commit_every = 2
    events: list[str] = []

    async def callback(message: Message) -> None:
        events.append(f"deliver {message.offset}")
        consumer._n_acked += 1

    async def commit(*args: Any, **kwargs: Any) -> bool:
        events.append(f"commit after {consumer._n_acked}")
        return True

    consumer.commit = commit  # type: ignore[method-assign]
    run_drain(consumer, [fetch_of([0, 1, 2, 3])], callback)

    # A commit falls due after two acks and runs before the next delivery.
    assert events == ["deliver 0", "deliver 1", "commit after 0", "deliver 2", "deliver 3"]


def test_flow_stopped_before_delivery_starts_delivers_nothing(app: AdoptionApp) -> None:
    consumer = flowing(app)
    delivered, callback = recorder()

    # The flow stops in the loop turn between the fetch and its delivery, as
    # when a seek starts there.
    fetch = fetch_of(list(range(150)))

    class StopAfterFetch(list[Run]):
        def __len__(self) -> int:
            # The fetch loop reads the length once the fetch has returned.
            if consumer.flow_active:
                consumer.loop.call_soon(consumer.stop_flow)
            return super().__len__()

    run_drain(consumer, [StopAfterFetch(fetch)], callback)

    assert delivered == []
    assert consumer._read_offset[INPUT] is None


def test_rebalance_during_commit_drops_rest_of_fetch(app: AdoptionApp) -> None:
    consumer = flowing(app)
    consumer._commit_every = 2
    delivered: list[int] = []

    async def callback(message: Message) -> None:
        delivered.append(message.offset)
        consumer._n_acked += 1

    async def commit(*args: Any, **kwargs: Any) -> bool:
        # A rebalance stops the flow, seeks and resumes it while the commit runs.
        consumer.stop_flow()
        app.app.consumer_generation_id += 1
        consumer.resume_flow()
        return True

    consumer.commit = commit  # type: ignore[method-assign]
    run_drain(consumer, [fetch_of([0, 1, 2, 3, 4, 5])], callback)

    # The records fetched before the rebalance may belong to revoked partitions.
    assert delivered == [0, 1]


# Records of the input topics, past Faust's streams

BUFFERED = TP("support-interactions", 1)


def buffered_fetch(offsets: list[int]) -> list[Run]:
    return [run_of(BUFFERED, offsets)]


def buffered_offsets(buffer: InputBuffer) -> list[int]:
    return [record.offset for run in buffer._runs for record in run.records]


def small_buffer(app: AdoptionApp, max_records: int) -> InputBuffer:
    buffer = InputBuffer(["support-interactions"], max_records)
    app.app.transport.buffers = {"support-interactions": buffer}  # type: ignore[attr-defined]
    return buffer


def test_input_records_bypass_streams(app: AdoptionApp) -> None:
    consumer = flowing(app)
    delivered, callback = recorder()
    fetch = [*buffered_fetch([5, 6]), run_of(INPUT, [9]), *buffered_fetch([7])]

    run_drain(consumer, [fetch], callback)

    assert buffered_offsets(app.input_buffer) == [5, 6, 7]
    assert delivered == [9]
    assert consumer._read_offset[BUFFERED] == 7
    assert consumer._read_offset[INPUT] == 9


def test_delivery_waits_for_room_in_the_buffer(app: AdoptionApp) -> None:
    consumer = flowing(app)
    buffer = small_buffer(app, max_records=2)
    held: list[int] = []
    taken: list[list[int]] = []

    async def take() -> None:
        batch = await buffer.take(2, within_seconds=0)
        taken.append([record.offset for run in batch.runs for record in run.records])

    consumer.loop.call_later(0.05, lambda: held.append(len(buffer)))
    consumer.loop.call_later(0.1, lambda: consumer.loop.create_task(take()))

    run_drain(consumer, [[*buffered_fetch([0, 1]), *buffered_fetch([2, 3])]], recorder()[1])

    # Delivery stopped at two records until the ingest task took them.
    assert held == [2]
    assert taken == [[0, 1]]
    assert buffered_offsets(buffer) == [2, 3]


def test_stop_while_full_delivers_nothing(app: AdoptionApp) -> None:
    consumer = flowing(app)
    buffer = small_buffer(app, max_records=1)
    buffer.append(*run_of(INPUT, [100]))
    consumer.loop.call_later(0.05, consumer.stop_flow)

    run_drain(consumer, [buffered_fetch([0, 1, 2])], recorder()[1])

    # Stopping the flow emptied the buffer; nothing fetched went in or was marked read.
    assert len(buffer) == 0
    assert consumer._read_offset[BUFFERED] is None


def test_stop_during_gap_delivers_nothing(app: AdoptionApp) -> None:
    consumer = flowing(app)
    app.app.topics.acking_topics.add(BUFFERED.topic)

    async def add_gap(tp: TP, start: int, end: int) -> None:
        consumer.stop_flow()  # a rebalance starts while the gap is recorded

    consumer._add_gap = add_gap  # type: ignore[method-assign]
    consumer._read_offset[BUFFERED] = 4
    run_drain(consumer, [buffered_fetch([5, 9])], recorder()[1])

    assert len(app.input_buffer) == 0
    assert consumer._read_offset[BUFFERED] == 4


def test_buffered_run_records_gaps_as_faust_does(app: AdoptionApp) -> None:
    consumer = flowing(app)
    app.app.topics.acking_topics.add(BUFFERED.topic)
    consumer._read_offset[BUFFERED] = 4
    gaps: list[tuple[int, int]] = []

    async def add_gap(tp: TP, start: int, end: int) -> None:
        gaps.append((start, end))

    consumer._add_gap = add_gap  # type: ignore[method-assign]
    run_drain(consumer, [buffered_fetch([5, 8, 9, 12]), buffered_fetch([15])], recorder()[1])

    # Faust's loop records the jump from a to b as (a + 1, b), record by record.
    assert gaps == [(6, 8), (10, 12), (13, 15)]
    assert buffered_offsets(app.input_buffer) == [5, 8, 9, 12, 15]
    assert consumer._read_offset[BUFFERED] == 15


@pytest.mark.parametrize(
    ("last", "offsets", "expected"),
    [
        (None, [0, 1, 2], []),
        (4, [5, 6, 7], []),
        (4, [7, 8], [(5, 7)]),
        (0, [7, 9], [(8, 9)]),  # Faust checks no jump after a last offset of 0
        (None, [0, 3], []),  # nor after offset 0 itself
        (None, [3, 4, 10, 11, 20], [(5, 10), (12, 20)]),
    ],
)
def test_offset_gaps(
    last: int | None, offsets: list[int], expected: list[tuple[int, int]]
) -> None:
    assert offset_gaps(last, run_of(BUFFERED, offsets).records) == expected  # type: ignore[arg-type]


def test_stop_flow_empties_buffer(app: AdoptionApp) -> None:
    consumer = flowing(app)
    app.input_buffer.append(*run_of(BUFFERED, [3]))

    # Faust resumes its flow control after table recovery, when the seek has
    # already resumed the flow and records may be buffered: they must stay.
    app.app.flow_control.resume()
    assert len(app.input_buffer) == 1

    consumer.stop_flow()
    assert len(app.input_buffer) == 0


# Records dropped when the flow stops, fetched again


@dataclass
class SeekRecorder:
    """A consumer's seeks, with the committed offsets and positions it is given."""

    committed: dict[TP, int | None]
    positions: dict[TP, int]
    seeks: list[dict[TP, int]]


def record_seeks(
    consumer: SeekingConsumer, committed: dict[TP, int | None], positions: dict[TP, int]
) -> SeekRecorder:
    """Replace the consumer's broker calls with stubs that return the given offsets."""
    recorder = SeekRecorder(committed, positions, [])

    async def seek_to_committed() -> Mapping[TP, int | None]:
        return recorder.committed

    async def position(tp: TP) -> int:
        return recorder.positions[tp]

    async def seek_wait(partitions: Mapping[TP, int]) -> None:
        recorder.seeks.append(dict(partitions))

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign,assignment]
    consumer.position = position  # type: ignore[method-assign]
    consumer.seek_wait = seek_wait  # type: ignore[method-assign]
    consumer.assignment = lambda: set(committed)  # type: ignore[method-assign]
    return recorder


def test_seek_back_to_buffered_records(app: AdoptionApp) -> None:
    # The buffered records are the partitions' first: nothing is committed,
    # so the seek goes back to their own offsets.
    consumer = flowing(app)
    other = TP(BUFFERED.topic, 2)
    app.input_buffer.append(*run_of(BUFFERED, [0, 1, 2]))
    app.input_buffer.append(*run_of(other, [7, 8]))
    app.input_buffer.append(*run_of(BUFFERED, [3]))
    seeks = record_seeks(consumer, {BUFFERED: None, other: 0}, {BUFFERED: 4, other: 9})

    asyncio.run(consumer.perform_seek())

    assert seeks.seeks == [{BUFFERED: 0, other: 7}]
    assert consumer._dropped == {}


def test_committed_partition_not_sought_back(app: AdoptionApp) -> None:
    consumer = flowing(app)
    app.input_buffer.append(*run_of(BUFFERED, [50, 51]))
    seeks = record_seeks(consumer, {BUFFERED: 50}, {BUFFERED: 52})

    asyncio.run(consumer.perform_seek())

    assert seeks.seeks == []


def test_seek_never_moves_forward(app: AdoptionApp) -> None:
    # A rebalance after the drop set the position afresh, to the earliest
    # offset: records before the dropped ones are not read yet.
    consumer = flowing(app)
    app.input_buffer.append(*run_of(BUFFERED, [30, 31]))
    seeks = record_seeks(consumer, {BUFFERED: None}, {BUFFERED: 0})

    asyncio.run(consumer.perform_seek())

    assert seeks.seeks == []


def test_revoked_partition_not_sought_back(app: AdoptionApp) -> None:
    consumer = flowing(app)
    app.input_buffer.append(*run_of(BUFFERED, [5]))
    seeks = record_seeks(consumer, {}, {})

    asyncio.run(consumer.perform_seek())

    assert seeks.seeks == []


def test_fetch_after_stop_sought_back(app: AdoptionApp) -> None:
    consumer = app.app.consumer
    consumer.stop_flow()
    fetched = {BUFFERED: [Message(BUFFERED, 12), Message(BUFFERED, 13)]}

    async def wait_next_records(timeout: float) -> tuple[Any, Any]:
        return fetched, None

    consumer._wait_next_records = wait_next_records  # type: ignore[method-assign]
    seeks = record_seeks(consumer, {BUFFERED: None}, {BUFFERED: 14})

    assert asyncio.run(consumer._fetch(timeout=1.0)) == []
    assert seeks.seeks == [{BUFFERED: 12}]


def faust_message(tp: TP, offset: int) -> FaustMessage:
    return FaustMessage(tp.topic, tp.partition, offset, 0.0, 0, None, None, b"{}", None, tp=tp)


def batch_of(*runs: Run) -> RecordBatch:
    return RecordBatch(list(runs))


def test_taken_batch_in_flight_until_acked(app: AdoptionApp) -> None:
    consumer = flowing(app)
    app.app.topics.acking_topics.add(BUFFERED.topic)
    consumer._committed_offset[BUFFERED] = 10
    # Offset 9 was committed already, as after a seek back.
    batch = batch_of(run_of(BUFFERED, (9, 10, 11, 12)))

    consumer.track_batch(batch)
    # A rebalance waits (Faust's wait_empty) while anything is in flight.
    assert len(consumer._unacked_messages) == 1
    assert consumer._new_offset(BUFFERED) is None

    consumer.ack_batch(batch)
    consumer.ack_batch(batch)  # a second acknowledgement changes nothing

    assert len(consumer._unacked_messages) == 0
    assert consumer._new_offset(BUFFERED) == 13
    assert consumer._n_acked == 3
    assert batch.acked


def test_batch_ack_matches_faust_ack(app: AdoptionApp) -> None:
    consumer = flowing(app)
    app.app.topics.acking_topics.add(BUFFERED.topic)
    consumer._committed_offset[BUFFERED] = 10
    # Offset 11 comes twice, as when a seek back fetches it again.
    batch = batch_of(run_of(BUFFERED, (9, 10, 11)), run_of(BUFFERED, (11, 14)))
    one_by_one = [faust_message(BUFFERED, offset) for offset in (9, 10, 11, 11, 14)]

    consumer.ack_batch(batch)
    books = (dict(consumer._acked), dict(consumer._acked_index), consumer._n_acked)
    consumer._acked.clear()
    consumer._acked_index.clear()
    consumer._n_acked = 0
    for message in one_by_one:
        consumer.ack(message)

    assert books == (dict(consumer._acked), dict(consumer._acked_index), consumer._n_acked)


def test_rebalance_waits_for_the_taken_batch(app: AdoptionApp) -> None:
    consumer = flowing(app)
    app.app.topics.acking_topics.add(BUFFERED.topic)

    async def commit(*args: Any, **kwargs: Any) -> bool:
        return True

    consumer.commit = commit  # type: ignore[method-assign]
    consumer.commit_and_end_transactions = commit  # type: ignore[method-assign]
    batch = batch_of(run_of(BUFFERED, (0, 1, 2)))

    async def run() -> bool:
        consumer.track_batch(batch)
        waiting = asyncio.ensure_future(consumer.wait_empty())
        await asyncio.sleep(0.2)
        blocked = not waiting.done()
        consumer.ack_batch(batch)
        await asyncio.wait_for(waiting, 5)
        return blocked

    assert consumer.loop.run_until_complete(run())


def test_taken_batch_counts_as_stream_activity(app: AdoptionApp) -> None:
    # Faust logs an error for a partition with unread records whose stream
    # has taken nothing since start; the ingest task's takes count.
    consumer = flowing(app)
    other = TP(BUFFERED.topic, 2)

    consumer.track_batch(batch_of(run_of(BUFFERED, [0]), run_of(other, [7])))

    assert set(app.app.monitor.stream_inbound_time) >= {BUFFERED, other}


def test_app_start_registers_input_topics(app: AdoptionApp) -> None:
    # The conductor subscribes to the topics registered with it, and enables
    # acknowledgements for them, once agents and tables have started.
    app.app.consumer.loop.run_until_complete(app.app.on_start())

    registered = {name for topic in app.app.topics for name in topic.topics}
    assert registered >= {
        "support-interactions",
        f"{app.settings.app_id}-by-tenant",
        app.counting.all_tenants_topic,
    }


def run_stage_until_processing(
    app: AdoptionApp, run: Run, *, stop_while_processing: bool
) -> RecordBatch:
    """Run one stage over ``run``; cancel it while processing, as a stopping worker does."""
    buffer = InputBuffer([BUFFERED.topic], 10)
    buffer.append(*run)
    processing = asyncio.Event()
    processed = asyncio.Event()
    batches: list[RecordBatch] = []

    async def process(batch: RecordBatch) -> None:
        batches.append(batch)
        processing.set()
        if stop_while_processing:
            await asyncio.sleep(10)  # writing the batch's output
        processed.set()

    async def run() -> None:
        stage = asyncio.ensure_future(app._run_stage("test", buffer, 10, 0.0, process))
        await processing.wait()
        if not stop_while_processing:
            await processed.wait()
            await asyncio.sleep(0)
        stage.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stage

    app.app.consumer.loop.run_until_complete(run())
    return batches[0]


def test_stage_stopped_mid_batch_acknowledges_nothing(app: AdoptionApp) -> None:
    # Faust's take_events acknowledges a batch cut short by a stop, and Faust
    # then commits past records whose output was never written.
    consumer = flowing(app)
    app.app.topics.acking_topics.add(BUFFERED.topic)
    batch = run_stage_until_processing(app, run_of(BUFFERED, (0, 1, 2)), stop_while_processing=True)

    assert not batch.acked
    assert consumer._new_offset(BUFFERED) is None


def test_stage_acknowledges_processed_batch(app: AdoptionApp) -> None:
    consumer = flowing(app)
    app.app.topics.acking_topics.add(BUFFERED.topic)
    batch = run_stage_until_processing(
        app, run_of(BUFFERED, (0, 1, 2)), stop_while_processing=False
    )

    assert batch.acked
    assert consumer._new_offset(BUFFERED) == 3


def test_healthz_reports_ended_stage(app: AdoptionApp) -> None:
    # A stage that fails stops the process; one cancelled on its own would
    # leave its records unread while the worker looks alive.
    flowing(app)
    buffer = InputBuffer([BUFFERED.topic], 10)

    async def process(batch: RecordBatch) -> None:
        pass

    async def run() -> tuple[list[str], list[str]]:
        stage = asyncio.ensure_future(app._run_stage("count", buffer, 10, 0.0, process))
        await asyncio.sleep(0.05)
        running = app.stopped_stages()
        stage.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stage
        return running, app.stopped_stages()

    assert app.app.consumer.loop.run_until_complete(run()) == ([], ["count"])


def test_count_stage_takes_without_waiting(tmp_path: Path) -> None:
    # Each internal record carries an ingest batch, so waiting batch_within
    # for more of them would only delay the output.
    app = AdoptionApp(Settings(data_dir=tmp_path, batch_within_ms=60_000))
    flowing(app)
    app.app.topics.acking_topics.add(app.by_tenant_topic_name)
    counted: list[int] = []

    async def count_batch(batch: RecordBatch) -> None:
        counted.append(sum(len(run.records) for run in batch.runs))

    app._count_batch = count_batch  # type: ignore[method-assign]
    count = next(task for task in app.app._app_tasks if task.__name__ == "count")
    by_tenant = TP(app.by_tenant_topic_name, 0)

    async def run() -> None:
        stage = asyncio.ensure_future(count())
        app.count_buffer.append(*run_of(by_tenant, [0]))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if counted:
                break
        stage.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stage

    app.app.consumer.loop.run_until_complete(run())

    assert counted == [1]


def test_failing_stage_exits_with_status_70(
    app: AdoptionApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Faust would restart an agent and acknowledge its failed batch; the
    # worker exits instead, so a restarted one reads the batch again.
    class Exited(Exception):
        pass

    def exit_process(status: int) -> None:
        raise Exited(status)

    monkeypatch.setattr(app_module.os, "_exit", exit_process)
    monkeypatch.setattr(app_module.logging, "shutdown", lambda: None)
    consumer = flowing(app)
    app.app.topics.acking_topics.add(BUFFERED.topic)
    buffer = InputBuffer([BUFFERED.topic], 10)
    buffer.append(*run_of(BUFFERED, (0, 1)))

    async def process(batch: RecordBatch) -> None:
        raise ValueError("broken batch")

    with pytest.raises(Exited) as exited:
        consumer.loop.run_until_complete(app._run_stage("count", buffer, 10, 0.0, process))

    assert exited.value.args == (app_module.EXIT_AGENT_FAILED,)
    assert consumer._new_offset(BUFFERED) is None
