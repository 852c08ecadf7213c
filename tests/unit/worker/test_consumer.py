"""Tests that need no broker: seeks with the flow of records stopped, and skipping re-read records."""

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from faust.types import TP

from stream.settings import Settings
from stream.worker.app import AdoptionApp
from stream.worker.consumer import SeekingConsumer

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


def test_seek_runs_with_flow_stopped_and_resumes_it(app: AdoptionApp) -> None:
    consumer = app.app.consumer
    consumer.resume_flow()
    flowing = seek_recorder(consumer)

    asyncio.run(consumer.perform_seek())

    assert flowing == [False]
    assert consumer.flow_active
    assert consumer._read_offset[INPUT] == 42


def test_flow_stopped_during_seek_stays_stopped(app: AdoptionApp) -> None:
    # A rebalance that starts during the seek stops the flow; the seek must
    # not resume it behind the rebalance's back.
    consumer = app.app.consumer
    consumer.resume_flow()
    seek_recorder(consumer, during=consumer.stop_flow)

    asyncio.run(consumer.perform_seek())

    assert not consumer.flow_active


def test_seek_with_flow_stopped_leaves_it_stopped(app: AdoptionApp) -> None:
    consumer = app.app.consumer
    consumer.stop_flow()
    flowing = seek_recorder(consumer)

    asyncio.run(consumer.perform_seek())

    assert flowing == [False]
    assert not consumer.flow_active


def test_seek_nested_in_seek_keeps_rebalance_stop(app: AdoptionApp) -> None:
    # The fetch loop seeks again when the flow stopped under a fetch. A
    # rebalance that stopped the flow before that inner seek still counts.
    consumer = app.app.consumer
    consumer.resume_flow()
    seeks = 0

    async def seek_to_committed() -> Mapping[TP, int]:
        nonlocal seeks
        seeks += 1
        if seeks == 1:
            consumer.stop_flow()
            await consumer.perform_seek()
        return {INPUT: 42}

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    asyncio.run(consumer.perform_seek())

    assert seeks == 2
    assert not consumer.flow_active


# Records delivered again after a seek


@dataclass(frozen=True)
class Message:
    tp: TP
    offset: int

    @property
    def topic(self) -> str:
        return self.tp.topic


@dataclass(frozen=True)
class Event:
    message: Message


def offsets_of(events: list[Event]) -> list[tuple[int, int]]:
    return [(event.message.tp.partition, event.message.offset) for event in events]


def test_unprocessed_skips_offsets_already_processed(app: AdoptionApp) -> None:
    app._input_next_offset[INPUT] = 10
    other = TP("in", 1)
    events = [Event(Message(INPUT, offset)) for offset in (8, 9, 10, 11)]
    events.append(Event(Message(other, 3)))

    assert offsets_of(app._unprocessed(events)) == [(0, 10), (0, 11), (1, 3)]
    assert app.metrics.reread.labels("in")._value.get() == 2


def test_unprocessed_skips_repeats_within_a_batch(app: AdoptionApp) -> None:
    # After a seek the records delivered before it come again in the same batch.
    events = [Event(Message(INPUT, offset)) for offset in (5, 6, 7, 5, 6, 7, 8)]

    assert offsets_of(app._unprocessed(events)) == [(0, 5), (0, 6), (0, 7), (0, 8)]


def test_unprocessed_keeps_gaps(app: AdoptionApp) -> None:
    # A read_committed consumer skips transaction markers and aborted records.
    app._input_next_offset[INPUT] = 10
    events = [Event(Message(INPUT, offset)) for offset in (12, 20)]

    assert offsets_of(app._unprocessed(events)) == [(0, 12), (0, 20)]
