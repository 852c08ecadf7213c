"""Tests of one partition's event-time state, driven by hand without Kafka.

The clock of a :class:`PartitionState` is the input watermark, so the tests
move it with ``advance_clock`` the way the counting stage does after each
batch, never from the newest event alone.
"""

import itertools
import random
from datetime import datetime

import msgspec

from stream.ingest.channels import ChannelClass
from stream.ingest.events import Interaction
from stream.windows.counts import RESOLVED_BASE, WindowCounts
from stream.windows.spec import WindowSpec, window_ends
from stream.windows.state import ClosedWindow, Delta, PartitionState

MINUTE_MS = 60_000
GRACE_MS = 2 * MINUTE_MS
ALL_TENANTS = "*"
# Input offsets, one per interaction built, as a producer would append them.
_offsets = itertools.count()

FIVE_MINUTES = WindowSpec(name="5m", size_ms=5 * MINUTE_MS, step_ms=5 * MINUTE_MS)
TEN_BY_FIVE = WindowSpec(name="10m", size_ms=10 * MINUTE_MS, step_ms=5 * MINUTE_MS)

CHANNEL_CLASSES = {
    "knowledge_base": ChannelClass.SELF_SERVICE,
    "faq": ChannelClass.SELF_SERVICE,
    "chatbot": ChannelClass.SELF_SERVICE,
    "community": ChannelClass.SELF_SERVICE,
    "email": ChannelClass.ASSISTED,
    "phone": ChannelClass.ASSISTED,
    "live_chat": ChannelClass.ASSISTED,
    "ticket": ChannelClass.ASSISTED,
    "internal": ChannelClass.EXCLUDED,
}


def at(clock_time: str, day: str = "2025-06-02") -> int:
    """Return epoch milliseconds of a UTC time of day such as ``"09:04:50"``."""
    moment = datetime.fromisoformat(f"{day}T{clock_time}+00:00")
    return round(moment.timestamp() * 1000)


def interaction(
    event_id: str,
    tenant: str,
    channel: str,
    occurred_at: str,
    *,
    resolved: bool | None = None,
    offset: int | None = None,
) -> Interaction:
    """Build a valid interaction as the ingest stage would, at the next input offset."""
    return Interaction(
        event_id=event_id,
        occurred_at_ms=at(occurred_at),
        tenant=tenant,
        channel=channel,
        channel_class=int(CHANNEL_CLASSES[channel]),
        resolved=resolved,
        segment=None,
        customer_id=None,
        source_topic="support-interactions",
        source_partition=0,
        source_offset=next(_offsets) if offset is None else offset,
        raw_key=None,
        raw_value=b"{}",
    )


def new_state(
    *,
    windows: tuple[WindowSpec, ...] = (FIVE_MINUTES,),
    slice_ms: int = MINUTE_MS,
    grace_ms: int = GRACE_MS,
    dedup_horizon_ms: int = 60 * MINUTE_MS,
) -> PartitionState:
    return PartitionState(
        0,
        windows=windows,
        slice_ms=slice_ms,
        grace_ms=grace_ms,
        dedup_horizon_ms=dedup_horizon_ms,
        all_tenants=ALL_TENANTS,
    )


def window_counts(state: PartitionState, tenant: str, spec: WindowSpec, end: str) -> WindowCounts:
    return state.sum_window(state.tenants[tenant], spec, at(end))


def summary(windows: list[ClosedWindow]) -> list[tuple[str, str, int, int, int, bool]]:
    """Reduce closed windows to (tenant, window, end, self-service, total, final)."""
    return [
        (
            window.tenant,
            window.spec.name,
            window.end_ms,
            window.counts.self_service,
            window.counts.total,
            window.final,
        )
        for window in windows
    ]


def all_window_sums(
    state: PartitionState, first: str, last: str
) -> dict[tuple[str, str, int], WindowCounts]:
    """Return every non-empty window sum of every tenant with an end between two times."""
    sums: dict[tuple[str, str, int], WindowCounts] = {}
    for tenant, tenant_state in state.tenants.items():
        for spec in state.windows:
            for end_ms in range(at(first), at(last) + 1, spec.step_ms):
                counts = state.sum_window(tenant_state, spec, end_ms)
                if not counts.is_empty:
                    sums[(tenant, spec.name, end_ms)] = counts
    return sums


