"""Tests of the counting stage, driven by hand with fake clocks and no broker."""

import json
import random
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from stream.ingest.channels import ChannelClass
from stream.ingest.events import Interaction
from stream.settings import Settings, parse_windows
from stream.windows.counts import WindowCounts
from stream.worker.all_tenants import AllTenantsState
from stream.worker.counting import COMPACT_AFTER_RECORDS, CountingStage, PartitionOutput
from stream.worker.messages import Partial, Tick, decode_partial

MINUTE_MS = 60_000
IDLE_TIMEOUT_SECONDS = 30.0
INPUT_TOPIC = "support-interactions"

CHANNEL_CLASSES = {
    "knowledge_base": ChannelClass.SELF_SERVICE,
    "faq": ChannelClass.SELF_SERVICE,
    "chatbot": ChannelClass.SELF_SERVICE,
    "community": ChannelClass.SELF_SERVICE,
    "email": ChannelClass.ASSISTED,
    "phone": ChannelClass.ASSISTED,
    "live_chat": ChannelClass.ASSISTED,
    "ticket": ChannelClass.ASSISTED,
}


def at(clock_time: str, day: str = "2025-06-02") -> int:
    """Return epoch milliseconds of a UTC time of day such as ``"09:04:50"``."""
    return round(datetime.fromisoformat(f"{day}T{clock_time}+00:00").timestamp() * 1000)


class FakeClocks:
    """A monotonic clock in seconds and a wall clock in epoch milliseconds, moved by the test."""

    def __init__(self, wall_ms: int) -> None:
        self.monotonic_seconds = 1_000.0
        self.wall_ms = wall_ms

    def monotonic(self) -> float:
        return self.monotonic_seconds

    def wall_clock(self) -> int:
        return self.wall_ms

    def advance(self, seconds: float) -> None:
        self.monotonic_seconds += seconds
        self.wall_ms += int(seconds * 1000)


def make_settings(windows: str = "5m", **overrides: Any) -> Settings:
    return Settings(
        windows=parse_windows(windows),
        grace_ms=2 * MINUTE_MS,
        idle_timeout_ms=int(IDLE_TIMEOUT_SECONDS * 1000),
        tick_interval_ms=1_000,
        publish_interval_ms=1_000,
        internal_partitions=2,
        **overrides,
    )


def make_stage(clocks: FakeClocks, settings: Settings | None = None) -> CountingStage:
    return CountingStage(
        settings if settings is not None else make_settings(),
        monotonic=clocks.monotonic,
        wall_clock=clocks.wall_clock,
    )


def event(
    event_id: str,
    tenant: str,
    channel: str,
    occurred_at_ms: int,
    *,
    offset: int = 0,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> Interaction:
    """Build an interaction whose raw bytes are the JSON a producer would send."""
    raw = json.dumps(
        {"event_id": event_id, "tenant": tenant, "channel": channel, "occurred_at": occurred_at_ms}
    ).encode()
    return Interaction(
        event_id=event_id,
        occurred_at_ms=occurred_at_ms,
        tenant=tenant,
        channel=channel,
        channel_class=int(CHANNEL_CLASSES[channel]),
        resolved=None,
        segment=None,
        customer_id=None,
        source_topic=INPUT_TOPIC,
        source_partition=3,
        source_offset=offset,
        raw_key=tenant.encode(),
        raw_value=raw,
        raw_headers=headers,
    )


def tick(sender: str, watermark_ms: int | None, *, quiet: bool = False) -> Tick:
    return Tick(sender=sender, watermark_ms=watermark_ms, quiet=quiet)


def window_records(output: PartitionOutput, settings: Settings) -> list[dict[str, Any]]:
    return [
        json.loads(record.value)
        for record in output.records
        if record.topic == settings.output_topic and record.value is not None
    ]


def finals(output: PartitionOutput, settings: Settings) -> list[tuple[str, str, str, int, int]]:
    """Reduce the final records to (tenant, window, start, self-service, total)."""
    return [
        (
            record["tenant"],
            record["window"],
            record["window_start"],
            record["self_service"],
            record["total"],
        )
        for record in window_records(output, settings)
        if record["final"]
    ]


def partials(output: PartitionOutput, stage: CountingStage) -> list[Partial]:
    return [
        decode_partial(record.value)
        for record in output.records
        if record.topic == stage.all_tenants_topic and record.value is not None
    ]


class JournalTable:
    """Journal records that a stage wrote, as the compacted changelog keeps them."""

    def __init__(self) -> None:
        self.entries: dict[bytes, bytes] = {}
        self.tombstones = 0

    def write(self, output: PartitionOutput) -> None:
        for key, value in output.journal:
            if value is None:
                self.tombstones += 1
                self.entries.pop(key, None)
            else:
                self.entries[key] = value

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.entries.items()))


