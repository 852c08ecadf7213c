"""Tests of the all-tenants figure added up from the counting partitions' partials."""

from datetime import datetime

import pytest

from stream.ingest.channels import ChannelClass
from stream.settings import Settings, parse_windows
from stream.worker.all_tenants import PROGRESS_KEY, AllTenantsState, AllTenantsWindow
from stream.worker.messages import Partial, WindowSums

MINUTE_MS = 60_000
GRACE_MS = 2 * MINUTE_MS
SELF = int(ChannelClass.SELF_SERVICE)
ASSISTED = int(ChannelClass.ASSISTED)


def at(clock_time: str) -> int:
    """Return epoch milliseconds of a UTC time of day on 2025-06-02."""
    return round(datetime.fromisoformat(f"2025-06-02T{clock_time}+00:00").timestamp() * 1000)


END = at("10:05:00")


@pytest.fixture
def settings() -> Settings:
    return Settings(windows=parse_windows("5m,10m/5m"), grace_ms=GRACE_MS, internal_partitions=3)


def sums(window: str, end_ms: int, self_service: int, assisted: int) -> WindowSums:
    """Build one window's partial sums with a chatbot and a phone channel."""
    counts: list[list[int | str]] = []
    if self_service:
        counts.append([SELF, "chatbot", self_service])
    if assisted:
        counts.append([ASSISTED, "phone", assisted])
    return WindowSums(window=window, end_ms=end_ms, counts=counts)


def summary(windows: list[AllTenantsWindow]) -> list[tuple[str, int, int, int, bool]]:
    """Reduce windows to (window, end, self-service, total, final)."""
    return [
        (
            window.spec.name,
            window.end_ms,
            window.counts.self_service,
            window.counts.total,
            window.final,
        )
        for window in windows
    ]


def test_apply_sums_across_partitions(settings: Settings) -> None:
    state = AllTenantsState(settings)

    first, _ = state.apply(Partial(0, None, [sums("5m", END, 2, 1)]))
    second, _ = state.apply(Partial(1, None, [sums("5m", END, 1, 3)]))
    replaced, _ = state.apply(Partial(1, None, [sums("5m", END, 2, 3)]))

    assert summary(first) == [("5m", END, 2, 3, False)]
    assert summary(second) == [("5m", END, 3, 7, False)]
    assert summary(replaced) == [("5m", END, 4, 8, False)]
    assert replaced[0].counts.channels == {"chatbot": 4, "phone": 4}


def test_batch_publishes_window_once(settings: Settings) -> None:
    state = AllTenantsState(settings)
    later = END + 5 * MINUTE_MS
    closed = END + GRACE_MS

    published, writes = state.apply_batch(
        [
            Partial(0, None, [sums("5m", END, 1, 0), sums("10m", later, 1, 0)]),
            Partial(1, None, [sums("5m", END, 0, 2)]),
            Partial(0, None, [sums("5m", END, 3, 0), sums("5m", later, 1, 1)]),
            Partial(0, closed, []),
            Partial(1, closed, []),
            Partial(2, closed, []),
        ]
    )

    # Windows go out in the order of their last change. The 5m window ending at END closed last.
    assert summary(published) == [
        ("10m", later, 1, 1, False),
        ("5m", later, 1, 2, False),
        ("5m", END, 3, 5, True),
    ]
    # One write per key: the final window's entry is deleted, the open ones hold their sums.
    assert set(writes) == {
        f"10m|{later}".encode(),
        f"5m|{later}".encode(),
        f"5m|{END}".encode(),
        PROGRESS_KEY,
    }
    assert writes[f"5m|{END}".encode()] is None
    restored = AllTenantsState(settings)
    for key, value in writes.items():
        if value is not None:
            restored.restore(key, value)
    assert restored.progress == {0: closed, 1: closed, 2: closed}
    assert sorted(restored.partials) == [("10m", later), ("5m", later)]