# Counting


def test_count_self_service_and_assisted() -> None:
    state = new_state()

    outcome = state.count(
        [
            interaction("a1", "t1", "chatbot", "10:00:10", resolved=True),
            interaction("a2", "t1", "phone", "10:01:00", resolved=True),
            interaction("a3", "t1", "faq", "10:03:30"),
            interaction("a4", "t1", "internal", "10:04:00"),
        ]
    )
    counts = window_counts(state, "t1", FIVE_MINUTES, "10:05:00")

    assert outcome.counted == 4
    assert outcome.duplicates == {}
    assert outcome.late == []
    assert counts.self_service == 2
    assert counts.assisted == 1
    assert counts.total == 3
    assert counts.excluded == 1
    assert counts.rate == 2 / 3
    assert counts.self_service_resolved == 1
    assert counts.assisted_resolved == 1
    assert counts.channels == {"chatbot": 1, "phone": 1, "faq": 1, "internal": 1}


def test_count_window_bounds_half_open() -> None:
    state = new_state()

    state.count(
        [
            interaction("b1", "t1", "chatbot", "10:04:59.950"),
            interaction("b2", "t1", "phone", "10:05:00"),
        ]
    )

    assert window_counts(state, "t1", FIVE_MINUTES, "10:05:00").total == 1
    assert window_counts(state, "t1", FIVE_MINUTES, "10:05:00").self_service == 1
    assert window_counts(state, "t1", FIVE_MINUTES, "10:10:00").total == 1
    assert window_counts(state, "t1", FIVE_MINUTES, "10:10:00").assisted == 1


def test_count_overlapping_windows() -> None:
    state = new_state(windows=(TEN_BY_FIVE,))

    state.count([interaction("c1", "t1", "faq", "10:07:00")])

    assert window_counts(state, "t1", TEN_BY_FIVE, "10:10:00").total == 1
    assert window_counts(state, "t1", TEN_BY_FIVE, "10:15:00").total == 1
    assert window_counts(state, "t1", TEN_BY_FIVE, "10:05:00").total == 0
    assert window_counts(state, "t1", TEN_BY_FIVE, "10:20:00").total == 0


def test_count_duplicates_by_tenant_and_event_id() -> None:
    state = new_state()

    first = state.count(
        [
            interaction("d1", "t3", "chatbot", "11:00:05"),
            interaction("d2", "t3", "live_chat", "11:00:15"),
            interaction("d2", "t3", "live_chat", "11:00:15"),
        ]
    )
    second = state.count(
        [
            interaction("d2", "t3", "live_chat", "11:00:15"),
            interaction("d3", "t3", "knowledge_base", "11:00:45"),
            interaction("d1", "t4", "chatbot", "11:00:05"),
        ]
    )
    counts = window_counts(state, "t3", FIVE_MINUTES, "11:05:00")

    assert first.counted == 2
    assert first.duplicates == {"t3": 1}
    assert second.counted == 2
    assert second.duplicates == {"t3": 1}
    assert counts.self_service == 2
    assert counts.total == 3
    assert window_counts(state, "t4", FIVE_MINUTES, "11:05:00").total == 1


def test_count_duplicate_other_time() -> None:
    state = new_state()

    state.count([interaction("e1", "t1", "chatbot", "10:00:05")])
    outcome = state.count([interaction("e1", "t1", "chatbot", "10:07:00")])

    assert outcome.duplicates == {"t1": 1}
    assert window_counts(state, "t1", FIVE_MINUTES, "10:05:00").total == 1
    assert window_counts(state, "t1", FIVE_MINUTES, "10:10:00").total == 0


# Lateness


