"""The all-tenants figure, added up from every counting partition's partial sums.

Each counting partition sends the sums of all its tenants per window, and how
far it has closed windows. A window of the all-tenants figure is final once
every partition has closed it, so the figure is one correct number however
tenants are spread over partitions and workers.
"""

import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from stream.logutil import RateLimitedLog
from stream.settings import Settings
from stream.windows.counts import SliceCounts, WindowCounts
from stream.windows.spec import WindowSpec
from stream.worker.messages import Partial

logger = logging.getLogger(__name__)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()

PROGRESS_KEY = b"progress"


@dataclass(frozen=True, slots=True)
class AllTenantsWindow:
    """One window of the all-tenants figure, ready to publish."""

    spec: WindowSpec
    end_ms: int
    counts: WindowCounts
    final: bool


@dataclass(slots=True)
class AllTenantsState:
    """Latest partial sums per window and partition, and each partition's progress."""

    settings: Settings
    partials: dict[tuple[str, int], dict[int, SliceCounts]] = field(default_factory=dict)
    # Ends and names of the windows in ``partials``, as a heap. A history replay
    # leaves hundreds of thousands open, too many to scan for every partial.
    _ends: list[tuple[int, str]] = field(default_factory=list)
    # Restored entries of windows no longer configured, deleted on the next apply.
    _unconfigured: set[tuple[str, int]] = field(default_factory=set)
    progress: dict[int, int | None] = field(default_factory=dict)
    empty: set[int] = field(default_factory=set)
    newest_final: dict[str, AllTenantsWindow] = field(default_factory=dict)
    log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(logger))
    _window_names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self._window_names = frozenset(spec.name for spec in self.settings.windows)

    def apply_batch(
        self, partials: Iterable[Partial]
    ) -> tuple[list[AllTenantsWindow], dict[bytes, bytes | None]]:
        """Apply partials in order and return the windows to publish and the table entries to write.

        Partitions send the partial of every open window they changed, so a
        batch often changes one window several times. Each window is
        published once with its newest sums, and each table key written once.
        """
        changed: dict[tuple[str, int], AllTenantsWindow] = {}
        writes: dict[bytes, bytes | None] = {}
        for partial in partials:
            published, written = self.apply(partial)
            for window in published:
                key = (window.spec.name, window.end_ms)
                # Moved to the end, so windows go out in the order of their last change.
                changed.pop(key, None)
                changed[key] = window
            writes.update(written)
        return list(changed.values()), writes

    def apply(self, partial: Partial) -> tuple[list[AllTenantsWindow], dict[bytes, bytes | None]]:
        """Take one partial; return the windows to publish and the table entries to write."""
        writes: dict[bytes, bytes | None] = dict.fromkeys(map(_window_key, self._unconfigured))
        self._unconfigured.clear()
        changed: set[tuple[str, int]] = set()
        specs = {spec.name: spec for spec in self.settings.windows}
        closed_before = self._closed_by_data()
        for sums in partial.windows:
            key = (sums.window, sums.end_ms)
            if sums.window not in specs:
                # Sent before the windows were reconfigured: nothing will close it.
                writes[_window_key(key)] = None
                continue
            by_partition = self.partials.get(key)
            if by_partition is None:
                already_final = (
                    closed_before is not None
                    and sums.end_ms + self.settings.grace_ms <= closed_before
                )
                if already_final:
                    # Its final record is out; a second, partial one would contradict it.
                    self.log.warning(
                        "ignored partial",
                        "ignored partial of partition %d for window %s ending %s, already final",
                        partial.partition,
                        sums.window,
                        sums.end_ms,
                    )
                    continue
                by_partition = self.partials[key] = {}
                heapq.heappush(self._ends, (sums.end_ms, sums.window))
            by_partition[partial.partition] = {
                (int(cls), str(channel)): int(number) for cls, channel, number in sums.counts
            }
            changed.add(key)
            writes[_window_key(key)] = self._encode_window(key)
        if self._take_progress(partial):
            writes[PROGRESS_KEY] = _encoder.encode(
                [[p, ms, p in self.empty] for p, ms in self.progress.items()]
            )

        closed_through = self.closed_through()
        finals = self._pop_final(closed_through)
        provisional = _watched(changed, specs, closed_through).difference(finals)
        published: list[AllTenantsWindow] = []
        for key in sorted([*finals, *provisional], key=lambda item: (item[1], item[0])):
            spec = specs[key[0]]
            final = key in finals
            window = AllTenantsWindow(spec, key[1], self._sum(key), final)
            published.append(window)
            if final:
                del self.partials[key]
                writes[_window_key(key)] = None
                newest = self.newest_final.get(spec.name)
                if newest is None or newest.end_ms < window.end_ms:
                    self.newest_final[spec.name] = window
        return published, writes

    def _pop_final(self, closed_through: int | None) -> set[tuple[str, int]]:
        """Take from the heap the windows whose end plus grace every partition has passed."""
        finals: set[tuple[str, int]] = set()
        if closed_through is None:
            return finals
        ends = self._ends
        while ends and ends[0][0] + self.settings.grace_ms <= closed_through:
            end_ms, name = heapq.heappop(ends)
            if (name, end_ms) in self.partials:
                finals.add((name, end_ms))
        return finals

    def newest_windows(self) -> list[tuple[WindowSpec, int, WindowCounts]]:
        """Return, per window size, the newest window ended by every partition's clock.

        A window without data in any partition is left out, like a tenant's.
        Every partition sends the partial of each open window whose spans
        changed, so a window holding data has partials here until it is final.
        """
        closed_through = self.closed_through()
        if closed_through is None:
            return []
        windows: list[tuple[WindowSpec, int, WindowCounts]] = []
        for spec in self.settings.windows:
            end_ms = closed_through - closed_through % spec.step_ms
            if (spec.name, end_ms) in self.partials:
                windows.append((spec, end_ms, self._sum((spec.name, end_ms))))
                continue
            final = self.newest_final.get(spec.name)
            if final is not None and final.end_ms == end_ms:
                windows.append((spec, end_ms, final.counts))
        return windows

    def _take_progress(self, partial: Partial) -> bool:
        """Record how far the partial's partition has closed windows; return whether that changed.

        Progress only grows, except when a partition that reported itself
        empty gets data: its report of the wall clock is replaced by its own
        clock's, which may be far older when history is replayed.
        """
        partition = partial.partition
        was_empty = partition in self.empty
        if was_empty and not partial.empty:
            self.empty.discard(partition)
            self.progress.pop(partition, None)
            if partial.finalized_ms is not None:
                self.progress[partition] = partial.finalized_ms
            return True
        if partial.empty:
            self.empty.add(partition)
        previous = self.progress.get(partition)
        if partial.finalized_ms is None or (
            previous is not None and partial.finalized_ms <= previous
        ):
            return partial.empty and not was_empty
        self.progress[partition] = partial.finalized_ms
        return True

    def _closed_by_data(self) -> int | None:
        """Return the clock up to which every partition holding data has closed its windows.

        A window up to there may have had its final record. Partitions that
        report themselves empty are left out, so that a replay of history
        into a fresh deployment is not taken for data arriving after finals.
        """
        closed_through = self.closed_through()
        if closed_through is None:
            return None
        values = [
            ms
            for partition, ms in self.progress.items()
            if partition not in self.empty and ms is not None
        ]
        return min(values) if values else None

    def closed_through(self) -> int | None:
        """Return the clock up to which every partition has closed its windows."""
        partitions = range(self.settings.internal_partitions)
        values = [self.progress.get(partition) for partition in partitions]
        if any(value is None for value in values):
            return None
        return min(value for value in values if value is not None)

    def restore(self, key: bytes, value: bytes) -> None:
        """Load one table entry written by :meth:`apply`."""
        document = _decoder.decode(value)
        if key == PROGRESS_KEY:
            # Entries written before the empty flag existed have two fields.
            self.progress = {int(entry[0]): entry[1] for entry in document}
            self.empty = {int(entry[0]) for entry in document if len(entry) > 2 and entry[2]}
            return
        window, _, end = key.decode().rpartition("|")
        window_key = (window, int(end))
        if window not in self._window_names:
            self._unconfigured.add(window_key)
            return
        if window_key not in self.partials:
            heapq.heappush(self._ends, (window_key[1], window))
        self.partials[window_key] = {
            int(p): {(int(cls), str(ch)): int(n) for cls, ch, n in counts} for p, counts in document
        }

    def _sum(self, key: tuple[str, int]) -> WindowCounts:
        counts = WindowCounts()
        for slice_counts in self.partials.get(key, {}).values():
            counts.add_slice(slice_counts)
        return counts

    def _encode_window(self, key: tuple[str, int]) -> bytes:
        return _encoder.encode(
            [
                [p, [[cls, ch, n] for (cls, ch), n in counts.items()]]
                for p, counts in self.partials[key].items()
            ]
        )


def _watched(
    changed: set[tuple[str, int]], specs: dict[str, WindowSpec], closed_through: int | None
) -> set[tuple[str, int]]:
    """Return the changed windows worth a provisional record, as for a tenant.

    Per window size: the newest window ended by the figure's clock, the
    next to close after it, and the newest. The partials of the others are
    kept for their final records, but a history replay changes thousands of
    windows at once and their provisional records would flood the output.
    """
    by_name: dict[str, list[int]] = {}
    for name, end_ms in changed:
        by_name.setdefault(name, []).append(end_ms)
    watched: set[tuple[str, int]] = set()
    for name, ends in by_name.items():
        spec = specs.get(name)
        if spec is None:
            continue
        later = ends
        if closed_through is not None:
            ended = closed_through - closed_through % spec.step_ms
            if ended in ends:
                watched.add((name, ended))
            later = [end_ms for end_ms in ends if end_ms > ended]
        if later:
            watched.add((name, min(later)))
            watched.add((name, max(later)))
    return watched


def _window_key(key: tuple[str, int]) -> bytes:
    return f"{key[0]}|{key[1]}".encode()
