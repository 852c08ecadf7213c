"""The counting stage: per-partition state, idle clocks, journal and publishing.

This module decides what to write, and :mod:`stream.worker.app` writes it.
Each method returns the records to send, so the stage can be driven in tests
without a broker.
"""

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from stream.ingest.deadletter import dead_letter
from stream.ingest.events import Interaction, Reason
from stream.metrics.windows import TenantSample, WindowSample
from stream.publish.alerts import AlertDetector, AlertRules, encode_alert
from stream.publish.records import encode_record, record_key, window_record
from stream.settings import Settings
from stream.timeutil import ms_to_rfc3339, wall_clock_ms
from stream.windows.journal import JournalIndex, decode_delta, encode_delta, parse_journal_key
from stream.windows.spec import window_ends
from stream.windows.state import ClosedWindow, LateEvent, PartitionState
from stream.worker.messages import Partial, Tick, WindowSums, encode
from stream.worker.output import OutgoingRecord

logger = logging.getLogger(__name__)

# Entries (slice counts or event ids of at most 128 characters) per snapshot
# record, which keeps a record near 600 KB at most, below Kafka's 1 MiB limit.
SNAPSHOT_ENTRIES = 4_000
PARTIAL_WINDOWS_PER_RECORD = 200
COMPACT_AFTER_RECORDS = 256
# Final windows one partition's batch closes at most; the rest close in the next
# batches. A history replay closed hundreds of thousands at once, blocking for 13 s.
FINAL_WINDOWS_PER_BATCH = 10_000


@dataclass(slots=True)
class PartitionOutput:
    """Records, journal writes and counts that one partition's batch produced."""

    records: list[OutgoingRecord] = field(default_factory=list)
    journal: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    finals: int = 0
    provisionals: int = 0
    alerts: int = 0
    counted: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)
    late: list[LateEvent] = field(default_factory=list)


@dataclass(slots=True)
class _Sender:
    tick: Tick
    received: float