def test_count_late_arrival_sequence() -> None:
    state = new_state()
    watermark_ms = 0
    late = []

    arrivals = [
        interaction("l1", "t1", "faq", "09:00:30"),
        interaction("l2", "t1", "ticket", "09:01:00"),
        interaction("l3", "t1", "phone", "09:06:00"),
        interaction("l4", "t1", "chatbot", "09:04:50"),
        interaction("l5", "t1", "email", "09:08:00"),
        interaction("l6", "t1", "chatbot", "09:02:00"),
    ]
    for event in arrivals:
        outcome = state.count([event])
        late.extend(outcome.late)
        watermark_ms = max(watermark_ms, event.occurred_at_ms)
        state.advance_clock(watermark_ms)

    closed = state.close_windows()

    assert [entry.event.event_id for entry in late] == ["l6"]
    assert late[0].slice_start_ms == at("09:02:00")
    assert late[0].clock_ms == at("09:08:00")
    assert summary(closed) == [
        ("t1", "5m", at("09:05:00"), 2, 3, True),
        (ALL_TENANTS, "5m", at("09:05:00"), 2, 3, True),
    ]


def test_count_late_at_slice_end_plus_grace() -> None:
    slice_end_plus_grace = at("09:05:00") + GRACE_MS

    inside = new_state()
    inside.advance_clock(slice_end_plus_grace - 1)
    inside_outcome = inside.count([interaction("g1", "t1", "chatbot", "09:04:59.999")])

    boundary = new_state()
    boundary.advance_clock(slice_end_plus_grace)
    boundary_outcome = boundary.count([interaction("g1", "t1", "chatbot", "09:04:59.999")])

    assert inside_outcome.counted == 1
    assert inside_outcome.late == []
    assert boundary_outcome.counted == 0
    assert [entry.event.event_id for entry in boundary_outcome.late] == ["g1"]


def test_count_late_event_id_not_remembered() -> None:
    state = new_state()
    state.advance_clock(at("09:20:00"))

    first = state.count([interaction("h1", "t1", "chatbot", "09:02:00")])
    second = state.count([interaction("h1", "t1", "chatbot", "09:02:00")])

    assert len(first.late) == 1
    assert len(second.late) == 1
    assert second.duplicates == {}
    assert state.remembered_ids == 0


def test_late_event_read_again_is_duplicate() -> None:
    # Read again from the same input offset after a restart: it went to the
    # dead-letter topic, or was counted, the first time.
    state = new_state()
    state.advance_clock(at("09:20:00"))
    late = interaction("r1", "t1", "chatbot", "09:02:00")

    first = state.count([late])
    second = state.count([late])

    assert len(first.late) == 1
    assert second.late == []
    assert second.duplicates == {"t1": 1}


def test_reread_counted_event_is_duplicate() -> None:
    # A replay far faster than the commit interval: the id has been forgotten
    # by the time the event is read again, but its input offset is known.
    state = new_state()
    counted = interaction("c1", "t1", "faq", "09:02:00")
    state.count([counted])
    state.advance_clock(at("12:00:00"))
    state.close_windows()
    state.expire()

    again = state.count([counted])

    assert state.remembered_ids == 0
    assert again.late == []
    assert again.duplicates == {"t1": 1}


def test_input_offsets_survive_restore() -> None:
    state = new_state()
    counted = interaction("c2", "t1", "faq", "09:02:00")
    state.count([counted])
    restored = new_state()
    restored.apply_delta(state.take_delta())
    restored.advance_clock(at("12:00:00"))
    restored.close_windows()
    restored.expire()

    again = restored.count([counted])

    assert again.late == []
    assert again.duplicates == {"t1": 1}


def test_advance_clock_never_moves_back() -> None:
    state = new_state()

    assert state.advance_clock(at("09:05:00"))
    assert not state.advance_clock(at("09:04:00"))
    assert not state.advance_clock(at("09:05:00"))
    assert state.clock_ms == at("09:05:00")


# Publishing


