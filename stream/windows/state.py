"""Event-time state of one partition: slices per tenant, the clock, de-duplication.

Every event updates one slice (``slice_ms`` long) of its tenant, whatever
windows are configured. A window is the sum of its slices, computed when a
record or a metric needs it. A partition's clock is the input watermark
that the counting stage hands it (:meth:`PartitionState.advance_clock`); it
never moves back. A slice is closed once ``slice end + grace <= clock``: an
event for a closed slice is late and counted nowhere, so the final records of
every window size agree.
"""

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from stream.ingest.events import Interaction
from stream.windows.counts import (
    RESOLVED_BASE,
    SliceCounts,
    WindowCounts,
    add_counts,
    subtract_counts,
)
from stream.windows.spec import WindowSpec, slices_of_window, window_ends

WindowId = tuple[int, int]  # (index of the window spec, window end in ms)
SpanId = tuple[int, int]  # (index of the window spec, start of a step-long span in ms)


@dataclass(slots=True)
class TenantState:
    """The slices of one tenant and which of its windows await publishing."""

    slices: dict[int, SliceCounts] = field(default_factory=dict)
    # Per window spec, the counts of each step-long span: a window is the sum
    # of size/step of them, so a 24h window stepping by 1h sums 24, not 1,440
    # slices. A spec whose step is one slice shares the ``slices`` dict.
    steps: list[dict[int, SliceCounts]] = field(default_factory=list)
    # Windows with data and no final record yet.
    pending: set[WindowId] = field(default_factory=set)
    # Spans changed since the last provisional records.
    dirty: set[SpanId] = field(default_factory=set)
    # Per window spec, the end and sums of the last final window, from which
    # the next one is computed with two spans instead of size/step of them.
    last_final: list[tuple[int, SliceCounts] | None] = field(default_factory=list)


@dataclass(slots=True)
class Delta:
    """Changes made by one batch: the unit written to the changelog and replayed on restore."""

    counts: dict[tuple[str, int], SliceCounts] = field(default_factory=dict)
    ids: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    clock_ms: int | None = None
    finalized_ms: int | None = None
    # The newest input offset taken from each input topic and partition, all of them.
    source_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def newest_slice_ms(self) -> int | None:
        """Return the newest slice start this delta touches, or ``None`` when it has none."""
        starts = [start for _, start in self.counts] + [start for _, start in self.ids]
        return max(starts) if starts else None

    def is_empty(self) -> bool:
        """Tell whether the delta carries no counts and no ids."""
        return not self.counts and not self.ids


@dataclass(slots=True)
class LateEvent:
    """An event whose slice had closed when it arrived."""

    event: Interaction
    slice_start_ms: int
    clock_ms: int


