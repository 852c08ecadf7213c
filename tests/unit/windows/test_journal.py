"""Tests of the changelog journal: delta encoding, record keys and expiry of records."""

import msgspec

from stream.windows.counts import RESOLVED_BASE
from stream.windows.journal import (
    JournalIndex,
    decode_delta,
    encode_delta,
    journal_key,
    parse_journal_key,
)
from stream.windows.state import Delta

MINUTE_MS = 60_000
SLICE_10_00 = 1_748_858_400_000  # 2025-06-02T10:00:00Z


def test_encode_decode_delta_round_trip() -> None:
    delta = Delta(
        counts={
            ("t1", SLICE_10_00): {(0, "chatbot"): 3, (1, "phone"): 2, (RESOLVED_BASE + 0, ""): 1},
            ("tenant with spaces", SLICE_10_00 + MINUTE_MS): {(3, "fax_machine"): 1},
            ("t2", -MINUTE_MS): {(2, "internal"): 7},
        },
        ids={
            ("t1", SLICE_10_00): ["a1", "a2", "a3"],
            ("t2", -MINUTE_MS): ["ünïcode-id", ""],
        },
        clock_ms=SLICE_10_00 + 5 * MINUTE_MS,
        finalized_ms=SLICE_10_00 + 3 * MINUTE_MS,
        source_offsets={("support-interactions", 0): 41, ("other-input", 3): 7},
    )

    decoded = decode_delta(encode_delta(delta))

    assert decoded == delta
    assert decoded.newest_slice_ms == SLICE_10_00 + MINUTE_MS


def test_decode_delta_without_source_offsets() -> None:
    # Journals written before input offsets were journaled.
    payload = msgspec.msgpack.encode({"c": SLICE_10_00, "f": None, "counts": {}, "ids": {}})

    decoded = decode_delta(payload)

    assert decoded.source_offsets == {}


def test_encode_decode_empty_delta() -> None:
    delta = Delta()

    decoded = decode_delta(encode_delta(delta))

    assert decoded == delta
    assert decoded.clock_ms is None
    assert decoded.finalized_ms is None
    assert decoded.is_empty()
    assert decoded.newest_slice_ms is None


def test_decode_delta_keys_are_tuples() -> None:
    delta = Delta(counts={("t1", SLICE_10_00): {(0, "faq"): 1}}, ids={("t1", SLICE_10_00): ["x"]})

    decoded = decode_delta(encode_delta(delta))

    assert list(decoded.counts) == [("t1", SLICE_10_00)]
    assert list(decoded.counts[("t1", SLICE_10_00)]) == [(0, "faq")]
    assert list(decoded.ids) == [("t1", SLICE_10_00)]


def test_decode_delta_of_list_layout() -> None:
    # Journals written before the maps were encoded as they are.
    decoded = decode_delta(
        msgspec.msgpack.encode(
            {
                "c": SLICE_10_00,
                "f": None,
                "s": [["t1", SLICE_10_00, [[0, "faq", 2], [1, "phone", 1]]]],
                "i": [["t1", SLICE_10_00, ["x", "y"]]],
            }
        )
    )

    assert decoded == Delta(
        counts={("t1", SLICE_10_00): {(0, "faq"): 2, (1, "phone"): 1}},
        ids={("t1", SLICE_10_00): ["x", "y"]},
        clock_ms=SLICE_10_00,
    )


def test_journal_key_format_and_parse() -> None:
    key = journal_key(3, 123)

    assert key == b"00003:000000000123"
    assert parse_journal_key(key) == (3, 123)


def test_journal_key_sorts_by_sequence() -> None:
    sequences = [0, 1, 9, 10, 99, 100, 1_000, 65_536, 999_999_999_999]

    keys = [journal_key(7, sequence) for sequence in sequences]

    assert sorted(keys) == keys
    assert [parse_journal_key(key) for key in keys] == [(7, sequence) for sequence in sequences]


def test_journal_key_sorts_by_partition() -> None:
    assert journal_key(1, 999_999) < journal_key(2, 0)
    assert journal_key(9, 5) < journal_key(10, 0)


def test_journal_index_add_allocates_sequences() -> None:
    index = JournalIndex(partition=2)

    first = index.add(SLICE_10_00)
    second = index.add(None)

    assert first == journal_key(2, 0)
    assert second == journal_key(2, 1)
    assert index.live == {first: SLICE_10_00, second: None}


def test_journal_index_expired_keeps_newest() -> None:
    index = JournalIndex(partition=0)
    old = index.add(SLICE_10_00)
    without_slices = index.add(None)
    recent = index.add(SLICE_10_00 + 30 * MINUTE_MS)
    newest = index.add(None)

    dead = index.expired(SLICE_10_00 + 10 * MINUTE_MS)

    assert sorted(dead) == [old, without_slices]
    assert set(index.live) == {recent, newest}


def test_expired_keeps_newest_any_limit() -> None:
    index = JournalIndex(partition=0)
    keys = [index.add(SLICE_10_00 + number * MINUTE_MS) for number in range(12)]

    dead = index.expired(SLICE_10_00 + 24 * 60 * MINUTE_MS)

    assert sorted(dead) == keys[:-1]
    assert list(index.live) == [keys[-1]]
    assert index.expired(SLICE_10_00 + 48 * 60 * MINUTE_MS) == []


def test_expired_newest_by_sequence() -> None:
    index = JournalIndex(partition=0)
    for number in range(11):
        index.add(SLICE_10_00 + number * MINUTE_MS)

    index.expired(SLICE_10_00 + 60 * MINUTE_MS)

    assert list(index.live) == [journal_key(0, 10)]


def test_journal_index_restored_continues_sequence() -> None:
    index = JournalIndex(partition=4)

    index.restored(journal_key(4, 41), SLICE_10_00)
    index.restored(journal_key(4, 7), None)
    key = index.add(None)

    assert key == journal_key(4, 42)
    assert set(index.live) == {journal_key(4, 41), journal_key(4, 7), key}


def test_journal_index_take_all() -> None:
    index = JournalIndex(partition=0)
    keys = [index.add(None), index.add(SLICE_10_00)]

    removed_keys = index.take_all()

    assert removed_keys == keys
    assert index.live == {}
    assert index.add(None) == journal_key(0, 2)