def window_sums(stage: CountingStage, partition: int, first: int, last: int) -> dict[Any, Any]:
    """Return every non-empty window sum of every tenant of a partition, ends in [first, last]."""
    state = stage.states[partition]
    sums = {}
    for tenant, tenant_state in state.tenants.items():
        for spec in state.windows:
            for end_ms in range(first - first % spec.step_ms, last + 1, spec.step_ms):
                counts = state.sum_window(tenant_state, spec, end_ms)
                if not counts.is_empty:
                    sums[(tenant, spec.name, end_ms)] = (
                        counts.self_service,
                        counts.total,
                        dict(counts.channels),
                    )
    return sums


def run(
    stage: CountingStage,
    clocks: FakeClocks,
    partition: int,
    steps: Iterable[tuple[list[Interaction], list[Tick]]],
    journal: JournalTable | None = None,
    seconds_between: float = 0.1,
) -> list[PartitionOutput]:
    outputs = []
    for events, ticks in steps:
        clocks.advance(seconds_between)
        output = stage.process(partition, events, ticks)
        if journal is not None:
            journal.write(output)
        outputs.append(output)
    return outputs


# Provisional records


def provisional_batches(
    wall_clock_time: str, watermark: str = "09:59:50", **overrides: Any
) -> list[int]:
    """Feed ten batches a second apart; return the seconds whose batch had provisionals."""
    clocks = FakeClocks(at(wall_clock_time))
    stage = make_stage(clocks, make_settings(**overrides))
    stage.restore(0, [])
    published = []
    for second in range(1, 11):
        clocks.advance(1.0)
        events = [event(f"e{second}", "t1", "faq", at("09:59:40") + second)]
        output = stage.process(0, events, [tick("a", at(watermark))])
        if output.provisionals:
            published.append(second)
    return published


def test_live_partition_publishes_every_interval() -> None:
    assert provisional_batches("10:00:00") == list(range(1, 11))


def test_backlog_publishes_less_often() -> None:
    # The events are two hours older than the wall clock, more than the
    # grace of two minutes. That is a backlog, whose windows are final soon.
    assert provisional_batches("12:00:00") == [5, 10]


def test_live_events_despite_old_clock() -> None:
    # After a restart the clock waits for input partitions that sent nothing
    # yet. Live events that arrive meanwhile are not a backlog.
    assert provisional_batches("10:00:00", watermark="09:00:00") == list(range(1, 11))


def test_catch_up_interval_zero() -> None:
    assert provisional_batches("12:00:00", catch_up_publish_interval_ms=0) == list(range(1, 11))


# Closing many windows at once


def finals_in_batches(limit: int, monkeypatch: Any) -> tuple[list[list[Any]], list[int | None]]:
    """Close a replay's windows ``limit`` at a time; return each batch's finals and progress."""
    monkeypatch.setattr("stream.worker.counting.FINAL_WINDOWS_PER_BATCH", limit)
    clocks = FakeClocks(at("12:00:00"))
    settings = make_settings("5m/1m")
    stage = make_stage(clocks, settings)
    stage.restore(0, [])
    events = [
        event(f"{tenant}-{minute}", tenant, "faq", at("09:00:00") + minute * MINUTE_MS)
        for tenant in ("t1", "t2", "t3")
        for minute in range(0, 120, 7)
    ]
    batches = []
    progress = []
    output = stage.process(0, events, [tick("a", at("11:30:00"))])
    while output.finals:
        batches.append(finals(output, settings))
        progress.append(stage.states[0].finalized_ms)
        clocks.advance(1.0)
        output = stage.process(0, [], [tick("a", at("11:30:00"))])
    return batches, progress


