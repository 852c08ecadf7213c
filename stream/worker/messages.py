"""Messages on the worker's internal topics, encoded with MessagePack.

The ingest stage sends one :class:`Batch` per counting partition and input
batch to the repartition topic; :func:`counting_partition` places each tenant.
Every worker also sends a :class:`Tick`
to every partition of that topic on a timer. Both carry the worker's input
watermark, from which each counting partition derives its event-time clock.
Counting partitions send :class:`Partial` sums of all their tenants to the
single-partition topic that adds up the all-tenants figure.
"""

import functools

import msgspec
from stream.ingest.events import Interaction
from stream.worker.output import key_partition


class Tick(msgspec.Struct, tag="t", array_like=True):
    """A worker's input watermark: how far in event time its ingest has read.

    ``watermark_ms`` is the oldest, over the worker's active input partitions,
    of the newest event time read from each; ``None`` while an active input
    partition has not delivered a record yet. ``quiet`` is true when none of
    the worker's input partitions has delivered a record for the idle timeout.
    ``sent_at_ms`` is the sender's wall clock when it built the tick, so a
    tick read again after a restart is known to be old.

    ``generation`` is the consumer group generation of the sender's
    assignment, ``inputs`` the number of input partitions assigned to it
    then, and ``input_total`` the number of partitions of the input topics.
    A counting partition moves its clock only on ticks of the newest
    generation, and only once their senders own every input partition
    between them.
    """

    sender: str
    watermark_ms: int | None
    quiet: bool
    sent_at_ms: int | None = None
    generation: int | None = None
    inputs: int | None = None
    input_total: int | None = None


class Batch(msgspec.Struct, tag="b", array_like=True):
    """Valid interactions of one counting partition from one ingest batch, with the sender's watermark."""

    events: list[Interaction]
    tick: Tick


class WindowSums(msgspec.Struct, array_like=True):
    """One window's sums in a partial."""

    window: str
    end_ms: int
    counts: list[list[int | str]]


class Partial(msgspec.Struct, tag="p", array_like=True):
    """A counting partition's sums over all its tenants, and how far it has closed windows.

    ``empty`` is true when the partition has never held data and reports the
    wall clock as its progress, so that the all-tenants figure does not wait
    for it.
    """

    partition: int
    finalized_ms: int | None
    windows: list[WindowSums]
    empty: bool = False


@functools.lru_cache(maxsize=65_536)
def counting_partition(tenant: str, partitions: int) -> int:
    """Return the partition of the repartition topic that counts ``tenant``.

    It is the partition Kafka's default partitioner picks for the tenant as a
    key (murmur2, as the Java client), so every worker agrees on it, and state
    written when the topic was keyed by tenant stays where it was.
    """
    return key_partition(tenant.encode(), partitions)


InternalMessage = Batch | Tick
_encoder = msgspec.msgpack.Encoder()
_internal_decoder = msgspec.msgpack.Decoder(InternalMessage)
_partial_decoder = msgspec.msgpack.Decoder(Partial)


def encode(message: Batch | Tick | Partial) -> bytes:
    """Serialise an internal message."""
    return _encoder.encode(message)


def decode_internal(payload: bytes) -> Batch | Tick:
    """Read a message of the repartition topic."""
    message: Batch | Tick = _internal_decoder.decode(payload)
    return message


def decode_partial(payload: bytes) -> Partial:
    """Read a message of the all-tenants topic."""
    partial: Partial = _partial_decoder.decode(payload)
    return partial
