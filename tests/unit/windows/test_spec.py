"""Tests of the window arithmetic: half-open bounds, overlap, slices and invalid specs."""

from datetime import UTC, datetime

import pytest

from stream.settings import Settings, parse_windows
from stream.windows.spec import (
    WindowSpec,
    floor_to,
    slices_of_window,
    window_ends,
    windows_of_slice,
)

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

FIVE_MINUTES = WindowSpec(name="5m", size_ms=5 * MINUTE_MS, step_ms=5 * MINUTE_MS)
TEN_BY_FIVE = WindowSpec(name="10m", size_ms=10 * MINUTE_MS, step_ms=5 * MINUTE_MS)


def utc_ms(text: str) -> int:
    """Convert an RFC 3339 time with an offset to epoch milliseconds."""
    moment = datetime.fromisoformat(text)
    since_epoch = moment - datetime(1970, 1, 1, tzinfo=UTC)
    seconds_ms = since_epoch.seconds * 1_000 + since_epoch.microseconds // 1_000
    return since_epoch.days * DAY_MS + seconds_ms


def containing_windows(spec: WindowSpec, instant_ms: int) -> list[int]:
    """List the ends of the windows containing an instant by scanning every candidate start."""
    ends = []
    first_start = (instant_ms // spec.step_ms - spec.size_ms // spec.step_ms - 1) * spec.step_ms
    start = first_start
    while start <= instant_ms:
        if start <= instant_ms < start + spec.size_ms:
            ends.append(start + spec.size_ms)
        start += spec.step_ms
    return ends


# Instants around 1970, exact window boundaries and a day in 2025.
INSTANTS_MS = [
    -DAY_MS - 1,
    -5 * MINUTE_MS - 1,
    -5 * MINUTE_MS,
    -5 * MINUTE_MS + 1,
    -1,
    0,
    1,
    5 * MINUTE_MS - 1,
    5 * MINUTE_MS,
    utc_ms("1969-07-20T20:17:40Z"),
    utc_ms("2025-06-02T10:04:59.950Z"),
    utc_ms("2025-06-02T10:05:00Z"),
    utc_ms("2025-06-02T10:09:59.999Z"),
    utc_ms("2025-06-02T10:10:00Z"),
    *range(utc_ms("2025-06-02T10:00:00Z") - 3_000, utc_ms("2025-06-02T10:20:00Z"), 7_001),
    *range(-HOUR_MS, HOUR_MS, 59_999),
]


def test_window_ends_split_at_boundary() -> None:
    before = utc_ms("2025-06-02T10:04:59.950Z")
    at = utc_ms("2025-06-02T10:05:00Z")

    assert list(window_ends(FIVE_MINUTES, before)) == [utc_ms("2025-06-02T10:05:00Z")]
    assert list(window_ends(FIVE_MINUTES, at)) == [utc_ms("2025-06-02T10:10:00Z")]


def test_window_ends_half_open_bounds() -> None:
    for instant_ms in INSTANTS_MS:
        for end_ms in window_ends(FIVE_MINUTES, instant_ms):
            assert end_ms - FIVE_MINUTES.size_ms <= instant_ms, instant_ms
            assert instant_ms < end_ms, instant_ms


def test_window_ends_overlapping_windows_two_each() -> None:
    for instant_ms in INSTANTS_MS:
        ends = list(window_ends(TEN_BY_FIVE, instant_ms))

        assert len(ends) == 2, instant_ms
        assert ends == containing_windows(TEN_BY_FIVE, instant_ms), instant_ms
        assert all(end_ms % TEN_BY_FIVE.step_ms == 0 for end_ms in ends), instant_ms


@pytest.mark.parametrize(
    ("size_ms", "step_ms"),
    [(HOUR_MS, 5 * MINUTE_MS), (DAY_MS, HOUR_MS), (5 * MINUTE_MS, MINUTE_MS), (90_000, 30_000)],
)
def test_window_ends_match_scan(size_ms: int, step_ms: int) -> None:
    spec = WindowSpec(name="w", size_ms=size_ms, step_ms=step_ms)

    for instant_ms in INSTANTS_MS:
        ends = list(window_ends(spec, instant_ms))
        assert ends == containing_windows(spec, instant_ms), instant_ms
        assert len(ends) == size_ms // step_ms, instant_ms


def test_floor_to_before_1970() -> None:
    assert floor_to(-1, MINUTE_MS) == -MINUTE_MS
    assert floor_to(-MINUTE_MS, MINUTE_MS) == -MINUTE_MS
    assert floor_to(-MINUTE_MS - 1, MINUTE_MS) == -2 * MINUTE_MS
    assert floor_to(0, MINUTE_MS) == 0
    assert floor_to(MINUTE_MS - 1, MINUTE_MS) == 0


def test_slices_of_window_cover_window_once() -> None:
    spec = WindowSpec(name="1h", size_ms=HOUR_MS, step_ms=5 * MINUTE_MS)
    end_ms = utc_ms("2025-06-02T11:00:00Z")

    starts = list(slices_of_window(end_ms, spec, MINUTE_MS))

    assert len(starts) == 60
    assert starts[0] == utc_ms("2025-06-02T10:00:00Z")
    assert starts[-1] == utc_ms("2025-06-02T10:59:00Z")
    assert len(set(starts)) == len(starts)


def test_windows_of_slice_match_slices() -> None:
    spec = WindowSpec(name="10m", size_ms=10 * MINUTE_MS, step_ms=5 * MINUTE_MS)
    slice_start_ms = utc_ms("2025-06-02T10:07:00Z")

    ends = list(windows_of_slice(spec, slice_start_ms, MINUTE_MS))

    assert ends == [utc_ms("2025-06-02T10:10:00Z"), utc_ms("2025-06-02T10:15:00Z")]
    for end_ms in ends:
        assert slice_start_ms in slices_of_window(end_ms, spec, MINUTE_MS)


def test_parse_windows_sizes_and_steps() -> None:
    specs = parse_windows("5m/1m, 1h/5m ,24h")

    assert specs == (
        WindowSpec(name="5m", size_ms=5 * MINUTE_MS, step_ms=MINUTE_MS),
        WindowSpec(name="1h", size_ms=HOUR_MS, step_ms=5 * MINUTE_MS),
        WindowSpec(name="24h", size_ms=DAY_MS, step_ms=DAY_MS),
    )


def test_parse_windows_list_input() -> None:
    assert parse_windows(["10m/5m"]) == (TEN_BY_FIVE,)
    assert parse_windows([FIVE_MINUTES]) == (FIVE_MINUTES,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5m/10m", r"step 600000 ms exceeds size 300000 ms"),
        ("10m/3m", r"size 600000 ms is not a multiple of step 180000 ms"),
        ("0m", r"size and step must be positive"),
        ("5m/0m", r"size and step must be positive"),
        ("5m,5m/1m", r"each window size may appear once"),
        ("", r"configure at least one"),
        ("5x", r"invalid duration '5x'"),
    ],
)
def test_parse_windows_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_windows(text)


def test_window_spec_invalid_names_window() -> None:
    with pytest.raises(ValueError, match=r"invalid window 'odd'"):
        WindowSpec(name="odd", size_ms=7 * MINUTE_MS, step_ms=2 * MINUTE_MS)


@pytest.mark.usefixtures("isolated_env")
@pytest.mark.parametrize(
    ("windows", "slice_ms"),
    [
        ("5m/1m,1h/5m,24h/1h", MINUTE_MS),
        ("5m", 5 * MINUTE_MS),
        ("10m/5m,1h", 5 * MINUTE_MS),
        ("90s,2m", 30_000),
        ("12m/4m,10m/5m", MINUTE_MS),
        ("1h/20m,45m/15m", 5 * MINUTE_MS),
    ],
)
def test_settings_slice_ms_gcd(windows: str, slice_ms: int) -> None:
    settings = Settings(windows=parse_windows(windows))

    assert settings.slice_ms == slice_ms
    for spec in settings.windows:
        assert spec.step_ms % settings.slice_ms == 0
        assert spec.size_ms % settings.slice_ms == 0