def test_many_finals_close_over_batches(monkeypatch: Any) -> None:
    # A replay of history makes every window due at once. A batch closes a
    # bounded number of them, and the following batches close the rest.
    all_at_once, _ = finals_in_batches(100_000, monkeypatch)
    in_batches, progress = finals_in_batches(10, monkeypatch)

    assert len(all_at_once) == 1
    # Ten windows a batch, the all-tenants ones among them, plus the rest of the last end.
    assert max(len(batch) for batch in in_batches) <= 12
    assert len(in_batches) >= len(all_at_once[0]) // 12
    assert [record for batch in in_batches for record in batch] == all_at_once[0]
    assert progress == sorted(progress)
    assert progress[-1] == at("11:30:00")


# Watermarks


def test_clock_oldest_of_two_senders() -> None:
    clocks = FakeClocks(at("12:00:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])

    stage.process(0, [], [tick("a", at("09:10:00")), tick("b", at("09:03:00"))])
    after_both = stage.clocks()[0]
    stage.process(0, [], [tick("a", at("09:12:00"))])
    after_fast_sender = stage.clocks()[0]
    stage.process(0, [], [tick("b", at("09:11:00"))])
    after_slow_sender = stage.clocks()[0]

    assert after_both == at("09:03:00")
    assert after_fast_sender == at("09:03:00")
    assert after_slow_sender == at("09:11:00")


def test_clock_waits_for_sender_without_watermark() -> None:
    clocks = FakeClocks(at("12:00:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])

    stage.process(0, [], [tick("a", at("09:10:00")), tick("c", None)])
    waiting = stage.clocks()[0]
    stage.process(0, [], [tick("c", at("09:09:00"))])

    assert waiting is None
    assert stage.clocks()[0] == at("09:09:00")


def test_lagging_partition_keeps_watermark_before_quiet() -> None:
    # A lagging partition reads the sender's last watermark and the quiet
    # ticks after it in one batch. The windows close at once, not after the
    # idle timeout.
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    settings = stage.settings
    stage.restore(0, [])
    stage.process(0, quiet_stream_events(), [tick("a", at("08:03:30"))])

    output = stage.process(
        0, [], [tick("a", at("08:09:00")), tick("a", None, quiet=True), tick("a", None, quiet=True)]
    )

    assert stage.clocks()[0] == at("08:09:00")
    assert finals(output, settings) == [("t1", "5m", "2025-06-02T08:00:00.000Z", 2, 3)]


def test_clock_never_moves_back() -> None:
    clocks = FakeClocks(at("12:00:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])

    stage.process(0, [], [tick("a", at("09:10:00"))])
    stage.process(0, [], [tick("a", at("09:05:00"))])

    assert stage.clocks()[0] == at("09:10:00")


def test_clock_drops_stale_sender() -> None:
    clocks = FakeClocks(at("12:00:00"))
    stage = make_stage(clocks)
    stage_settings = stage.settings
    stale_after_seconds = max(
        3 * stage_settings.idle_timeout_ms / 1000, 10 * stage_settings.tick_interval_ms / 1000
    )
    stage.restore(0, [])

    stage.process(0, [], [tick("a", at("09:10:00")), tick("b", at("09:03:00"))])
    clocks.advance(stale_after_seconds - 1)
    stage.process(0, [], [tick("a", at("09:20:00"))])
    before_stale = stage.clocks()[0]
    clocks.advance(2)
    stage.process(0, [], [tick("a", at("09:21:00"))])
    after_stale = stage.clocks()[0]

    assert before_stale == at("09:03:00")
    assert after_stale == at("09:21:00")


# Idle input


def quiet_stream_events() -> list[Interaction]:
    return [
        event("k1", "t1", "chatbot", at("08:00:10"), offset=0),
        event("k2", "t1", "phone", at("08:01:00"), offset=1),
        event("k3", "t1", "faq", at("08:03:30"), offset=2),
    ]


def test_idle_input_moves_clock_after_timeout() -> None:
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    settings = stage.settings
    stage.restore(0, [])

    stage.process(0, quiet_stream_events(), [tick("a", at("08:03:30"))])
    clocks.advance(10)
    early = stage.process(0, [], [tick("a", None, quiet=True)])
    clocks.advance(IDLE_TIMEOUT_SECONDS - 10 - 0.001)
    just_before = stage.process(0, [], [tick("a", None, quiet=True)])
    clock_before = stage.clocks()[0]
    clocks.advance(0.001)
    at_timeout = stage.process(0, [], [tick("a", None, quiet=True)])

    assert finals(early, settings) == []
    assert finals(just_before, settings) == []
    assert clock_before == at("08:03:30")
    assert stage.clocks()[0] == clocks.wall_ms
    assert finals(at_timeout, settings) == [("t1", "5m", "2025-06-02T08:00:00.000Z", 2, 3)]


def test_idle_timeout_counts_from_last_data() -> None:
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])

    stage.process(0, quiet_stream_events()[:1], [tick("a", at("08:00:10"))])
    clocks.advance(IDLE_TIMEOUT_SECONDS - 5)
    stage.process(0, quiet_stream_events()[1:], [tick("a", at("08:03:30"))])
    clocks.advance(10)
    stage.process(0, [], [tick("a", None, quiet=True)])

    assert stage.clocks()[0] == at("08:03:30")


def test_quiet_sender_ignored_while_other_active() -> None:
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])

    stage.process(0, quiet_stream_events(), [tick("a", at("08:03:30")), tick("b", at("08:04:00"))])
    clocks.advance(IDLE_TIMEOUT_SECONDS + 5)
    stage.process(0, [], [tick("a", None, quiet=True), tick("b", at("08:04:10"))])

    assert stage.clocks()[0] == at("08:04:10")


def test_clockless_partition_reports_wall_progress() -> None:
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(1, [])

    clocks.advance(10)
    early = stage.process(1, [], [tick("a", None, quiet=True)])
    clocks.advance(IDLE_TIMEOUT_SECONDS)
    idle = stage.process(1, [], [tick("a", None, quiet=True)])

    assert partials(early, stage) == []
    assert stage.clocks()[1] is None
    assert partials(idle, stage) == [
        Partial(partition=1, finalized_ms=clocks.wall_ms, windows=[], empty=True)
    ]
    assert all(record.partition == 0 for record in idle.records)


def test_clockless_partition_takes_back_wall_progress_with_data() -> None:
    # History replayed into a deployment that idled first: the partition's
    # report of the wall clock gives way to its own clock, hours older.
    clocks = FakeClocks(at("12:00:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])
    clocks.advance(IDLE_TIMEOUT_SECONDS + 10)
    stage.process(0, [], [tick("a", None, quiet=True)])

    replayed = stage.process(0, quiet_stream_events(), [tick("a", at("08:03:30"))])

    last = partials(replayed, stage)[-1]
    assert not last.empty
    assert last.finalized_ms == at("08:03:30")


def test_idle_partition_clock_follows_wall_clock() -> None:
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])
    stage.process(0, quiet_stream_events(), [tick("a", at("08:03:30"))])
    clocks.advance(IDLE_TIMEOUT_SECONDS)
    stage.process(0, [], [tick("a", None, quiet=True)])
    closed_at = stage.clocks()[0]

    clocks.advance(600)
    later = stage.process(0, [], [tick("a", None, quiet=True)])

    assert closed_at == at("08:10:30")
    assert stage.clocks()[0] == clocks.wall_ms
    assert [partial.finalized_ms for partial in partials(later, stage)] == [clocks.wall_ms]
    assert finals(later, stage.settings) == []


def test_replayed_old_tick_ignored() -> None:
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])
    old = Tick("dead", at("08:00:00"), quiet=False, sent_at_ms=clocks.wall_ms - 3_600_000)
    fresh = Tick("live", at("08:05:00"), quiet=False, sent_at_ms=clocks.wall_ms)

    stage.process(0, [], [old, fresh])

    assert stage.clocks()[0] == at("08:05:00")


