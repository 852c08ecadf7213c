"""The changelog journal: each batch's :class:`Delta` as one table record.

A partition's state is the sum of its live journal records. Keys are
``b"PPPPP:SSSSSSSSSSSS"`` (partition and sequence number), so one record is
written per batch however many tenants and slices it touched, and a restore
replays the records in sequence order. Records whose slices have all expired
are deleted with tombstones; when too many are live, the state is rewritten as
a few snapshot records and the old ones are deleted.
"""

from dataclasses import dataclass, field

import msgspec

from stream.windows.state import Delta

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def journal_key(partition: int, sequence: int) -> bytes:
    """Return the table key of record ``sequence`` of ``partition``."""
    return b"%05d:%012d" % (partition, sequence)


def parse_journal_key(key: bytes) -> tuple[int, int]:
    """Return the partition and sequence number of a journal key."""
    partition, _, sequence = key.partition(b":")
    return int(partition), int(sequence)


def encode_delta(delta: Delta) -> bytes:
    """Serialise a delta with MessagePack.

    The count and id maps go in as they are: MessagePack allows arrays as
    map keys, so a ``(tenant, slice start)`` key needs no conversion.
    """
    return _encoder.encode(
        {
            "c": delta.clock_ms,
            "f": delta.finalized_ms,
            "counts": delta.counts,
            "ids": delta.ids,
            "o": delta.source_offsets,
        }
    )


def decode_delta(payload: bytes) -> Delta:
    """Read a delta written by :func:`encode_delta`, or in the earlier list layout."""
    document = _decoder.decode(payload)
    delta = Delta(clock_ms=document["c"], finalized_ms=document["f"])
    # Records written before input offsets were journaled have none.
    delta.source_offsets = document.get("o", {})
    if "counts" in document:
        # Array keys decode as tuples, and arrays elsewhere as lists.
        delta.counts = document["counts"]
        delta.ids = document["ids"]
        return delta
    # Journals written before the maps went in as they are: lists of entries.
    for tenant, start, entries in document["s"]:
        delta.counts[(tenant, start)] = {(cls, channel): number for cls, channel, number in entries}
    for tenant, start, ids in document["i"]:
        delta.ids[(tenant, start)] = list(ids)
    return delta


@dataclass(slots=True)
class JournalIndex:
    """The live records of one partition: their keys and newest slice start."""

    partition: int
    next_sequence: int = 0
    live: dict[bytes, int | None] = field(default_factory=dict)

    def add(self, newest_slice_ms: int | None) -> bytes:
        """Allocate the key of a new record and remember it as live."""
        key = journal_key(self.partition, self.next_sequence)
        self.next_sequence += 1
        self.live[key] = newest_slice_ms
        return key

    def restored(self, key: bytes, newest_slice_ms: int | None) -> None:
        """Remember a record found on restore."""
        _, sequence = parse_journal_key(key)
        self.next_sequence = max(self.next_sequence, sequence + 1)
        self.live[key] = newest_slice_ms

    def expired(self, expire_before_ms: int) -> list[bytes]:
        """Remove and return the keys of records that hold nothing newer than the limit.

        The newest record always stays, because it carries the partition's clock.
        """
        if len(self.live) <= 1:
            return []
        newest_key = max(self.live)
        dead = [
            key
            for key, newest in self.live.items()
            if key != newest_key and (newest is None or newest < expire_before_ms)
        ]
        for key in dead:
            del self.live[key]
        return dead

    def take_all(self) -> list[bytes]:
        """Remove and return every live key, before a snapshot replaces them."""
        keys = list(self.live)
        self.live.clear()
        return keys
