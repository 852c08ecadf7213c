"""Placement of tenants on the repartition topic, and the internal message format."""

import pytest
from aiokafka.partitioner import DefaultPartitioner

from stream.ingest.events import Interaction
from stream.worker.messages import Batch, Tick, counting_partition, decode_internal, encode


@pytest.mark.parametrize("partitions", [1, 4, 7])
def test_counting_partition_matches_keyed_placement(partitions: int) -> None:
    tenants = [f"tenant-{number}" for number in range(200)] + ["", "ünïcode", "a|b"]
    for tenant in tenants:
        expected = DefaultPartitioner()(tenant.encode(), list(range(partitions)), [])
        assert counting_partition(tenant, partitions) == expected, tenant


def test_counting_partition_spreads_tenants() -> None:
    used = {counting_partition(f"tenant-{number}", 4) for number in range(100)}
    assert used == {0, 1, 2, 3}


def test_batch_with_headers_round_trips() -> None:
    interactions = [
        Interaction(
            event_id=f"e{number}",
            occurred_at_ms=1_700_000_000_000 + number,
            tenant=f"tenant-{number % 3}",
            channel="faq",
            channel_class=1,
            resolved=None,
            segment=None,
            customer_id=None,
            source_topic="in",
            source_partition=0,
            source_offset=number,
            raw_key=None,
            raw_value=b"{}",
            raw_headers=[("trace-id", b"t%d" % number), ("empty", None)] if number % 2 else None,
        )
        for number in range(6)
    ]
    batch = Batch(interactions, Tick("worker-1", 1_700_000_000_000, quiet=False))

    decoded = decode_internal(encode(batch))

    assert decoded == batch