def test_close_windows_emits_final_once() -> None:
    state = new_state()
    state.count(
        [
            interaction("k1", "t1", "chatbot", "08:00:10"),
            interaction("k2", "t1", "phone", "08:01:00"),
            interaction("k3", "t1", "faq", "08:03:30"),
        ]
    )

    state.advance_clock(at("08:06:59.999"))
    before_grace = state.close_windows()
    state.advance_clock(at("08:07:00"))
    first = state.close_windows()
    state.advance_clock(at("08:30:00"))
    second = state.close_windows()

    assert before_grace == []
    assert summary(first) == [
        ("t1", "5m", at("08:05:00"), 2, 3, True),
        (ALL_TENANTS, "5m", at("08:05:00"), 2, 3, True),
    ]
    assert second == []
    assert not state.has_pending_windows()


def test_close_windows_without_clock_emits_nothing() -> None:
    state = new_state()
    state.count([interaction("n1", "t1", "chatbot", "08:00:10")])

    assert state.close_windows() == []
    assert state.has_pending_windows()


def test_take_provisional_changed_windows_only() -> None:
    state = new_state(windows=(FIVE_MINUTES, TEN_BY_FIVE))
    state.count([interaction("p1", "t1", "chatbot", "10:01:00")])

    first = state.take_provisional()
    again = state.take_provisional()
    state.count([interaction("p2", "t1", "phone", "10:06:00")])
    after_new_event = state.take_provisional()

    # With no clock yet every window is open. For a tenant only the next to
    # close of each size is published, since the others overlap it. The
    # all-tenants partial has every window holding a changed span.
    assert summary(first) == [
        ("t1", "5m", at("10:05:00"), 1, 1, False),
        ("t1", "10m", at("10:05:00"), 1, 1, False),
        (ALL_TENANTS, "5m", at("10:05:00"), 1, 1, False),
        (ALL_TENANTS, "10m", at("10:05:00"), 1, 1, False),
        (ALL_TENANTS, "10m", at("10:10:00"), 1, 1, False),
    ]
    assert again == []
    assert summary(after_new_event) == [
        ("t1", "5m", at("10:10:00"), 0, 1, False),
        ("t1", "10m", at("10:10:00"), 1, 2, False),
        (ALL_TENANTS, "5m", at("10:10:00"), 0, 1, False),
        (ALL_TENANTS, "10m", at("10:10:00"), 1, 2, False),
        (ALL_TENANTS, "10m", at("10:15:00"), 0, 1, False),
    ]


def test_take_provisional_straddling_spans() -> None:
    # Events on both sides of a step boundary since the last provisional
    # records: the window of the newer ones changed too, so it is published.
    state = new_state(windows=(WindowSpec(name="5m", size_ms=5 * MINUTE_MS, step_ms=MINUTE_MS),))
    state.advance_clock(at("10:00:30"))
    state.count(
        [
            interaction("s1", "t1", "chatbot", "10:00:40"),
            interaction("s2", "t1", "phone", "10:01:10"),
        ]
    )

    provisional = [window for window in state.take_provisional() if window.tenant == "t1"]

    assert summary(provisional) == [
        ("t1", "5m", at("10:01:00"), 1, 1, False),
        ("t1", "5m", at("10:02:00"), 1, 2, False),
    ]


def test_take_provisional_skips_closed_windows() -> None:
    state = new_state()
    state.count([interaction("q1", "t1", "chatbot", "10:01:00")])
    state.advance_clock(at("10:07:00"))

    closed = state.close_windows()

    assert len(closed) == 2
    assert state.take_provisional() == []


def test_all_tenants_partial_sums_tenants() -> None:
    state = new_state()

    state.count(
        [
            interaction("r1", "t1", "chatbot", "10:00:10"),
            interaction("r2", "t1", "phone", "10:01:00"),
            interaction("r1", "t2", "faq", "10:02:00"),
            interaction("r3", "t2", "ticket", "10:03:00"),
            interaction("r4", "t2", "email", "10:04:00"),
        ]
    )
    state.count([interaction("r5", "t3", "community", "10:04:30")])
    combined = window_counts(state, ALL_TENANTS, FIVE_MINUTES, "10:05:00")

    assert combined.self_service == 3
    assert combined.assisted == 3
    assert combined.total == 6
    assert combined.channels == {
        "chatbot": 1,
        "phone": 1,
        "faq": 1,
        "ticket": 1,
        "email": 1,
        "community": 1,
    }