def test_replay_publishes_watched_windows(settings: Settings) -> None:
    # A replayed backlog changes a window of every step at once: only the
    # ended one, the next to close and the newest get provisional records.
    state = AllTenantsState(settings)
    for partition in (1, 2):
        state.apply(Partial(partition, at("10:12:00"), []))
    ends = [END + number * 5 * MINUTE_MS for number in range(6)]

    published, writes = state.apply(
        Partial(0, at("10:12:00"), [sums("5m", end, 1, 1) for end in ends])
    )

    # Windows ending up to 10:10 are final at 10:12 with two minutes of grace.
    assert summary(published) == [
        ("5m", at("10:05:00"), 1, 2, True),
        ("5m", at("10:10:00"), 1, 2, True),
        ("5m", at("10:15:00"), 1, 2, False),
        ("5m", at("10:30:00"), 1, 2, False),
    ]
    # Every window's partial is kept for its final record.
    assert len([key for key in writes if key != PROGRESS_KEY]) == len(ends)


def test_final_only_when_every_partition_passed(settings: Settings) -> None:
    state = AllTenantsState(settings)
    closed = END + GRACE_MS
    state.apply(Partial(0, None, [sums("5m", END, 2, 1)]))
    state.apply(Partial(1, None, [sums("5m", END, 1, 1)]))

    two_of_three, _ = state.apply(Partial(0, closed, []))
    state.apply(Partial(1, closed + MINUTE_MS, []))
    one_short, _ = state.apply(Partial(2, closed - 1, []))
    last, _ = state.apply(Partial(2, closed, []))
    after, _ = state.apply(Partial(2, closed + 5 * MINUTE_MS, []))

    assert two_of_three == []
    assert one_short == []
    assert summary(last) == [("5m", END, 3, 5, True)]
    assert after == []
    assert state.newest_final["5m"].end_ms == END


def test_closed_through_oldest_progress(settings: Settings) -> None:
    state = AllTenantsState(settings)

    state.apply(Partial(0, at("10:20:00"), []))
    state.apply(Partial(1, at("10:09:00"), []))
    missing_partition = state.closed_through()
    state.apply(Partial(2, at("10:30:00"), []))
    state.apply(Partial(1, at("10:08:00"), []))

    assert missing_partition is None
    assert state.closed_through() == at("10:09:00")


def test_final_windows_in_end_order(settings: Settings) -> None:
    state = AllTenantsState(settings)
    later_end = END + 5 * MINUTE_MS
    state.apply(
        Partial(
            0,
            None,
            [sums("10m", later_end, 1, 0), sums("5m", later_end, 1, 0), sums("5m", END, 0, 1)],
        )
    )

    state.apply(Partial(0, later_end + GRACE_MS, []))
    state.apply(Partial(1, later_end + GRACE_MS, []))
    published, _ = state.apply(Partial(2, later_end + GRACE_MS, []))

    assert summary(published) == [
        ("5m", END, 0, 1, True),
        ("10m", later_end, 1, 1, True),
        ("5m", later_end, 1, 1, True),
    ]


def test_unconfigured_window_dropped(settings: Settings) -> None:
    state = AllTenantsState(settings)

    published, writes = state.apply(Partial(0, None, [sums("1h", END, 1, 0)]))

    assert published == []
    assert writes[b"1h|" + str(END).encode()] is None
    assert state.partials == {}


def test_restore_from_written_entries(settings: Settings) -> None:
    original = AllTenantsState(settings)
    table: dict[bytes, bytes] = {}
    partials = [
        Partial(0, at("10:04:00"), [sums("5m", END, 2, 1), sums("10m", END, 2, 1)]),
        Partial(1, at("10:06:00"), [sums("5m", END, 1, 1)]),
        Partial(2, at("10:07:00"), [sums("5m", END + 5 * MINUTE_MS, 0, 4)]),
        Partial(0, at("10:06:30"), []),
    ]
    for partial in partials:
        _, writes = original.apply(partial)
        for key, value in writes.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value

    restored = AllTenantsState(settings)
    for key, value in table.items():
        restored.restore(key, value)
    restored_progress = dict(restored.progress)
    expected = []
    actual = []
    for partition in range(3):
        closing = Partial(partition, at("10:20:00"), [])
        expected.extend(original.apply(closing)[0])
        actual.extend(restored.apply(closing)[0])

    assert restored_progress == {0: at("10:06:30"), 1: at("10:06:00"), 2: at("10:07:00")}
    assert summary(actual) == summary(expected)
    assert summary(actual) == [
        ("10m", END, 2, 3, True),
        ("5m", END, 3, 5, True),
        ("5m", END + 5 * MINUTE_MS, 0, 4, True),
    ]


