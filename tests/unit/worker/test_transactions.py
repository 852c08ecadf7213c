"""Tests that need no broker: exactly-once helpers, and the app in each mode."""

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.types import TP

from stream.settings import Settings
from stream.worker.app import AdoptionApp
from stream.worker.output import OutgoingRecord
from stream.worker.read_committed import (
    CommittedTableManager,
    ReadCommittedTransport,
    last_record_offset,
)
from stream.worker.transactions import (
    BatchTransactions,
    TableChange,
    store_in_table,
    transactional_id,
)


# Transactional ids


def test_transactional_id_per_worker_and_agent() -> None:
    settings = Settings(app_id="rates", worker_id="node-1")

    assert transactional_id(settings, "count") == "rates-node-1-count"
    assert transactional_id(settings, "ingest") != transactional_id(settings, "count")


def test_transactional_id_differs_by_web_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "host")
    first = Settings(app_id="rates", web_port=6066)
    second = Settings(app_id="rates", web_port=6067)

    assert transactional_id(first, "count") == "rates-host-6066-count"
    assert transactional_id(second, "count") == "rates-host-6067-count"


# Table data


@dataclass
class FakeTable:
    data: dict[bytes, bytes] = field(default_factory=dict)


def test_store_in_table_sets_and_deletes() -> None:
    table = FakeTable({b"gone": b"1"})

    store_in_table(table, b"kept", b"2")  # type: ignore[arg-type]
    store_in_table(table, b"gone", None)  # type: ignore[arg-type]
    store_in_table(table, b"never-set", None)  # type: ignore[arg-type]

    assert table.data == {b"kept": b"2"}


@dataclass
class ChangelogTopic:
    name: str

    def get_topic_name(self) -> str:
        return self.name


@dataclass
class ChangelogFakeTable(FakeTable):
    changelog_topic: ChangelogTopic = field(default_factory=lambda: ChangelogTopic("journal"))


def test_changelog_written_after_records() -> None:
    # At least once, a journal record that closes windows must not be durable
    # before their final records. Table changes go out in client batches.
    writer = ScriptedWriter()
    table = ChangelogFakeTable({b"gone": b"1"})
    transactions = BatchTransactions(Settings(), None, writer)  # type: ignore[arg-type]
    final = OutgoingRecord("rates", b"t1|5m", b"{}")
    written_in_batch: list[OutgoingRecord] = []

    async def write_batch() -> None:
        async with transactions.batch("count", {}) as output:
            output.records.append(final)
            output.changes.append(TableChange(table, 2, b"kept", b"2"))  # type: ignore[arg-type]
            output.changes.append(TableChange(table, 3, b"gone", None))  # type: ignore[arg-type]
            written_in_batch.extend(writer.written)

    asyncio.run(write_batch())

    assert written_in_batch == []
    assert writer.written == [
        final,
        OutgoingRecord("journal", b"kept", b"2", partition=2),
        OutgoingRecord("journal", b"gone", None, partition=3),
    ]
    assert writer.calls == 2
    assert table.data == {b"kept": b"2"}


# The last committed record of a changelog partition


class FakeCommittedReader:
    """A read_committed consumer of one partition with records at the offsets ``records``.

    Offsets missing from ``records`` are markers or aborted records. The
    consumer skips them, and its position moves past them.
    """

    def __init__(self, records: set[int], end: int) -> None:
        self.records = records
        self.end = end
        self.next = 0
        self.seeks: list[int] = []

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.next = offset

    async def position(self, partition: TopicPartition) -> int:
        return self.next

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        stop = min(self.next + 10, self.end)
        found = [
            ConsumerRecord(
                topic=partitions[0].topic,
                partition=partitions[0].partition,
                offset=offset,
                timestamp=0,
                timestamp_type=0,
                key=b"k",
                value=b"v",
                checksum=None,
                serialized_key_size=1,
                serialized_value_size=1,
                headers=[],
            )
            for offset in range(self.next, stop)
            if offset in self.records
        ]
        self.next = stop
        return {partitions[0]: found} if found else {}


TAIL = TopicPartition("rates-journal-changelog", 0)


def find_last(records: set[int], start: int, end: int) -> tuple[int | None, list[int]]:
    reader = FakeCommittedReader(records, end)
    last = asyncio.run(
        last_record_offset(reader, TAIL, start, end, deadline=time.monotonic() + 30)
    )
    return last, reader.seeks