def test_random_stream_windows_sum_their_counted_events() -> None:
    """Every final and provisional window equals a recount of the events counted in it.

    Final windows are summed from the previous final window of their tenant
    and size, so a long run with disorder, gaps and lateness checks that
    shortcut against a plain recount.
    """
    windows = (
        WindowSpec(name="3m", size_ms=3 * MINUTE_MS, step_ms=MINUTE_MS),
        TEN_BY_FIVE,
        WindowSpec(name="30m", size_ms=30 * MINUTE_MS, step_ms=10 * MINUTE_MS),
    )
    state = new_state(windows=windows)
    rng = random.Random(20261205)
    channels = list(CHANNEL_CLASSES)
    start_ms = at("10:00:00")
    counted: list[Interaction] = []
    # Each window with the number of events counted when it was published.
    published: list[tuple[ClosedWindow, int]] = []
    late_events = 0
    for batch_number in range(240):
        now_ms = start_ms + batch_number * 20_000
        batch = []
        for event_number in range(rng.randrange(0, 12)):
            # Mostly on time, some up to 4 minutes old, so some arrive late.
            age_ms = rng.choice([0, 5_000, 40_000, 4 * MINUTE_MS]) + rng.randrange(5_000)
            occurred_ms = now_ms - age_ms
            event = interaction(
                f"r{batch_number}-{event_number}",
                rng.choice(["t1", "t2", "t3"]),
                rng.choice(channels),
                "10:00:00",
                resolved=rng.choice([True, False, None]),
            )
            batch.append(msgspec.structs.replace(event, occurred_at_ms=occurred_ms))
        late = {id(late.event) for late in state.count(batch).late}
        late_events += len(late)
        counted.extend(event for event in batch if id(event) not in late)
        state.advance_clock(now_ms - 30_000)
        published.extend((window, len(counted)) for window in state.close_windows())
        if batch_number % 3 == 0:
            published.extend((window, len(counted)) for window in state.take_provisional())
        state.expire()
    state.advance_clock(start_ms + 24 * 60 * MINUTE_MS)
    published.extend((window, len(counted)) for window in state.close_windows())

    for window, counted_before in published:
        expected = WindowCounts()
        for event in counted[:counted_before]:
            if window.tenant in (ALL_TENANTS, event.tenant) and (
                window.end_ms - window.spec.size_ms <= event.occurred_at_ms < window.end_ms
            ):
                key = (event.channel_class, event.channel)
                expected.add_slice({key: 1})
                if event.resolved:
                    expected.add_slice({(RESOLVED_BASE + event.channel_class, ""): 1})
        assert window.counts == expected, (window.tenant, window.spec.name, window.end_ms)
    finals = [(w.tenant, w.spec.name, w.end_ms) for w, _ in published if w.final]
    assert len(finals) == len(set(finals))
    expected_finals = {
        (tenant, spec.name, end)
        for event in counted
        for tenant in (event.tenant, ALL_TENANTS)
        for spec in windows
        for end in window_ends(spec, event.occurred_at_ms)
    }
    assert set(finals) == expected_finals
    assert sum(not window.final for window, _ in published) > 100
    assert late_events > 0


def test_channel_in_two_classes_takes_its_newest_class() -> None:
    # A channel counted as unclassified, then added to the channel table.
    three_minutes = WindowSpec(name="3m", size_ms=3 * MINUTE_MS, step_ms=MINUTE_MS)
    state = new_state(windows=(three_minutes,), grace_ms=0)
    classes = [ChannelClass.SELF_SERVICE, ChannelClass.UNCLASSIFIED, ChannelClass.SELF_SERVICE,
               ChannelClass.UNCLASSIFIED]
    for number, channel_class in enumerate(classes):
        event = interaction(f"k{number}", "t1", "faq", f"10:0{number}:00")
        state.count([msgspec.structs.replace(event, channel_class=int(channel_class))])
    state.advance_clock(at("10:04:00"))

    finals = {
        window.end_ms: window.counts.channel_classes
        for window in state.close_windows()
        if window.tenant == "t1"
    }

    # The window to 10:04 is summed from the one to 10:03, which is summed in full.
    assert finals[at("10:03:00")] == {"faq": int(ChannelClass.SELF_SERVICE)}
    assert finals[at("10:04:00")] == {"faq": int(ChannelClass.UNCLASSIFIED)}


