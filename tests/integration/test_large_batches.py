"""A busy tenant's batch is larger than a Kafka record may be, and nothing is lost."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    Deployment,
    Outgoing,
    WorkerProcess,
    consume_until,
    event,
    has_final,
    final_records,
    produce,
    read_all,
    send,
)

pytestmark = pytest.mark.integration

EVENTS = 12_000
PADDING = "x" * 300


def test_busy_tenant_batches_split_not_lost(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    deployment = Deployment.create(
        kafka_bootstrap,
        unique_name("large"),
        tmp_path,
        input_partitions=1,
        settings={"ADOPTION_WINDOWS": "1h/1h", "ADOPTION_BATCH_MAX_EVENTS": "5000"},
    )
    produce(
        kafka_bootstrap,
        deployment.input_topic,
        [
            event(f"big-{number}", "bulk", "faq" if number % 4 == 0 else "phone",
                  f"2025-06-02T09:{number % 60:02d}:00Z", segment=PADDING)
            for number in range(EVENTS)
        ],
    )
    worker = WorkerProcess(deployment).start()
    try:
        records = consume_until(
            kafka_bootstrap,
            [deployment.output_topic],
            has_final("bulk", "1h", "2025-06-02T10:00:00.000Z"),
            timeout=180,
        )
    finally:
        worker.stop()

    final = final_records(records)[("bulk", "1h", "2025-06-02T10:00:00.000Z")]
    assert final["total"] == EVENTS, worker.log_tail()
    assert final["self_service"] == EVENTS // 4
    assert "MessageSizeTooLarge" not in worker.log_path.read_text()


def test_long_event_ids_split_journal_records(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    # Ingest batches of thousands of events whose ids are near the length
    # limit change megabytes of counting state, more than one Kafka record holds.
    tenants = [f"tenant-{number:02d}" for number in range(50)]
    events = 20_000
    deployment = Deployment.create(
        kafka_bootstrap,
        unique_name("long-ids"),
        tmp_path,
        input_partitions=4,
        settings={
            "ADOPTION_WINDOWS": "1h/1h",
            "ADOPTION_BATCH_MAX_EVENTS": str(events),
            "ADOPTION_INTERNAL_PARTITIONS": "1",
        },
    )
    send(
        kafka_bootstrap,
        deployment.input_topic,
        [
            (
                number % 4,
                None,
                event(f"{number:06d}".ljust(128, "-"), tenants[number % len(tenants)],
                      "faq" if (number // len(tenants)) % 5 == 0 else "email",
                      f"2025-06-02T09:{number % 60:02d}:00Z"),
            )
            for number in range(events)
        ],
    )
    worker = WorkerProcess(deployment).start()
    try:
        records = consume_until(
            kafka_bootstrap,
            [deployment.output_topic],
            lambda records: all(
                (tenant, "1h", "2025-06-02T10:00:00.000Z") in final_records(records)
                for tenant in tenants
            ),
            timeout=180,
        )
    finally:
        worker.stop()

    finals = final_records(records)
    per_tenant = events // len(tenants)
    for tenant in tenants:
        final = finals[(tenant, "1h", "2025-06-02T10:00:00.000Z")]
        assert final["total"] == per_tenant, worker.log_tail()
        assert final["self_service"] == per_tenant // 5
    assert "MessageSizeTooLarge" not in worker.log_path.read_text()
    journal = read_all(kafka_bootstrap, f"{deployment.app_id}-journal-changelog")
    assert max(len(record.value or b"") for record in journal) < 1_000_000


HOUR_END = "2025-06-02T10:00:00.000Z"
HEADER_EVENTS = 400
LARGE_HEADER = ("trace-context", b"t" * 4_000)
KEYED_EVENTS = 3_000


def hour_events(name: str, count: int, key: Callable[[int], bytes | None]) -> list[Outgoing]:
    """Return ``count`` events of the tenant ``name`` in one hour, a quarter self-service."""
    return [
        (
            0,
            key(number),
            event(
                f"{name}-{number}",
                name,
                "faq" if number % 4 == 0 else "phone",
                f"2025-06-02T09:{number % 60:02d}:00Z",
            ),
        )
        for number in range(count)
    ]


def new_deployment(kafka_bootstrap: str, name: str, tmp_path: Path) -> Deployment:
    """Create a deployment of one input partition and one 1-hour window."""
    return Deployment.create(
        kafka_bootstrap, name, tmp_path, input_partitions=1, settings={"ADOPTION_WINDOWS": "1h/1h"}
    )


def test_large_headers_kept_below_limit(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    # Events carry their records' headers to the counting stage, so headers
    # count in the size of a repartition record. A rejected record whose
    # headers would make its dead letter larger than Kafka's limit loses them.
    deployment = new_deployment(kafka_bootstrap, unique_name("headers"), tmp_path)
    send(
        kafka_bootstrap,
        deployment.input_topic,
        hour_events("headers", HEADER_EVENTS, lambda number: None),
        headers=[LARGE_HEADER],
    )
    send(
        kafka_bootstrap,
        deployment.input_topic,
        [(0, b"bad", b"{")],
        headers=[("blob", b"b" * 1_000_000)],
    )
    worker = WorkerProcess(deployment).start()
    try:
        records = consume_until(
            kafka_bootstrap, [deployment.output_topic], has_final("headers", "1h", HOUR_END)
        )
        dead_letters = consume_until(
            kafka_bootstrap, [deployment.dead_letter_topic], lambda found: len(found) >= 1
        )
    finally:
        worker.stop()

    final = final_records(records)[("headers", "1h", HOUR_END)]
    assert final["total"] == HEADER_EVENTS, worker.log_tail()
    assert final["self_service"] == HEADER_EVENTS // 4
    [dead_letter] = dead_letters
    headers = dict(dead_letter.headers)
    assert dead_letter.value == b"{"
    # Key, value and headers count against the size limit on an event.
    assert headers["adoption.reason"] == b"too_large"
    assert headers["adoption.headers.dropped"] == b"1"
    assert "blob" not in headers


def test_large_keys_split_batches(kafka_bootstrap: str, unique_name: Any, tmp_path: Path) -> None:
    # Events carry their records' keys to the counting stage too: 3,000 events
    # with 1,600-byte keys once made a repartition record over Kafka's limit.
    deployment = new_deployment(kafka_bootstrap, unique_name("keys"), tmp_path)
    send(
        kafka_bootstrap,
        deployment.input_topic,
        hour_events("keys", KEYED_EVENTS, lambda number: f"{number:04d}".encode() * 400),
    )
    worker = WorkerProcess(deployment).start()
    try:
        records = consume_until(
            kafka_bootstrap, [deployment.output_topic], has_final("keys", "1h", HOUR_END)
        )
    finally:
        worker.stop()

    final = final_records(records)[("keys", "1h", HOUR_END)]
    assert final["total"] == KEYED_EVENTS, worker.log_tail()
    assert final["self_service"] == KEYED_EVENTS // 4