class CountingStage:
    """Counting state of the partitions this worker owns, and the rules that drive it."""

    def __init__(
        self,
        settings: Settings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.slice_ms = settings.slice_ms
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self.states: dict[int, PartitionState] = {}
        self.journals: dict[int, JournalIndex] = {}
        self._last_data: dict[int, float] = {}
        self._last_provisional: dict[int, float] = {}
        self._senders: dict[int, dict[str, _Sender]] = {}
        # The generation each partition last held its clock for, to log each wait once.
        self._waited_generation: dict[int, int] = {}
        self._journaled_progress: dict[
            int, tuple[int | None, int | None, dict[tuple[str, int], int]]
        ] = {}
        self._partial_progress: dict[int, tuple[int | None, bool]] = {}
        self._empty_progress: dict[int, int] = {}
        self.alerts = AlertDetector(alert_rules(settings))

    # Partition lifecycle

    def new_state(self, partition: int) -> PartitionState:
        """Return an empty state for a partition."""
        return PartitionState(
            partition,
            windows=self.settings.windows,
            slice_ms=self.slice_ms,
            grace_ms=self.settings.grace_ms,
            dedup_horizon_ms=self.settings.effective_dedup_horizon_ms,
            all_tenants=self.settings.all_tenants,
        )

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes]]) -> PartitionState:
        """Rebuild a partition's state from its journal records (any order)."""
        started = time.monotonic()
        state = self.new_state(partition)
        journal = JournalIndex(partition)
        entries = sorted(
            (parse_journal_key(key)[1], key, value)
            for key, value in records
            if parse_journal_key(key)[0] == partition and value is not None
        )
        for _, key, value in entries:
            delta = decode_delta(value)
            state.apply_delta(delta)
            journal.restored(key, delta.newest_slice_ms)
        state.finish_restore()

        self.states[partition] = state
        self.journals[partition] = journal
        self._last_data[partition] = self._monotonic()
        self._last_provisional[partition] = self._monotonic()
        self._journaled_progress[partition] = (
            state.clock_ms,
            state.finalized_ms,
            dict(state.source_offsets),
        )
        logger.info(
            "restored partition %d from %d journal records in %.3f s: %d tenants, clock %s",
            partition,
            len(entries),
            time.monotonic() - started,
            len(state.tenants.keys() - {self.settings.all_tenants}),
            ms_to_rfc3339(state.clock_ms) if state.clock_ms is not None else "unset",
        )
        return state

    def keep_only(self, partitions: set[int]) -> list[int]:
        """Forget the partitions not in ``partitions``; return the ones forgotten."""
        dropped = [partition for partition in self.states if partition not in partitions]
        for partition in dropped:
            self.alerts.forget(set(self.states[partition].tenants))
            del self.states[partition]
            self.journals.pop(partition, None)
            self._last_data.pop(partition, None)
            self._last_provisional.pop(partition, None)
            self._senders.pop(partition, None)
            self._waited_generation.pop(partition, None)
            self._journaled_progress.pop(partition, None)
            self._partial_progress.pop(partition, None)
            self._empty_progress.pop(partition, None)
        if dropped:
            logger.info("released counting state of partitions %s", sorted(dropped))
        return dropped

    # Processing

    def process(
        self,
        partition: int,
        events: list[Interaction],
        ticks: list[Tick],
    ) -> PartitionOutput:
        """Count a partition's events, then apply the watermarks, and return what to write.

        ``ticks`` holds the watermarks that came with the events and on their
        own, in arrival order; the events are judged late against the clock as
        it was before them.
        """
        state = self.states[partition]
        output = PartitionOutput()
        now = self._monotonic()

        if events:
            outcome = state.count(events)
            self._last_data[partition] = now
            output.counted = outcome.counted
            output.duplicates = outcome.duplicates
            output.late = outcome.late
            for late in outcome.late:
                output.records.append(self._late_record(late))

        senders = self._senders.setdefault(partition, {})
        # A partition that lags behind reads a sender's last watermark and its
        # quiet ticks after it in one batch. The quiet tick alone would hold
        # the clock until the idle timeout, so the last watermark of each
        # sender applies first, as it would have without the lag.
        last_tick = {tick.sender: tick for tick in ticks}
        last_watermark = {tick.sender: tick for tick in ticks if not tick.quiet}
        if any(last_tick[sender] is not tick for sender, tick in last_watermark.items()):
            for tick in last_watermark.values():
                senders[tick.sender] = _Sender(tick, now)
            self._advance_clock(partition, state, now)
        for tick in ticks:
            senders[tick.sender] = _Sender(tick, now)
        self._advance_clock(partition, state, now)

        self._publish(partition, state, output, now)
        self._write_journal(partition, state, output)
        return output

    def _advance_clock(self, partition: int, state: PartitionState, now: float) -> None:
        """Move the partition's clock to the slowest worker's input watermark.

        While any worker reads input, the clock is the oldest watermark among
        them, so skew between input partitions or a fast replay closes no
        window early. Once every input has been quiet for the idle timeout, a
        partition that has a clock moves it to the wall clock, so the last
        burst's windows close without waiting for another event and the gauges
        of tenants gone quiet empty out. A partition that never had a clock
        keeps none, so old data replayed into a fresh deployment is not late.
        """
        senders = self._senders.setdefault(partition, {})
        stale_after = self.settings.sender_timeout_ms / 1000
        wall_ms = self._wall_clock()
        # Send times are compared with the newest one read here, not with the
        # wall clock: while counting lags behind ingest, every tick read is
        # old, and a live worker's ticks must not look like a dead one's.
        newest_sent_ms = max(
            (sender.tick.sent_at_ms for sender in senders.values()
             if sender.tick.sent_at_ms is not None),
            default=None,
        )
        stale = [
            sender_id
            for sender_id, sender in senders.items()
            if now - sender.received > stale_after
            or (
                sender.tick.sent_at_ms is not None
                and newest_sent_ms is not None
                and newest_sent_ms - sender.tick.sent_at_ms > stale_after * 1000
            )
        ]
        for sender_id in stale:
            logger.info(
                "partition %d: no recent tick from worker %s within %.0f s, ignoring it",
                partition,
                sender_id,
                stale_after,
            )
            del senders[sender_id]
        if not senders:
            return
        current = self._current_senders(partition, senders)
        if current is None:
            return

        active = [sender for sender in current if not sender.tick.quiet]
        if active:
            watermarks = [sender.tick.watermark_ms for sender in active]
            if all(mark is not None for mark in watermarks):
                state.advance_clock(min(mark for mark in watermarks if mark is not None))
            return

        idle_seconds = now - self._last_data.get(partition, now)
        if idle_seconds < self.settings.idle_timeout_ms / 1000:
            return
        if state.clock_ms is not None or state.has_pending_windows():
            if state.advance_clock(wall_ms):
                logger.debug("partition %d idle: clock moved to the wall clock", partition)
        else:
            # A partition that never had a clock reports to the all-tenants
            # figure that it holds nothing up to now, so that figure does not
            # wait for it forever. Its first data takes that report back.
            self._empty_progress[partition] = wall_ms

    def _current_senders(
        self, partition: int, senders: dict[str, _Sender]
    ) -> list[_Sender] | None:
        """Return the senders whose watermarks make the clock, or None to hold it.

        After a rebalance, a moved input partition's new owner reads it again
        from the committed offset, behind the old owner's position. The old
        owner's next tick leaves the partition out, and the new owner's first
        tick may come later. So the clock moves only on ticks of the newest
        consumer generation, and only once their senders own every input
        partition between them. Senders of older generations are forgotten.
        Ticks without a generation, from a worker that cannot tell its
        assignment, count as before: the clock waits for every sender.
        """
        ticks = [sender.tick for sender in senders.values()]
        if any(tick.generation is None or tick.input_total is None for tick in ticks):
            return list(senders.values())
        newest = max(tick.generation or 0 for tick in ticks)
        for sender_id in [
            sender_id
            for sender_id, sender in senders.items()
            if sender.tick.generation != newest
        ]:
            del senders[sender_id]
        current = list(senders.values())
        owned = sum(sender.tick.inputs or 0 for sender in current)
        total = max(sender.tick.input_total or 0 for sender in current)
        if owned < total:
            if self._waited_generation.get(partition) != newest:
                self._waited_generation[partition] = newest
                logger.info(
                    "partition %d: clock held until the workers of generation %d have ticked "
                    "for all %d input partitions (%d so far)",
                    partition,
                    newest,
                    total,
                    owned,
                )
            return None
        return current

    def _publish_interval_ms(self, state: PartitionState, wall_ms: int) -> int:
        """Return how often the partition may publish provisional records now.

        A partition whose newest event is older than grace is reading a
        backlog or a replay of history, whose windows get their final
        records as fast as it reads. Its clock is no guide: after a restart
        it waits for input partitions that sent nothing yet, while live
        events already arrive.
        """
        interval = self.settings.publish_interval_ms
        newest_ms = state.newest_event_ms.get(self.settings.all_tenants)
        if newest_ms is not None and newest_ms < wall_ms - self.settings.grace_ms:
            return max(interval, self.settings.catch_up_publish_interval_ms)
        return interval

    def _publish(
        self, partition: int, state: PartitionState, output: PartitionOutput, now: float
    ) -> None:
        computed_at_ms = self._wall_clock()
        closed = state.close_windows(limit=FINAL_WINDOWS_PER_BATCH)
        provisional: list[ClosedWindow] = []
        if now - self._last_provisional.get(partition, 0.0) >= (
            self._publish_interval_ms(state, computed_at_ms) / 1000
        ):
            provisional = state.take_provisional()
            self._last_provisional[partition] = now

        all_tenants = self.settings.all_tenants
        partial_windows: list[WindowSums] = []
        for window in [*closed, *provisional]:
            if window.tenant == all_tenants:
                partial_windows.append(
                    WindowSums(
                        window=window.spec.name,
                        end_ms=window.end_ms,
                        counts=[
                            [cls, channel, number]
                            for (cls, channel), number in window.counts.as_slice().items()
                        ],
                    )
                )
                continue
            record = window_record(
                window.tenant,
                window.spec,
                window.end_ms,
                window.counts,
                final=window.final,
                computed_at_ms=computed_at_ms,
            )
            output.records.append(
                OutgoingRecord(
                    self.settings.output_topic,
                    record_key(window.tenant, window.spec),
                    encode_record(record),
                )
            )
            if window.final:
                output.finals += 1
                for alert in self.alerts.check(
                    window.tenant,
                    window.spec.name,
                    window.end_ms,
                    window.counts,
                    now_ms=computed_at_ms,
                ):
                    output.records.append(
                        OutgoingRecord(
                            self.settings.alerts_topic, window.tenant.encode(), encode_alert(alert)
                        )
                    )
                    output.alerts += 1
            else:
                output.provisionals += 1

        if state.clock_ms is not None or state.has_pending_windows():
            # It holds data now, so its progress is its own clock's again.
            self._empty_progress.pop(partition, None)
        progress = state.finalized_ms
        empty_progress = self._empty_progress.get(partition)
        empty = empty_progress is not None
        if empty:
            progress = empty_progress
        if partial_windows or self._partial_progress.get(partition, (None, False)) != (progress, empty):
            self._partial_progress[partition] = (progress, empty)
            # Several records when there are many windows, each below Kafka's size limit.
            chunks = [
                partial_windows[start : start + PARTIAL_WINDOWS_PER_RECORD]
                for start in range(0, len(partial_windows), PARTIAL_WINDOWS_PER_RECORD)
            ] or [[]]
            for number, chunk in enumerate(chunks):
                # Progress goes with the last chunk only, after every window it closes.
                chunk_progress = progress if number == len(chunks) - 1 else None
                output.records.append(
                    OutgoingRecord(
                        self.all_tenants_topic,
                        None,
                        encode(Partial(partition, chunk_progress, chunk, empty)),
                        partition=0,
                    )
                )
        state.expire()

    @property
    def all_tenants_topic(self) -> str:
        """Return the name of the single-partition topic of all-tenants partials."""
        return f"{self.settings.app_id}-all-tenants"

    def _write_journal(self, partition: int, state: PartitionState, output: PartitionOutput) -> None:
        journal = self.journals[partition]
        delta = state.take_delta()
        # A batch of late events only moves the input offsets, and they must
        # survive a restart, or the events would go to the dead-letter topic again.
        progress = (delta.clock_ms, delta.finalized_ms, delta.source_offsets)
        if not delta.is_empty() or self._journaled_progress.get(partition) != progress:
            key = journal.add(delta.newest_slice_ms)
            output.journal.append((key, encode_delta(delta)))
            self._journaled_progress[partition] = progress

        for key in journal.expired(state.expire_before()):
            output.journal.append((key, None))

        if len(journal.live) > COMPACT_AFTER_RECORDS:
            for key in journal.take_all():
                output.journal.append((key, None))
            for snapshot in state.snapshot(SNAPSHOT_ENTRIES):
                key = journal.add(snapshot.newest_slice_ms)
                output.journal.append((key, encode_delta(snapshot)))
            logger.info(
                "compacted journal of partition %d into %d records",
                partition,
                len(journal.live),
            )

    def _late_record(self, late: LateEvent) -> OutgoingRecord:
        event = late.event
        # Name the first window of the smallest size that held the event: it is
        # the first to close, and all windows holding the event have closed for it.
        spec = min(self.settings.windows, key=lambda window_spec: window_spec.size_ms)
        end_ms = window_ends(spec, event.occurred_at_ms)[0]
        window = f"[{ms_to_rfc3339(end_ms - spec.size_ms)}, {ms_to_rfc3339(end_ms)})"
        detail = (
            f"event at {ms_to_rfc3339(event.occurred_at_ms)} arrived when the clock was at "
            f"{ms_to_rfc3339(late.clock_ms)}, after its {spec.name} window {window} closed "
            f"(grace {self.settings.grace_ms // 1000} s)"
        )
        key, value, headers = dead_letter(
            key=event.raw_key,
            value=event.raw_value,
            original=event.raw_headers,
            reason=Reason.LATE,
            detail=detail,
            topic=event.source_topic,
            partition=event.source_partition,
            offset=event.source_offset,
            window=window,
            window_name=spec.name,
        )
        return OutgoingRecord(self.settings.dead_letter_topic, key, value, headers)

    # Reading for metrics

    def window_samples(self) -> Iterator[WindowSample]:
        """Yield the newest ended window of each size for every tenant owned here."""
        all_tenants = self.settings.all_tenants
        for state in list(self.states.values()):
            for tenant, spec, end_ms, counts in state.newest_windows():
                if tenant != all_tenants:
                    yield WindowSample(tenant, spec, end_ms, counts)

    def tenant_samples(self) -> Iterator[TenantSample]:
        """Yield the newest event time of every tenant owned here, and of all of them."""
        for state in list(self.states.values()):
            for tenant, newest_ms in state.newest_event_ms.items():
                yield TenantSample(tenant, newest_ms)

    def clocks(self) -> Mapping[int, int | None]:
        """Return the event-time clock of each owned partition."""
        return {partition: state.clock_ms for partition, state in self.states.items()}


def alert_rules(settings: Settings) -> AlertRules:
    """Return the in-stream alert thresholds from the settings."""
    return AlertRules(
        window=settings.alert_window_name,
        floor=settings.alert_floor,
        min_interactions=settings.alert_min_interactions,
        drop_fraction=settings.alert_drop_fraction,
        baseline_windows=settings.alert_baseline_windows,
    )