# Expiry


def test_expire_drops_old_slices_and_ids() -> None:
    state = new_state(dedup_horizon_ms=60 * MINUTE_MS)
    state.count([interaction("x1", "t1", "chatbot", "10:00:10")])
    state.advance_clock(at("10:07:00"))
    state.close_windows()
    state.expire()

    kept_tenants = set(state.tenants)
    kept_ids = state.remembered_ids

    state.advance_clock(at("11:02:00"))
    state.close_windows()
    state.expire()

    assert kept_tenants == {"t1", ALL_TENANTS}
    assert kept_ids == 1
    assert state.tenants == {}
    assert state.remembered_ids == 0


def test_expire_keeps_ids_within_horizon() -> None:
    state = new_state(dedup_horizon_ms=60 * MINUTE_MS)
    state.count([interaction("y1", "t1", "chatbot", "10:00:10")])

    state.advance_clock(at("10:59:00"))
    state.close_windows()
    state.expire()

    assert state.remembered_ids == 1
    assert state.tenants == {}


def test_expire_keeps_slices_of_pending_windows() -> None:
    state = new_state()
    state.count([interaction("z1", "t1", "chatbot", "10:00:10")])
    state.advance_clock(at("10:06:00"))
    state.close_windows()

    state.expire()

    assert window_counts(state, "t1", FIVE_MINUTES, "10:05:00").total == 1
    assert state.has_pending_windows()


# Changelog


def run_batches(state: PartitionState, batches: list[tuple[list[Interaction], str]]) -> list[Delta]:
    """Process batches in the counting stage's order: count, clock, close, expire, delta."""
    deltas = []
    for events, clock in batches:
        state.count(events)
        state.advance_clock(at(clock))
        state.close_windows()
        state.take_provisional()
        state.expire()
        deltas.append(state.take_delta())
    return deltas


BATCHES: list[tuple[list[Interaction], str]] = [
    (
        [
            interaction("s1", "t1", "chatbot", "10:00:10", resolved=True),
            interaction("s2", "t1", "phone", "10:01:00"),
            interaction("s1", "t2", "faq", "10:02:00"),
        ],
        "10:02:00",
    ),
    (
        [
            interaction("s3", "t2", "ticket", "10:03:00"),
            interaction("s4", "t1", "community", "10:04:59.999"),
            interaction("s2", "t1", "phone", "10:01:00"),
        ],
        "10:05:00",
    ),
    ([interaction("s5", "t1", "email", "10:06:00")], "10:06:00"),
    ([interaction("s6", "t3", "knowledge_base", "10:08:00")], "10:08:00"),
    (
        [
            interaction("s7", "t1", "faq", "10:10:30"),
            interaction("s8", "t2", "live_chat", "10:11:00"),
        ],
        "10:11:00",
    ),
    ([interaction("s9", "t2", "chatbot", "10:12:00")], "10:12:00"),
]

# Events whose slices are still open at 10:12 plus grace, so a repeat is judged by id.
REPEATS = [
    interaction("s7", "t1", "faq", "10:10:30"),
    interaction("s8", "t2", "live_chat", "10:11:00"),
    interaction("s9", "t2", "chatbot", "10:12:00"),
]


def assert_same_state(original: PartitionState, rebuilt: PartitionState) -> None:
    assert rebuilt.clock_ms == original.clock_ms
    assert rebuilt.finalized_ms == original.finalized_ms
    assert all_window_sums(rebuilt, "09:55:00", "10:30:00") == all_window_sums(
        original, "09:55:00", "10:30:00"
    )
    assert rebuilt.remembered_ids == original.remembered_ids
    assert {tenant: state.pending for tenant, state in rebuilt.tenants.items()} == {
        tenant: state.pending for tenant, state in original.tenants.items()
    }