def test_last_record_offset_below_commit_marker() -> None:
    # Records 0-4 then the commit marker at 5; the end offset is 6.
    last, seeks = find_last({0, 1, 2, 3, 4}, 0, 6)

    assert last == 4
    assert seeks == [0]


def test_last_record_offset_before_long_aborted_run() -> None:
    # A committed record at 100, then 500 aborted records and their marker.
    last, seeks = find_last({100}, 0, 602)

    assert last == 100
    assert seeks == [602 - 64, 602 - 512]


def test_last_record_offset_only_markers() -> None:
    last, _ = find_last(set(), 5, 40)

    assert last is None


def test_last_record_offset_empty_range() -> None:
    last, seeks = find_last(set(), 7, 7)

    assert last is None
    assert seeks == []


def test_last_record_offset_times_out() -> None:
    reader = FakeCommittedReader({1}, 10)

    with pytest.raises(TimeoutError, match="rates-journal-changelog"):
        asyncio.run(last_record_offset(reader, TAIL, 0, 10, deadline=time.monotonic() - 1))


# The Faust app in each mode


def test_exactly_once_app_reads_committed(tmp_path: Path) -> None:
    settings = Settings(processing_guarantee="exactly_once", data_dir=tmp_path)

    app = AdoptionApp(settings).app

    assert isinstance(app.transport, ReadCommittedTransport)
    assert app.conf.TableManager is CommittedTableManager
    assert app.conf.processing_guarantee.value == "at_least_once"


def test_at_least_once_app_keeps_faust_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    app = AdoptionApp(settings).app

    assert not isinstance(app.transport, ReadCommittedTransport)
    assert app.conf.TableManager is not CommittedTableManager


def test_app_fetches_setting_bytes_per_partition(tmp_path: Path) -> None:
    default = AdoptionApp(Settings(data_dir=tmp_path)).app
    smaller = AdoptionApp(Settings(data_dir=tmp_path, max_partition_fetch_bytes=65_536)).app

    assert default.conf.consumer_max_fetch_size == 4 * 1024 * 1024
    assert smaller.conf.consumer_max_fetch_size == 65_536


# Readiness


def test_ready_waits_for_restored_partitions(tmp_path: Path) -> None:
    service = AdoptionApp(Settings(data_dir=tmp_path))
    service._on_assigned(
        {TP(f"{service.settings.app_id}-by-tenant", partition) for partition in (0, 1)}
    )

    before = service.is_ready()
    service.counting.restore(0, [])
    half = service.is_ready()
    service.counting.restore(1, [])

    assert before is False
    assert half is False
    assert service.is_ready() is True


class ScriptedWriter:
    """Stands in for the worker's record writer: it acknowledges writes, fails them, or waits."""

    def __init__(self) -> None:
        self.fail = False
        self.hang = False
        self.written: list[OutgoingRecord] = []
        self.calls = 0

    async def write(self, records: Any) -> None:
        self.calls += 1
        if self.fail:
            raise KafkaConnectionError("broker unreachable")
        if self.hang:
            # As the Kafka client does while the broker is down: no response at all.
            await asyncio.Event().wait()
        self.written.extend(records)


def test_not_ready_while_no_tick_is_acknowledged(tmp_path: Path) -> None:
    service = AdoptionApp(Settings(data_dir=tmp_path))
    writer = ScriptedWriter()
    service.writer = writer  # type: ignore[assignment]
    service._on_assigned(set())
    fresh = service.is_ready()
    # The last acknowledged tick is older than the limit, and the next write fails.
    service._ticks_acked_at -= service.broker_silence_limit() + 1
    writer.fail = True
    asyncio.run(service._send_ticks())
    failed = service.is_ready()
    writer.fail = False
    asyncio.run(service._send_ticks())

    assert fresh is True
    assert failed is False
    assert service.is_ready() is True
    assert len(writer.written) == service.settings.internal_partitions