def test_lagging_ticks_still_move_clock() -> None:
    # Counting runs ten minutes behind ingest: every tick read is old by the
    # wall clock, but they are the newest ticks there are.
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])
    lag_ms = 10 * 60_000
    first = Tick("live", at("07:00:00"), quiet=False, sent_at_ms=clocks.wall_ms - lag_ms)
    second = Tick("live", at("07:05:00"), quiet=False, sent_at_ms=clocks.wall_ms - lag_ms + 1_000)

    stage.process(0, [], [first])
    clocks.advance(1)
    stage.process(0, [], [second])

    assert stage.clocks()[0] == at("07:05:00")


def owner_tick(
    sender: str, watermark_ms: int | None, generation: int, inputs: int, *, quiet: bool = False
) -> Tick:
    """Return a tick of a worker that owns ``inputs`` of 4 input partitions in ``generation``."""
    return Tick(sender, watermark_ms, quiet, generation=generation, inputs=inputs, input_total=4)


def test_clock_holds_until_new_owner_ticks() -> None:
    # Worker b takes over one of a's partitions. a's first tick of the new
    # generation no longer reads the slow partition, and moves past it.
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])
    stage.process(0, [], [owner_tick("a", at("08:00:00"), 1, 4)])

    stage.process(0, [], [owner_tick("a", at("08:05:00"), 2, 3)])
    after_old_owner = stage.clocks()[0]
    stage.process(0, [], [owner_tick("b", None, 2, 1)])
    before_read = stage.clocks()[0]
    stage.process(0, [], [owner_tick("b", at("08:01:00"), 2, 1)])

    assert after_old_owner == at("08:00:00")
    assert before_read == at("08:00:00")
    assert stage.clocks()[0] == at("08:01:00")