def test_apply_delta_rebuilds_state() -> None:
    windows = (FIVE_MINUTES, TEN_BY_FIVE)
    original = new_state(windows=windows)
    deltas = run_batches(original, BATCHES)

    rebuilt = new_state(windows=windows)
    for delta in deltas:
        rebuilt.apply_delta(delta)
    rebuilt.finish_restore()

    assert_same_state(original, rebuilt)
    assert rebuilt.count(REPEATS).duplicates == {"t1": 1, "t2": 2}
    assert rebuilt.count(REPEATS).counted == 0


def test_snapshot_rebuilds_state() -> None:
    windows = (FIVE_MINUTES, TEN_BY_FIVE)
    original = new_state(windows=windows)
    run_batches(original, BATCHES)

    snapshot = original.snapshot(max_entries=2)
    rebuilt = new_state(windows=windows)
    for delta in snapshot:
        rebuilt.apply_delta(delta)
    rebuilt.finish_restore()

    assert len(snapshot) > 1
    for delta in snapshot:
        assert len(delta.counts) + len(delta.ids) <= 2
        assert all(tenant != ALL_TENANTS for tenant, _ in delta.counts)
    assert_same_state(original, rebuilt)
    assert rebuilt.count(REPEATS).duplicates == {"t1": 1, "t2": 2}


def test_take_delta_only_changes_since_last() -> None:
    state = new_state()
    state.count([interaction("u1", "t1", "chatbot", "10:00:10")])
    state.advance_clock(at("10:01:00"))

    first = state.take_delta()
    second = state.take_delta()

    assert first.counts == {
        ("t1", at("10:00:00")): {(int(ChannelClass.SELF_SERVICE), "chatbot"): 1}
    }
    assert first.ids == {("t1", at("10:00:00")): ["u1"]}
    assert first.clock_ms == at("10:01:00")
    assert second.is_empty()
    assert second.clock_ms == at("10:01:00")


def test_finish_restore_pending_matches_original() -> None:
    windows = (
        WindowSpec("5m", 5 * MINUTE_MS, MINUTE_MS),
        WindowSpec("1h", 60 * MINUTE_MS, 5 * MINUTE_MS),
    )
    original = new_state(windows=windows)
    deltas = run_batches(
        original,
        [
            ([interaction("w1", "t1", "chatbot", "10:00:10")], "10:00:10"),
            ([interaction("w2", "t2", "phone", "10:04:00")], "10:06:00"),
            ([interaction("w3", "t1", "faq", "10:07:30")], "10:09:00"),
            ([interaction("w4", "t2", "email", "10:12:00")], "10:12:00"),
        ],
    )

    rebuilt = new_state(windows=windows)
    for delta in deltas:
        rebuilt.apply_delta(delta)
    rebuilt.finish_restore()

    assert set(rebuilt.tenants) == set(original.tenants)
    for tenant, state in original.tenants.items():
        assert rebuilt.tenants[tenant].pending == state.pending, tenant
    # Only the all-tenants partial is sent again, for every pending window.
    refreshed = rebuilt.take_provisional()
    assert {window.tenant for window in refreshed} == {ALL_TENANTS}
    assert {(windows.index(window.spec), window.end_ms) for window in refreshed} == (
        original.tenants[ALL_TENANTS].pending
    )


def test_finish_restore_no_repeated_finals() -> None:
    original = new_state()
    deltas = run_batches(
        original,
        [
            ([interaction("v1", "t1", "chatbot", "10:00:10")], "10:00:10"),
            ([], "10:07:30"),
            ([interaction("v2", "t1", "phone", "10:08:00")], "10:08:00"),
        ],
    )

    rebuilt = new_state()
    for delta in deltas:
        rebuilt.apply_delta(delta)
    rebuilt.finish_restore()
    after_restore = rebuilt.close_windows()
    provisional = rebuilt.take_provisional()

    rebuilt.advance_clock(at("10:12:00"))
    original.advance_clock(at("10:12:00"))

    assert after_restore == []
    assert summary(provisional) == [(ALL_TENANTS, "5m", at("10:10:00"), 0, 1, False)]
    assert summary(rebuilt.close_windows()) == summary(original.close_windows())
    assert summary(original.close_windows()) == []