def test_partial_after_final_ignored(settings: Settings) -> None:
    state = AllTenantsState(settings)
    closed = END + GRACE_MS
    state.apply(Partial(0, None, [sums("5m", END, 2, 1)]))
    for partition in range(3):
        state.apply(Partial(partition, closed, []))

    late, writes = state.apply(Partial(1, closed, [sums("5m", END, 1, 1)]))

    assert late == []
    assert writes == {}
    assert state.newest_final["5m"].counts.total == 3


def test_replay_after_empty_reports_is_counted(settings: Settings) -> None:
    # Every partition idled empty, reporting the wall clock, before history
    # was replayed: its windows were never final, so they are counted.
    state = AllTenantsState(settings)
    wall = at("18:00:00")
    for partition in range(3):
        state.apply(Partial(partition, wall, [], empty=True))

    replayed, _ = state.apply(Partial(0, None, [sums("5m", END, 2, 1)]))
    state.apply(Partial(1, END + GRACE_MS, []))
    state.apply(Partial(2, wall + MINUTE_MS, [], empty=True))
    final, _ = state.apply(Partial(0, END + GRACE_MS, []))

    assert summary(replayed) == [("5m", END, 2, 3, False)]
    assert summary(final) == [("5m", END, 2, 3, True)]


def test_partial_after_final_with_empty_partition_ignored(settings: Settings) -> None:
    # Partitions with data published the window's final. An empty partition
    # that gets data for it later cannot change that record.
    state = AllTenantsState(settings)
    state.apply(Partial(0, None, [sums("5m", END, 2, 1)]))
    state.apply(Partial(1, END + GRACE_MS, []))
    state.apply(Partial(2, at("18:00:00"), [], empty=True))
    final, _ = state.apply(Partial(0, END + GRACE_MS, []))

    late, _ = state.apply(Partial(2, None, [sums("5m", END, 5, 0)]))

    assert summary(final) == [("5m", END, 2, 3, True)]
    assert late == []


def test_empty_partitions_survive_restore(settings: Settings) -> None:
    state = AllTenantsState(settings)
    state.apply(Partial(0, END, []))
    _, writes = state.apply(Partial(1, at("18:00:00"), [], empty=True))

    restored = AllTenantsState(settings)
    for key, value in writes.items():
        assert value is not None
        restored.restore(key, value)

    assert restored.progress == {0: END, 1: at("18:00:00")}
    assert restored.empty == {1}


class _NoScan(dict[tuple[str, int], dict[int, dict[tuple[int, str], int]]]):
    """Open windows that fail the test when iterated as a whole."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("a partial scanned every open window")


def test_partial_does_not_scan_open_windows(settings: Settings) -> None:
    # A replay of years leaves hundreds of thousands of windows open until
    # every partition closes them; scanning them per partial blocked the worker.
    state = AllTenantsState(settings)
    ends = [END + number * 5 * MINUTE_MS for number in range(1_000)]
    for start in range(0, len(ends), 200):
        state.apply(Partial(0, None, [sums("5m", end, 1, 1) for end in ends[start:start + 200]]))
    state.partials = _NoScan(state.partials)
    for partition in (0, 1):
        state.apply(Partial(partition, END + GRACE_MS + 5 * MINUTE_MS, []))

    published, _ = state.apply(
        Partial(2, END + GRACE_MS + 5 * MINUTE_MS, [sums("5m", ends[-1], 1, 0)])
    )

    assert summary(published) == [
        ("5m", END, 1, 2, True),
        ("5m", END + 5 * MINUTE_MS, 1, 2, True),
        ("5m", ends[-1], 2, 3, False),
    ]
    assert len(state.partials) == len(ends) - 2


def test_restored_unconfigured_window_deleted(settings: Settings) -> None:
    # Windows were reconfigured between a stop and a start: the old size's
    # entries are removed from the table rather than kept forever.
    before = AllTenantsState(
        Settings(windows=parse_windows("5m,1h"), grace_ms=GRACE_MS, internal_partitions=3)
    )
    _, table = before.apply(Partial(0, None, [sums("1h", END, 1, 0), sums("5m", END, 1, 0)]))
    state = AllTenantsState(settings)
    for key, value in table.items():
        assert value is not None
        state.restore(key, value)

    _, writes = state.apply(Partial(1, None, []))

    assert writes == {b"1h|" + str(END).encode(): None}
    assert sorted(state.partials) == [("5m", END)]
