"""Tests that need no broker: the buffer between the fetch loop and the ingest task."""

import asyncio
from pathlib import Path

import pytest
from faust.types import TP, Message

from stream.settings import Settings
from stream.worker.app import AdoptionApp
from stream.worker.input_buffer import InputBuffer

INPUT = TP("support-interactions", 0)


def message(offset: int, tp: TP = INPUT) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, None, b"{}", None, tp=tp)


def offsets(messages: list[Message]) -> list[int]:
    return [message.offset for message in messages]


def test_take_limits_batch_size() -> None:
    async def run() -> tuple[list[int], list[int]]:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        for offset in range(5):
            buffer.append(message(offset))
        first = await buffer.take(3, within_seconds=10)
        second = await buffer.take(3, within_seconds=0)
        return offsets(first), offsets(second)

    assert asyncio.run(run()) == ([0, 1, 2], [3, 4])


def test_take_waits_within_for_the_batch_to_fill() -> None:
    async def run() -> list[int]:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        buffer.append(message(0))

        async def later() -> None:
            await asyncio.sleep(0.05)
            buffer.append(message(1))
            buffer.append(message(2))

        appender = asyncio.create_task(later())
        taken = await buffer.take(3, within_seconds=5)
        await appender
        return offsets(taken)

    assert asyncio.run(run()) == [0, 1, 2]


def test_take_returns_a_partial_batch_after_within() -> None:
    async def run() -> tuple[list[int], float]:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        buffer.append(message(7))
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
        buffer.append(message(1))
        assert offsets(await take) == [1]
        return waiting

    assert asyncio.run(run())


def test_take_skips_cleared_records() -> None:
    # A rebalance empties the buffer while the ingest task waits for its batch
    # to fill; it then waits for records fetched after the seek.
    async def run() -> list[int]:
        buffer = InputBuffer(["support-interactions"], max_records=100)
        buffer.append(message(1))
        take = asyncio.create_task(buffer.take(10, within_seconds=0.1))
        await asyncio.sleep(0.01)
        buffer.clear()
        await asyncio.sleep(0.15)
        assert not take.done()
        buffer.append(message(1))
        return offsets(await take)

    assert asyncio.run(run()) == [1]


def test_full_buffer_blocks_fetch_loop() -> None:
    async def run() -> tuple[bool, bool]:
        buffer = InputBuffer(["support-interactions"], max_records=2)
        buffer.append(message(0))
        buffer.append(message(1))
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
        buffer.append(message(0))
        room = asyncio.create_task(buffer.wait_for_room())
        buffer.clear()
        await asyncio.sleep(0)
        return room.done() and len(buffer) == 0

    assert asyncio.run(run())


@pytest.fixture
def app(tmp_path: Path) -> AdoptionApp:
    return AdoptionApp(Settings(data_dir=tmp_path))


def test_app_buffers_the_worker_topics(app: AdoptionApp) -> None:
    buffers = app.app.consumer.buffers

    assert buffers["support-interactions"] is app.input_buffer
    assert buffers[f"{app.settings.app_id}-by-tenant"] is app.count_buffer
    assert buffers[app.counting.all_tenants_topic] is app.all_tenants_buffer