@dataclass(slots=True)
class BatchOutcome:
    """Outcome of one batch's events: counted, duplicate or late."""

    counted: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)
    late: list[LateEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A window's sums, ready to publish."""

    tenant: str
    spec: WindowSpec
    end_ms: int
    counts: WindowCounts
    final: bool


class PartitionState:
    """Counts, clock and de-duplication memory of one partition of the counting stage."""

    def __init__(
        self,
        partition: int,
        *,
        windows: tuple[WindowSpec, ...],
        slice_ms: int,
        grace_ms: int,
        dedup_horizon_ms: int,
        all_tenants: str,
    ) -> None:
        self.partition = partition
        self.windows = windows
        self.slice_ms = slice_ms
        self.grace_ms = grace_ms
        self.dedup_horizon_ms = dedup_horizon_ms
        self.all_tenants = all_tenants
        self.retention_ms = max(spec.size_ms + spec.step_ms for spec in windows) + grace_ms
        self._spec_index = {spec: index for index, spec in enumerate(windows)}

        self.tenants: dict[str, TenantState] = {}
        # Pending windows by end, so closing them does not scan every tenant:
        # ``_pending_ends`` is a heap of the keys of ``_pending_by_end``.
        self._pending_by_end: dict[int, dict[tuple[str, int], None]] = {}
        self._pending_ends: list[int] = []
        self._expired_bounds: tuple[int, int] | None = None
        # Newest event time per tenant, kept after the tenant's slices expire so
        # that the event-age gauge shows how long a quiet tenant has been silent.
        # After a restore it is known only to the slice.
        self.newest_event_ms: dict[str, int] = {}
        self.clock_ms: int | None = None
        self.finalized_ms: int | None = None
        self._seen: dict[str, int] = {}
        self._seen_by_slice: dict[int, list[str]] = {}
        # The newest offset of each input partition whose events this partition
        # has taken, counted or not. An event read again after a restart or a
        # rebalance, whose slice has closed and id been forgotten meanwhile, is
        # known by it: it was counted or sent to the dead-letter topic before.
        self.source_offsets: dict[tuple[str, int], int] = {}
        self._delta = Delta()

    # Counting

    def count(self, events: Iterable[Interaction]) -> BatchOutcome:
        """Count a batch of events, skipping duplicates and those whose slice has closed."""
        outcome = BatchOutcome()
        slice_ms = self.slice_ms
        closed_before = self._closed_before()
        seen = self._seen
        seen_by_slice = self._seen_by_slice
        batch: dict[tuple[str, int], SliceCounts] = {}
        new_ids: dict[tuple[str, int], list[str]] = {}
        clock = self.clock_ms if self.clock_ms is not None else 0
        newest: dict[str, int] = {}
        source_offsets = self.source_offsets
        batch_offsets: dict[tuple[str, int], int] = {}

        for event in events:
            tenant = event.tenant
            source = (event.source_topic, event.source_partition)
            batch_offsets[source] = event.source_offset
            seen_key = tenant + "\x00" + event.event_id
            if seen_key in seen:
                outcome.duplicates[tenant] = outcome.duplicates.get(tenant, 0) + 1
                continue

            occurred_at_ms = event.occurred_at_ms
            start = occurred_at_ms - occurred_at_ms % slice_ms
            if start < closed_before:
                if event.source_offset <= source_offsets.get(source, -1):
                    # Read again: counted, or sent to the dead-letter topic, before.
                    outcome.duplicates[tenant] = outcome.duplicates.get(tenant, 0) + 1
                else:
                    outcome.late.append(LateEvent(event, start, clock))
                continue

            seen[seen_key] = start
            remembered = seen_by_slice.get(start)
            if remembered is None:
                remembered = seen_by_slice[start] = []
            remembered.append(seen_key)
            slice_key = (tenant, start)
            ids = new_ids.get(slice_key)
            if ids is None:
                ids = new_ids[slice_key] = []
            ids.append(event.event_id)

            counts = batch.get(slice_key)
            if counts is None:
                counts = batch[slice_key] = {}
            key = (event.channel_class, event.channel)
            counts[key] = counts.get(key, 0) + 1
            if event.resolved:
                resolved_key = (RESOLVED_BASE + event.channel_class, "")
                counts[resolved_key] = counts.get(resolved_key, 0) + 1

            if occurred_at_ms > newest.get(tenant, -(2**62)):
                newest[tenant] = occurred_at_ms
            outcome.counted += 1

        for source, offset in batch_offsets.items():
            if offset > source_offsets.get(source, -1):
                source_offsets[source] = offset
        self._merge_counts(batch, record=True)
        delta_ids = self._delta.ids
        if not delta_ids:
            # The usual case, one batch per delta: the batch's ids are the delta's.
            self._delta.ids = new_ids
        else:
            for slice_key, event_ids in new_ids.items():
                delta_ids.setdefault(slice_key, []).extend(event_ids)
        for tenant, occurred_at_ms in newest.items():
            self.note_newest_event(tenant, occurred_at_ms)
            self.note_newest_event(self.all_tenants, occurred_at_ms)
        return outcome

    def _closed_before(self) -> int:
        """Return the first slice start that is still open: earlier slices are closed."""
        if self.clock_ms is None:
            return -(2**62)
        return self.clock_ms - grace_end_offset(self.slice_ms, self.grace_ms)

    def _merge_counts(self, batch: dict[tuple[str, int], SliceCounts], *, record: bool) -> None:
        """Add per-slice counts to the tenants, the all-tenants partial and the delta."""
        if not batch:
            return
        all_tenants = self.all_tenants
        combined: dict[int, SliceCounts] = {}
        delta_counts = self._delta.counts
        if record and not delta_counts:
            # The usual case, one batch per delta: the batch's counts are the delta's.
            delta_counts = self._delta.counts = batch
        for (tenant, start), counts in batch.items():
            self._add_to_tenant(tenant, start, counts, track_windows=record)
            if tenant != all_tenants:
                add_counts(combined.setdefault(start, {}), counts)
            if record and delta_counts is not batch:
                add_counts(delta_counts.setdefault((tenant, start), {}), counts)
        for start, counts in combined.items():
            self._add_to_tenant(all_tenants, start, counts, track_windows=record)

    def _new_tenant(self) -> TenantState:
        state = TenantState()
        state.steps = [
            state.slices if spec.step_ms == self.slice_ms else {} for spec in self.windows
        ]
        state.last_final = [None] * len(self.windows)
        return state

    def _add_to_tenant(
        self, tenant: str, start: int, counts: SliceCounts, *, track_windows: bool
    ) -> None:
        state = self.tenants.get(tenant)
        if state is None:
            state = self.tenants[tenant] = self._new_tenant()
        slices = state.slices
        target = slices.get(start)
        new_slice = target is None
        if target is None:
            target = slices[start] = {}
        add_counts(target, counts)
        for index, (spec, steps) in enumerate(zip(self.windows, state.steps, strict=True)):
            step_start = start - start % spec.step_ms
            if steps is slices:
                new_span = new_slice
            else:
                step_counts = steps.get(step_start)
                new_span = step_counts is None
                if step_counts is None:
                    step_counts = steps[step_start] = {}
                add_counts(step_counts, counts)
            if track_windows:
                # A span's windows are marked once, when it first gets data:
                # none of them can be final then, or the data would be late.
                if new_span:
                    self._mark_windows(tenant, state, index, spec, step_start)
                state.dirty.add((index, step_start))

        if start > self.newest_event_ms.get(tenant, -(2**62)):
            self.newest_event_ms[tenant] = start

    def _mark_windows(
        self, tenant: str, state: TenantState, index: int, spec: WindowSpec, span_start: int
    ) -> None:
        """Mark the windows holding the span at ``span_start`` pending, unless final."""
        finalized = self.finalized_ms
        for end in window_ends(spec, span_start):
            if finalized is not None and end + self.grace_ms <= finalized:
                continue
            window = (index, end)
            if window in state.pending:
                continue
            state.pending.add(window)
            bucket = self._pending_by_end.get(end)
            if bucket is None:
                bucket = self._pending_by_end[end] = {}
                heapq.heappush(self._pending_ends, end)
            bucket[(tenant, index)] = None

    def _remember_ids(self, ids: dict[tuple[str, int], list[str]]) -> None:
        """Remember replayed event ids, as on restore; :meth:`count` remembers new ones itself."""
        for (tenant, start), event_ids in ids.items():
            bucket = self._seen_by_slice.setdefault(start, [])
            for event_id in event_ids:
                seen_key = tenant + "\x00" + event_id
                self._seen[seen_key] = start
                bucket.append(seen_key)

    def note_newest_event(self, tenant: str, occurred_at_ms: int) -> None:
        """Record the newest event time of a tenant, for the event-age metric."""
        if occurred_at_ms > self.newest_event_ms.get(tenant, -(2**62)):
            self.newest_event_ms[tenant] = occurred_at_ms

    # Clock

    def advance_clock(self, to_ms: int) -> bool:
        """Move the clock forward to ``to_ms``; return whether it moved."""
        if self.clock_ms is None or to_ms > self.clock_ms:
            self.clock_ms = to_ms
            return True
        return False

    def has_pending_windows(self) -> bool:
        """Tell whether any window with data still waits for its final record."""
        return bool(self._pending_by_end)

    # Publishing

    def close_windows(self, limit: int | None = None) -> list[ClosedWindow]:
        """Return the pending windows whose end plus grace the clock has passed, as final.

        The windows come in order of their end. With ``limit``, closing stops
        once that many are closed, after all windows of the last end, and
        ``finalized_ms`` covers only those ends: the rest close on later calls.
        """
        clock = self.clock_ms
        if clock is None:
            return []
        closed: list[ClosedWindow] = []
        cutoff = clock - self.grace_ms
        ends = self._pending_ends
        last_end: int | None = None
        while ends and ends[0] <= cutoff:
            if limit is not None and last_end is not None and len(closed) >= limit:
                # Every window ending up to last_end is final now, and none after it.
                finalized = last_end + self.grace_ms
                if self.finalized_ms is None or finalized > self.finalized_ms:
                    self.finalized_ms = finalized
                return closed
            end = last_end = heapq.heappop(ends)
            for tenant, index in self._pending_by_end.pop(end):
                state = self.tenants.get(tenant)
                window = (index, end)
                if state is None or window not in state.pending:
                    continue
                state.pending.discard(window)
                counts = self._final_sums(state, index, end)
                closed.append(ClosedWindow(tenant, self.windows[index], end, counts, final=True))
        self.finalized_ms = clock
        return closed

    def _final_sums(self, state: TenantState, index: int, end_ms: int) -> WindowCounts:
        """Sum a window that closes now, and keep its sums for the windows after it."""
        totals = self._window_totals(state, index, end_ms)
        state.last_final[index] = (end_ms, totals)
        return WindowCounts.from_totals(totals)

    def _window_totals(self, state: TenantState, index: int, end_ms: int) -> SliceCounts:
        """Add up a window's spans, from the tenant's last final window when it can.

        The spans of a final window no longer change, so the window one step
        later is the final one plus its newest span minus the oldest span of
        the final one: three spans to add instead of size/step of them.
        """
        spec = self.windows[index]
        steps = state.steps[index]
        previous = state.last_final[index]
        if previous is None or previous[0] != end_ms - spec.step_ms:
            return self._span_totals(steps, spec, end_ms)
        return _step_forward(steps, spec, previous)

    def take_provisional(self) -> list[ClosedWindow]:
        """Return, per tenant and window size, the changed windows a reader watches.

        These are the window that closes next, the one that closes next after
        the newest changed span, and the newest one that has ended, which the
        gauges show until it is final. Other open windows overlap them and get
        their final record when they close. The
        all-tenants partial is the exception: every changed open window, since
        the all-tenants figure adds up partitions' sums and has no slices to
        sum itself. The changes are then forgotten.
        """
        changed: list[ClosedWindow] = []
        clock = self.clock_ms
        windows = self.windows
        for tenant, state in self.tenants.items():
            if not state.dirty:
                continue
            if tenant == self.all_tenants:
                changed.extend(self._changed_windows(tenant, state))
                state.dirty.clear()
                continue
            pending = state.pending
            chosen: set[WindowId] = set()
            next_end: dict[int, int] = {}
            newest_end: dict[int, int] = {}
            for index, span_start in state.dirty:
                spec = windows[index]
                # The windows holding the span end from one step to one size after it.
                first_end = span_start + spec.step_ms
                if clock is not None:
                    ended = clock - clock % spec.step_ms
                    holds_span = span_start < ended <= span_start + spec.size_ms
                    if holds_span and (index, ended) in pending:
                        chosen.add((index, ended))
                    first_end = max(first_end, ended + spec.step_ms)
                if first_end > span_start + spec.size_ms or (index, first_end) not in pending:
                    continue
                next_end[index] = min(first_end, next_end.get(index, first_end))
                newest_end[index] = max(first_end, newest_end.get(index, first_end))
            # When the changed spans straddle a step boundary, the window that
            # closes next and the window of the newest events differ, and both changed.
            chosen.update(next_end.items())
            chosen.update(newest_end.items())
            for window in sorted(chosen, key=lambda item: (item[1], item[0])):
                changed.append(self._window(tenant, state, window, final=False))
            state.dirty.clear()
        return changed

    def _changed_windows(self, tenant: str, state: TenantState) -> Iterator[ClosedWindow]:
        """Yield every open window holding a changed span, by size and then by end.

        Windows one step apart share all spans but two, so each one after the
        first is computed from the one before it.
        """
        by_spec: dict[int, set[int]] = {}
        for index, span_start in state.dirty:
            ends = by_spec.setdefault(index, set())
            ends.update(
                end
                for end in window_ends(self.windows[index], span_start)
                if (index, end) in state.pending
            )
        for index in sorted(by_spec):
            spec = self.windows[index]
            steps = state.steps[index]
            previous: tuple[int, SliceCounts] | None = None
            for end in sorted(by_spec[index]):
                if previous is not None and previous[0] == end - spec.step_ms:
                    totals = _step_forward(steps, spec, previous)
                else:
                    totals = self._window_totals(state, index, end)
                previous = (end, totals)
                yield ClosedWindow(tenant, spec, end, WindowCounts.from_totals(totals), final=False)

    def _window(self, tenant: str, state: TenantState, window: WindowId, *, final: bool) -> ClosedWindow:
        spec = self.windows[window[0]]
        return ClosedWindow(
            tenant=tenant,
            spec=spec,
            end_ms=window[1],
            counts=self.sum_window(state, spec, window[1]),
            final=final,
        )

    def sum_window(self, state: TenantState, spec: WindowSpec, end_ms: int) -> WindowCounts:
        """Sum the step-long spans of the window of ``spec`` that ends at ``end_ms``."""
        return WindowCounts.from_totals(self._window_totals(state, self._spec_index[spec], end_ms))

    @staticmethod
    def _span_totals(steps: dict[int, SliceCounts], spec: WindowSpec, end_ms: int) -> SliceCounts:
        """Add up a window's spans from the newest, so each key sits where its newest span put it."""
        totals: SliceCounts = {}
        for start in reversed(slices_of_window(end_ms, spec, spec.step_ms)):
            found = steps.get(start)
            if found is not None:
                add_counts(totals, found)
        return totals

    def newest_windows(self) -> Iterator[tuple[str, WindowSpec, int, WindowCounts]]:
        """Yield, per tenant and window size, the newest window that has ended by the clock."""
        if self.clock_ms is None:
            return
        for tenant, state in self.tenants.items():
            for spec in self.windows:
                end = self.clock_ms - self.clock_ms % spec.step_ms
                yield tenant, spec, end, self.sum_window(state, spec, end)

    # Expiry

    def expire(self) -> None:
        """Drop slices no window needs any more, and ids past the de-duplication horizon."""
        if self.clock_ms is None or self.finalized_ms is None:
            return
        slices_before = min(self.clock_ms, self.finalized_ms) - self.retention_ms
        self._expire_slices(slices_before)
        ids_before = self.ids_expire_before()
        for start in [start for start in self._seen_by_slice if start < ids_before]:
            for seen_key in self._seen_by_slice.pop(start):
                if self._seen.get(seen_key) == start:
                    del self._seen[seen_key]

    def _expire_slices(self, slices_before: int) -> None:
        # Slices and spans start at multiples of the slice length, so the set
        # to drop changes only when the limit crosses a multiple. Between two
        # crossings a scan of every tenant would find nothing to drop.
        bounds = ((slices_before - 1) // self.slice_ms, slices_before // self.slice_ms)
        if bounds == self._expired_bounds:
            return
        self._expired_bounds = bounds
        for state in self.tenants.values():
            for start in [start for start in state.slices if start < slices_before]:
                del state.slices[start]
            for spec, steps in zip(self.windows, state.steps, strict=True):
                # A span goes once the last slice in it has gone.
                for start in [start for start in steps if start + spec.step_ms <= slices_before]:
                    del steps[start]
        empty = [
            tenant
            for tenant, state in self.tenants.items()
            if not state.slices and not state.pending
        ]
        for tenant in empty:
            del self.tenants[tenant]

    def ids_expire_before(self) -> int:
        """Return the slice start before which event ids are forgotten."""
        if self.clock_ms is None:
            return -(2**62)
        return self.clock_ms - self.dedup_horizon_ms - self.slice_ms

    def expire_before(self) -> int:
        """Return the slice start before which neither counts nor ids are kept."""
        if self.clock_ms is None or self.finalized_ms is None:
            return -(2**62)
        slices_before = min(self.clock_ms, self.finalized_ms) - self.retention_ms
        return min(slices_before, self.ids_expire_before())

    @property
    def remembered_ids(self) -> int:
        """Return how many event ids the de-duplication memory holds."""
        return len(self._seen)

    # Changelog

    def take_delta(self) -> Delta:
        """Return the changes since the last call, with the current clock."""
        delta = self._delta
        delta.clock_ms = self.clock_ms
        delta.finalized_ms = self.finalized_ms
        delta.source_offsets = dict(self.source_offsets)
        self._delta = Delta()
        return delta

    def apply_delta(self, delta: Delta) -> None:
        """Replay one changelog delta, as on restore."""
        if delta.clock_ms is not None:
            self.advance_clock(delta.clock_ms)
        if delta.finalized_ms is not None and (
            self.finalized_ms is None or delta.finalized_ms > self.finalized_ms
        ):
            self.finalized_ms = delta.finalized_ms
        self._merge_counts(
            {key: value for key, value in delta.counts.items() if key[0] != self.all_tenants},
            record=False,
        )
        self._remember_ids(delta.ids)
        for source, offset in delta.source_offsets.items():
            if offset > self.source_offsets.get(source, -1):
                self.source_offsets[source] = offset

    def finish_restore(self) -> None:
        """Mark the windows of restored slices that are not final yet as pending.

        Replaying deltas skips this bookkeeping, so it is done once here, per
        step-long span rather than per slice: the step divides the size, so
        every slice of a span lies in the same windows.

        Only the all-tenants spans count as changed. The last partial sent
        before the restart may lack events counted after it, so the figure
        would keep stale sums until the window's final record. A tenant's
        gauges sum its slices and need no such refresh.
        """
        self._pending_by_end = {}
        self._pending_ends = []
        for tenant, state in self.tenants.items():
            state.pending = set()
            state.dirty.clear()
            for index, (spec, steps) in enumerate(zip(self.windows, state.steps, strict=True)):
                for step_start in steps:
                    self._mark_windows(tenant, state, index, spec, step_start)
                    if tenant == self.all_tenants:
                        state.dirty.add((index, step_start))
        self.expire()

    def snapshot(self, max_entries: int) -> list[Delta]:
        """Return the whole state as deltas of at most ``max_entries`` slices and id lists."""
        deltas: list[Delta] = []
        current = Delta()
        entries = 0
        for tenant, state in self.tenants.items():
            if tenant == self.all_tenants:
                continue
            for start, counts in state.slices.items():
                current.counts[(tenant, start)] = dict(counts)
                entries += len(counts)
                if entries >= max_entries:
                    deltas.append(current)
                    current, entries = Delta(), 0
        ids: dict[tuple[str, int], list[str]] = {}
        for start, seen_keys in self._seen_by_slice.items():
            for seen_key in seen_keys:
                tenant, _, event_id = seen_key.partition("\x00")
                ids.setdefault((tenant, start), []).append(event_id)
        for key, event_ids in ids.items():
            for offset in range(0, len(event_ids), max_entries):
                if entries >= max_entries or key in current.ids:
                    deltas.append(current)
                    current, entries = Delta(), 0
                current.ids[key] = event_ids[offset : offset + max_entries]
                entries += len(current.ids[key])
        deltas.append(current)
        for delta in deltas:
            delta.clock_ms = self.clock_ms
            delta.finalized_ms = self.finalized_ms
            delta.source_offsets = dict(self.source_offsets)
        return deltas


def _step_forward(
    steps: dict[int, SliceCounts], spec: WindowSpec, previous: tuple[int, SliceCounts]
) -> SliceCounts:
    """Sum the window one step after ``previous`` (its end and sums): add a span, drop one."""
    end_ms = previous[0] + spec.step_ms
    # Newest span first, as in _span_totals.
    newest = steps.get(end_ms - spec.step_ms)
    totals = dict(newest) if newest is not None else {}
    add_counts(totals, previous[1])
    oldest = steps.get(previous[0] - spec.size_ms)
    if oldest is not None:
        subtract_counts(totals, oldest)
    return totals


def grace_end_offset(slice_ms: int, grace_ms: int) -> int:
    """Return how far behind the clock a slice may start and still be open.

    A slice ``[s, s + slice_ms)`` is open while ``s + slice_ms + grace > clock``.
    """
    return slice_ms + grace_ms - 1