def test_unanswered_tick_write_logged_and_not_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, session_timeout_ms=300, tick_interval_ms=50)
    service = AdoptionApp(settings)
    writer = ScriptedWriter()
    service.writer = writer  # type: ignore[assignment]
    service._on_assigned(set())
    writer.hang = True

    async def tick_then_wait() -> None:
        # The tick gives up waiting after the silence limit instead of hanging.
        await asyncio.wait_for(service._send_ticks(), 5 * service.broker_silence_limit())
        await asyncio.sleep(service.broker_silence_limit())

    asyncio.run(tick_then_wait())

    assert service.is_ready() is False
    assert "no acknowledgement within 0.3 s" in caplog.text
    assert "failed to write watermark ticks to " in caplog.text
    assert writer.written == []


# Ticks name the assignment they were computed on

MOVED = TP("support-interactions", 0)
REMAINING = TP("support-interactions", 1)


def service_reading_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AdoptionApp:
    """Return a worker of generation 7 that read MOVED to 1,000,000 ms and REMAINING to 2,000,000."""
    service = AdoptionApp(Settings(data_dir=tmp_path))
    client = SimpleNamespace(partitions_for_topic=lambda topic: {0, 1, 2, 3})
    monkeypatch.setattr(service.app.consumer._thread, "_ensure_consumer", lambda: client)
    service.app.consumer_generation_id = 7
    service._on_assigned({MOVED, REMAINING})
    service._input_newest_ms.update({MOVED: 1_000_000, REMAINING: 2_000_000})
    return service


def test_tick_names_generation_and_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = service_reading_both(tmp_path, monkeypatch)

    tick = service.input_watermark()

    assert tick.watermark_ms == 1_000_000
    assert tick.generation == 7
    assert tick.inputs == 2
    assert tick.input_total == 4


def test_moved_input_partition_leaves_watermark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counting partitions hold their clocks until the new owner's tick of
    # generation 8 covers the moved partition.
    service = service_reading_both(tmp_path, monkeypatch)
    service.app.consumer_generation_id = 8
    service._on_assigned({REMAINING})

    tick = service.input_watermark()

    assert tick.watermark_ms == 2_000_000
    assert tick.generation == 8
    assert tick.inputs == 1


def test_tick_without_metadata_has_no_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = AdoptionApp(Settings(data_dir=tmp_path))
    client = SimpleNamespace(partitions_for_topic=lambda topic: None)
    monkeypatch.setattr(service.app.consumer._thread, "_ensure_consumer", lambda: client)
    service._on_assigned({MOVED})

    assert service.input_watermark().input_total is None


# Exactly-once commits name the consumer group generation


def test_commit_names_group_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = AdoptionApp(Settings(data_dir=tmp_path, processing_guarantee="exactly_once"))
    coordinator = SimpleNamespace(generation=5, member_id="member-1")
    client = SimpleNamespace(_coordinator=coordinator)
    monkeypatch.setattr(service.app.consumer._thread, "_ensure_consumer", lambda: client)

    assert service.transactions._group_member() == (5, "member-1")


def test_commit_without_group_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    service = AdoptionApp(Settings(data_dir=tmp_path, processing_guarantee="exactly_once"))
    monkeypatch.setattr(service.app.consumer._thread, "_ensure_consumer", lambda: object())

    assert service.transactions._group_member() == (-1, "")
    assert "consumer group generation unknown" in caplog.text


# A worker that missed a generation restores its state


def assigned_with_state(tmp_path: Path, generation: int) -> AdoptionApp:
    """Return a worker of ``generation`` with counting partition 0 in memory."""
    service = AdoptionApp(Settings(data_dir=tmp_path))
    partition = TP(service.by_tenant_topic_name, 0)
    service.app.consumer_generation_id = generation
    service._on_assigned({partition})
    service.counting.restore(0, [])
    return service


def test_next_generation_keeps_state(tmp_path: Path) -> None:
    service = assigned_with_state(tmp_path, 3)

    service.app.consumer_generation_id = 4
    service._on_assigned({TP(service.by_tenant_topic_name, 0)})

    assert list(service.counting.states) == [0]


def test_missed_generation_drops_state(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Stalled past its session timeout, the worker missed generation 4, in
    # which another worker counted partition 0.
    service = assigned_with_state(tmp_path, 3)

    service.app.consumer_generation_id = 5
    service._on_assigned({TP(service.by_tenant_topic_name, 0)})

    assert service.counting.states == {}
    assert "generation went from 3 to 5" in caplog.text