def test_older_generation_tick_ignored() -> None:
    # A tick built before the rebalance and sent after it does not delay the clock.
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])
    ticks = [owner_tick("a", at("08:00:00"), 1, 2), owner_tick("b", at("08:01:00"), 1, 2)]
    stage.process(0, [], ticks)

    ticks = [owner_tick("a", at("08:04:00"), 2, 4), owner_tick("b", at("08:02:00"), 1, 2)]
    stage.process(0, [], ticks)

    assert stage.clocks()[0] == at("08:04:00")


def test_farewell_holds_clock_until_rebalance() -> None:
    # A stopping worker's partitions are read again by the others only after
    # the rebalance, from the committed offsets.
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])
    ticks = [owner_tick("a", at("08:00:00"), 1, 2), owner_tick("b", at("08:03:00"), 1, 2)]
    stage.process(0, [], ticks)

    stage.process(
        0, [], [owner_tick("a", None, 1, 0, quiet=True), owner_tick("b", at("08:06:00"), 1, 2)]
    )
    after_farewell = stage.clocks()[0]
    stage.process(0, [], [owner_tick("b", at("08:02:00"), 2, 4)])

    assert after_farewell == at("08:00:00")
    assert stage.clocks()[0] == at("08:02:00")


def test_ticks_without_generation_wait_for_all() -> None:
    clocks = FakeClocks(at("08:10:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])

    stage.process(0, [], [owner_tick("a", at("08:05:00"), 2, 3), tick("b", at("08:01:00"))])

    assert stage.clocks()[0] == at("08:01:00")


# Late events


def test_late_event_dead_letter_record() -> None:
    clocks = FakeClocks(at("09:30:00"))
    stage = make_stage(clocks)
    settings = stage.settings
    stage.restore(0, [])
    arrivals = [
        event("l1", "t1", "faq", at("09:00:30"), offset=10),
        event("l2", "t1", "ticket", at("09:01:00"), offset=11),
        event("l3", "t1", "phone", at("09:06:00"), offset=12),
        event("l4", "t1", "chatbot", at("09:04:50"), offset=13),
        event("l5", "t1", "email", at("09:08:00"), offset=14),
        event("l6", "t1", "chatbot", at("09:02:00"), offset=15, headers=[("trace-id", b"l6")]),
    ]

    outputs = []
    watermark_ms = 0
    for arrival in arrivals:
        watermark_ms = max(watermark_ms, arrival.occurred_at_ms)
        outputs.append(stage.process(0, [arrival], [tick("a", watermark_ms)]))
    dead_letters = [
        record
        for output in outputs
        for record in output.records
        if record.topic == settings.dead_letter_topic
    ]
    all_finals = [final for output in outputs for final in finals(output, settings)]

    assert all_finals == [("t1", "5m", "2025-06-02T09:00:00.000Z", 2, 3)]
    assert [late.event.event_id for output in outputs for late in output.late] == ["l6"]
    assert len(dead_letters) == 1
    record = dead_letters[0]
    headers = dict(record.headers or [])
    assert record.key == b"t1"
    assert record.value == arrivals[-1].raw_value
    assert (record.headers or [])[0] == ("trace-id", b"l6")
    assert headers["adoption.reason"] == b"late"
    assert headers["adoption.window"] == b"[2025-06-02T09:00:00.000Z, 2025-06-02T09:05:00.000Z)"
    assert headers["adoption.source.topic"] == INPUT_TOPIC.encode()
    assert headers["adoption.source.partition"] == b"3"
    assert headers["adoption.source.offset"] == b"15"
    assert b"2025-06-02T09:08:00.000Z" in headers["adoption.detail"]


def test_late_events_judged_before_batch_ticks() -> None:
    clocks = FakeClocks(at("09:30:00"))
    stage = make_stage(clocks)
    stage.restore(0, [])

    stage.process(0, [], [tick("a", at("09:06:00"))])
    output = stage.process(
        0,
        [event("w1", "t1", "faq", at("09:04:00"))],
        [tick("a", at("09:20:00"))],
    )

    assert output.counted == 1
    assert output.late == []


# Journal


def test_journal_compaction_restores_same_state() -> None:
    clocks = FakeClocks(at("12:00:00"))
    stage = make_stage(clocks, make_settings(windows="5m/1m,1h/5m"))
    journal = JournalTable()
    stage.restore(0, [])
    channels = ["chatbot", "phone", "faq", "email", "community"]

    steps: list[tuple[list[Interaction], list[Tick]]] = []
    start_ms = at("10:00:00")
    for number in range(700):
        occurred_at_ms = start_ms + number * 10_000
        events = [
            event(f"e{number}", "t1", channels[number % 5], occurred_at_ms),
            event(f"e{number}", "t2", channels[(number + 1) % 5], occurred_at_ms + 5_000),
        ]
        if number % 7 == 0 and number:
            events.append(event(f"e{number - 1}", "t1", "chatbot", occurred_at_ms - 10_000))
        steps.append((events, [tick("a", occurred_at_ms)]))
    outputs = run(stage, clocks, 0, steps, journal)

    restored_stage = make_stage(clocks, stage.settings)
    restored_stage.restore(0, journal.items())
    original = stage.states[0]
    restored = restored_stage.states[0]
    first_ms, last_ms = at("09:00:00"), at("12:30:00")
    repeats = [event("e699", "t1", "chatbot", start_ms + 699 * 10_000)]

    assert sum(output.counted for output in outputs) == 1_400
    assert journal.tombstones > COMPACT_AFTER_RECORDS
    assert len(journal.entries) < COMPACT_AFTER_RECORDS
    assert restored.clock_ms == original.clock_ms
    assert restored.finalized_ms == original.finalized_ms
    assert window_sums(restored_stage, 0, first_ms, last_ms) == window_sums(
        stage, 0, first_ms, last_ms
    )
    assert restored.remembered_ids == original.remembered_ids
    assert restored_stage.process(0, repeats, []).duplicates == {"t1": 1}
    assert stage.process(0, repeats, []).duplicates == {"t1": 1}


def test_restore_matches_uninterrupted_run() -> None:
    clocks = FakeClocks(at("12:00:00"))
    uninterrupted = make_stage(clocks)
    interrupted = make_stage(clocks)
    journal = JournalTable()
    uninterrupted.restore(0, [])
    interrupted.restore(0, [])
    steps = [
        ([event("m1", "t1", "chatbot", at("10:00:10"))], [tick("a", at("10:00:10"))]),
        ([event("m2", "t1", "phone", at("10:03:00"))], [tick("a", at("10:03:00"))]),
        ([event("m3", "t1", "faq", at("10:06:00"))], [tick("a", at("10:08:00"))]),
    ]
    later = [
        ([event("m3", "t1", "faq", at("10:06:00"))], [tick("a", at("10:08:00"))]),
        ([event("m4", "t1", "email", at("10:09:00"))], [tick("a", at("10:13:00"))]),
    ]

    run(uninterrupted, clocks, 0, steps)
    run(interrupted, clocks, 0, steps, journal)
    resumed = make_stage(clocks)
    resumed.restore(0, journal.items())
    expected = run(uninterrupted, clocks, 0, later)
    actual = run(resumed, clocks, 0, later)

    assert [finals(output, resumed.settings) for output in actual] == [
        finals(output, uninterrupted.settings) for output in expected
    ]
    assert finals(actual[-1], resumed.settings) == [("t1", "5m", "2025-06-02T10:05:00.000Z", 1, 2)]
    assert actual[0].duplicates == {"t1": 1}


def test_restore_ignores_other_partitions() -> None:
    clocks = FakeClocks(at("12:00:00"))
    stage = make_stage(clocks)
    own = JournalTable()
    shared = JournalTable()
    stage.restore(0, [])
    stage.restore(1, [])
    for number in range(5):
        occurred_at_ms = at("10:00:00") + number * MINUTE_MS
        other_output = stage.process(
            0, [event(f"o{number}", "t-zero", "phone", occurred_at_ms)], [tick("a", occurred_at_ms)]
        )
        own_output = stage.process(
            1, [event(f"p{number}", "t-one", "faq", occurred_at_ms)], [tick("a", occurred_at_ms)]
        )
        shared.write(other_output)
        shared.write(own_output)
        own.write(own_output)

    from_shared = make_stage(clocks)
    from_shared.restore(1, shared.items())
    from_own = make_stage(clocks)
    from_own.restore(1, own.items())
    first_ms, last_ms = at("09:50:00"), at("10:30:00")

    assert set(from_shared.states[1].tenants) == {"t-one", "*"}
    restored_sums = window_sums(from_shared, 1, first_ms, last_ms)
    assert restored_sums == window_sums(from_own, 1, first_ms, last_ms)
    assert restored_sums == window_sums(stage, 1, first_ms, last_ms)
    assert from_shared.states[1].remembered_ids == 5
    assert from_shared.journals[1].live.keys() == own.entries.keys()
    assert from_shared.journals[1].next_sequence == stage.journals[1].next_sequence


# The all-tenants figure


def tenants_sum(stages: Iterable[CountingStage], window: str, end_ms: int) -> WindowCounts:
    """Add up every tenant's sums of one window, over the partitions the stages own."""
    total = WindowCounts()
    for stage in stages:
        for state in stage.states.values():
            spec = next(spec for spec in state.windows if spec.name == window)
            for tenant, tenant_state in state.tenants.items():
                if tenant != stage.settings.all_tenants:
                    total.add(state.sum_window(tenant_state, spec, end_ms))
    return total


def figure_gauges(figure: AllTenantsState) -> dict[str, tuple[int, WindowCounts]]:
    return {spec.name: (end_ms, counts) for spec, end_ms, counts in figure.newest_windows()}


def tenant_gauges(stage: CountingStage) -> dict[str, tuple[int, WindowCounts]]:
    """Add up the tenants' gauge windows per size, as /metrics folds them."""
    gauges: dict[str, tuple[int, WindowCounts]] = {}
    for sample in stage.window_samples():
        end_ms, counts = gauges.setdefault(sample.spec.name, (sample.end_ms, WindowCounts()))
        assert end_ms == sample.end_ms
        counts.add(sample.counts)
    return gauges


def random_events(rng: random.Random, prefix: str, first_ms: int, count: int) -> list[Interaction]:
    channels = sorted(CHANNEL_CLASSES)
    return [
        event(
            f"{prefix}-{number}",
            f"t{rng.randrange(4)}",
            rng.choice(channels),
            first_ms + rng.randrange(0, 40_000),
        )
        for number in range(count)
    ]


def test_all_tenants_gauge_after_pause() -> None:
    # Each partition sends partials for the windows it changed. The figure
    # must hold every partition's current sums of every window it publishes,
    # whichever windows a partition last sent for its own tenants, and still
    # show each window size's gauge once the input pauses.
    clocks = FakeClocks(at("09:10:00"))
    # The wall clock runs ahead of the events by more than grace. This test
    # is about live input, so partials go out at the live interval.
    settings = make_settings("5m/1m,1h/5m,24h/1h", catch_up_publish_interval_ms=0)
    stage = make_stage(clocks, settings)
    figure = AllTenantsState(settings)
    stage.restore(0, [])
    stage.restore(1, [])
    rng = random.Random(20261205)
    published = 0

    def send(output: PartitionOutput) -> None:
        nonlocal published
        for partial in partials(output, stage):
            windows, _ = figure.apply(partial)
            for window in windows:
                if not window.final:
                    published += 1
                    assert window.counts == tenants_sum([stage], window.spec.name, window.end_ms)

    for step in range(40):
        occurred_ms = at("08:55:00") + step * 20_000
        for partition in (0, 1):
            events = random_events(rng, f"{partition}-{step}", occurred_ms, rng.randrange(0, 5))
            clocks.advance(1.1)
            send(stage.process(partition, events, [tick("a", occurred_ms - MINUTE_MS)]))
    clocks.advance(IDLE_TIMEOUT_SECONDS + 1)
    for partition in (0, 1):
        send(stage.process(partition, [], [tick("a", None, quiet=True)]))

    assert published > 0
    assert stage.clocks() == {0: clocks.wall_ms, 1: clocks.wall_ms}
    gauges = figure_gauges(figure)
    assert sorted(gauges) == ["1h", "24h", "5m"]
    assert gauges == tenant_gauges(stage)


def test_all_tenants_after_restore() -> None:
    # Events counted after a partition's last partial and before a restart
    # reach the figure with the restored partition's first partial.
    clocks = FakeClocks(at("09:30:00"))
    # The wall clock runs ahead of the events by more than grace. This test
    # is about live input, so partials go out at the live interval.
    settings = make_settings("5m/1m,15m/1m", catch_up_publish_interval_ms=0).model_copy(
        update={"internal_partitions": 1}
    )
    stage = make_stage(clocks, settings)
    figure = AllTenantsState(settings)
    journal = JournalTable()
    stage.restore(0, [])
    rng = random.Random(7)
    for step in range(6):
        occurred_ms = at("09:20:00") + step * 20_000
        events = random_events(rng, str(step), occurred_ms, 3)
        # Less than the publish interval apart: later steps send no partials.
        # The clock runs a minute ahead, so each step's events are in the gauges' windows.
        ticks = [tick("a", occurred_ms + MINUTE_MS)]
        outputs = run(stage, clocks, 0, [(events, ticks)], journal, 0.3)
        for partial in partials(outputs[0], stage):
            figure.apply(partial)
    assert figure_gauges(figure) != tenant_gauges(stage)

    resumed = make_stage(clocks, settings)
    resumed.restore(0, journal.items())
    clocks.advance(1.1)
    for partial in partials(resumed.process(0, [], [tick("a", at("09:22:40"))]), resumed):
        figure.apply(partial)

    gauges = figure_gauges(figure)
    assert sorted(gauges) == ["15m", "5m"]
    assert gauges == tenant_gauges(resumed)
