"""Tests that need no broker: the buffer between the fetch loop and the ingest task."""

import asyncio
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from stream.settings import Settings
from stream.worker.app import AdoptionApp
from stream.worker.input_buffer import InputBuffer, Record, RecordBatch, Run, next_offsets

INPUT = TP("support-interactions", 0)


def record(offset: int, tp: TP = INPUT) -> Record:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, b"{}", None, 0, 2, ())


def records(*offsets: int, tp: TP = INPUT) -> list[Record]:
    return [record(offset, tp) for offset in offsets]


def offsets(batch: RecordBatch) -> list[int]:
    return [record.offset for run in batch.runs for record in run.records]


def test_take_limits_batch_size() -> None:
    async def run() -> tuple[list[int], list[int]]:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        buffer.append(INPUT, records(0, 1))
        buffer.append(INPUT, records(2, 3, 4))
        first = await buffer.take(3, within_seconds=10)
        second = await buffer.take(3, within_seconds=0)
        return offsets(first), offsets(second)

    assert asyncio.run(run()) == ([0, 1, 2], [3, 4])


def test_take_waits_within_for_the_batch_to_fill() -> None:
    async def run() -> list[int]:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        buffer.append(INPUT, records(0))

        async def later() -> None:
            await asyncio.sleep(0.05)
            buffer.append(INPUT, records(1))
            buffer.append(INPUT, records(2))

        appender = asyncio.create_task(later())
        taken = await buffer.take(3, within_seconds=5)
        await appender
        return offsets(taken)

    assert asyncio.run(run()) == [0, 1, 2]


def test_take_returns_a_partial_batch_after_within() -> None:
    async def run() -> tuple[list[int], float]:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        buffer.append(INPUT, records(7))
        loop = asyncio.get_running_loop()
        started = loop.time()
        taken = await buffer.take(1_000, within_seconds=0.05)
        return offsets(taken), loop.time() - started

    taken, waited = asyncio.run(run())
    assert taken == [7]
    assert 0.04 <= waited < 1


def test_take_waits_for_the_first_record() -> None:
    async def run() -> bool:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        take = asyncio.create_task(buffer.take(10, within_seconds=0))
        await asyncio.sleep(0.05)
        waiting = not take.done()
        buffer.append(INPUT, records(1))
        assert offsets(await take) == [1]
        return waiting

    assert asyncio.run(run())


def test_take_skips_cleared_records() -> None:
    # A rebalance empties the buffer while the ingest task waits for its batch
    # to fill; it then waits for records fetched after the seek.
    async def run() -> list[int]:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        buffer.append(INPUT, records(1))
        take = asyncio.create_task(buffer.take(10, within_seconds=0.1))
        await asyncio.sleep(0.01)
        buffer.clear()
        await asyncio.sleep(0.15)
        assert not take.done()
        buffer.append(INPUT, records(1))
        return offsets(await take)

    assert asyncio.run(run()) == [1]


def test_full_buffer_blocks_fetch_loop() -> None:
    async def run() -> tuple[bool, bool]:
        buffer = InputBuffer(["support-interactions"], max_records=2)
        buffer.append(INPUT, records(0))
        buffer.append(INPUT, records(1))
        room = asyncio.create_task(buffer.wait_for_room())
        await asyncio.sleep(0.01)
        full = not room.done()
        await buffer.take(1, within_seconds=0)
        await asyncio.sleep(0)
        return full, room.done()

    assert asyncio.run(run()) == (True, True)


def test_clear_makes_room() -> None:
    async def run() -> bool:
        buffer = InputBuffer(["support-interactions"], max_records=1)
        buffer.append(INPUT, records(0))
        room = asyncio.create_task(buffer.wait_for_room())
        buffer.clear()
        await asyncio.sleep(0)
        return room.done() and len(buffer) == 0

    assert asyncio.run(run())


def test_take_splits_a_run_at_the_batch_size() -> None:
    async def run() -> tuple[list[Run], int, list[int]]:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        other = TP("support-interactions", 1)
        buffer.append(INPUT, records(0, 1))
        buffer.append(other, records(5, 6, 7, tp=other))
        first = await buffer.take(3, within_seconds=0)
        left = len(buffer)
        second = await buffer.take(10, within_seconds=0)
        return first.runs, left, offsets(second)

    runs, left, second = asyncio.run(run())
    assert [(tp.partition, [record.offset for record in run]) for tp, run in runs] == [
        (0, [0, 1]),
        (1, [5]),
    ]
    assert left == 2
    assert second == [6, 7]


def test_next_offsets_after_last_record_per_partition() -> None:
    by_tenant = TP("by-tenant", 0)
    runs = [
        Run(INPUT, records(7)),
        Run(TP("in", 1), records(3)),
        Run(INPUT, records(8)),
        Run(by_tenant, records(39, 40, tp=by_tenant)),
    ]

    assert next_offsets(runs) == {INPUT: 9, TP("in", 1): 4, by_tenant: 41}


def test_next_offsets_skip_gaps_of_markers() -> None:
    # A read_committed consumer skips transaction markers, so offsets jump.
    assert next_offsets([Run(INPUT, records(10, 12, 20))]) == {INPUT: 21}


def test_next_offsets_empty_batch() -> None:
    assert next_offsets([]) == {}


@pytest.fixture
def app(tmp_path: Path) -> AdoptionApp:
    return AdoptionApp(Settings(data_dir=tmp_path))


def test_app_buffers_the_worker_topics(app: AdoptionApp) -> None:
    buffers = app.app.consumer.buffers

    assert buffers["support-interactions"] is app.input_buffer
    assert buffers[f"{app.settings.app_id}-by-tenant"] is app.count_buffer
    assert buffers[app.counting.all_tenants_topic] is app.all_tenants_buffer
