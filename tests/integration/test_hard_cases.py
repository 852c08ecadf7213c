"""Hard cases of event-time counting, run against the real broker and worker processes.

Every test creates its own deployment (fresh topics and consumer group), so one
test's clock never closes another test's windows. Event times are on
2025-06-02, in the past: once a worker's input has been quiet for the idle
timeout, the worker moves its clock to the wall clock and closes every window.
So each scenario produces its events in one go, or sets a long idle timeout
and closes windows by producing later "pacer" events to every input partition.

Restarts, kills and rebalances are in ``test_recovery.py``. Both use the
helpers in ``harness.py`` and the fixtures in ``conftest.py``.
"""

import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from tests.integration.harness import (
    ASSISTED_CHANNELS,
    SELF_SERVICE_CHANNELS,
    Deployment,
    Outgoing,
    Sample,
    Sent,
    WorkerProcess,
    at,
    consume_until,
    counter_value,
    counting_partition,
    counts_of,
    decode_records,
    epoch_ms,
    event,
    finals_of,
    has_final,
    has_finals,
    headers_of,
    pacers,
    rate_values,
    rfc3339,
    read_all,
    scrape,
    send,
    stamp,
    values_of,
    wait_for_clock,
)

pytestmark = pytest.mark.integration

# A quiet stream still closes its last window


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_quiet_stream_closes_last_window(
    guarantee: str,
    new_deployment: Callable[..., Deployment],
    launch: Callable[..., WorkerProcess],
) -> None:
    idle_timeout_ms = 6_000
    tick_interval_ms = 300
    deployment = new_deployment(
        "quiet",
        ADOPTION_WINDOWS="5m/5m",
        ADOPTION_IDLE_TIMEOUT_MS=f"{idle_timeout_ms}ms",
        ADOPTION_TICK_INTERVAL_MS=f"{tick_interval_ms}ms",
        ADOPTION_PROCESSING_GUARANTEE=guarantee,
    )
    launch(deployment)

    # Three partitions get one event each; the fourth never gets any.
    send(
        deployment.bootstrap_servers,
        deployment.input_topic,
        [
            (0, b"k1", event("k1", "t1", "chatbot", at("08:00:10"))),
            (1, b"k2", event("k2", "t1", "phone", at("08:01:00"))),
            (2, b"k3", event("k3", "t1", "faq", at("08:03:30"))),
        ],
    )
    last_produced_ms = time.time() * 1000

    end = stamp("08:05:00")
    records = consume_until(
        deployment.bootstrap_servers,
        [deployment.output_topic],
        has_finals(("t1", "5m", end), ("*", "5m", end)),
        timeout=idle_timeout_ms / 1000 + 90,
    )

    finals = finals_of(records, "t1", "5m", end)
    assert len(finals) == 1, f"expected one final record, got {finals}"
    final = finals[0]
    assert final["window_start"] == stamp("08:00:00")
    assert counts_of(final) == (2, 3)
    assert final["rate"] == pytest.approx(2 / 3)

    all_tenants = finals_of(records, "*", "5m", end)
    assert [counts_of(record) for record in all_tenants] == [(2, 3)]

    # Only idleness can close the window, because the newest event (08:03:30)
    # is short of 08:07 (end plus grace) and nothing was produced after it.
    published_ms = next(
        record.timestamp
        for record in records
        if json.loads(record.value) == final
    )
    delay_ms = published_ms - last_produced_ms
    assert delay_ms >= idle_timeout_ms - 1_000, f"window closed {delay_ms} ms after the last event"
    assert delay_ms <= idle_timeout_ms + tick_interval_ms + 20_000, (
        f"final record came {delay_ms} ms after the last event"
    )


def test_history_after_idle_start_counts_all_tenants(
    new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    # A fresh worker idles past its idle timeout, so its counting partitions,
    # which hold no data, report the wall clock to the all-tenants figure.
    # History replayed after that must still reach the all-tenants windows.
    idle_timeout_ms = 3_000
    deployment = new_deployment(
        "idle-first",
        ADOPTION_WINDOWS="5m/5m",
        ADOPTION_IDLE_TIMEOUT_MS=f"{idle_timeout_ms}ms",
        ADOPTION_TICK_INTERVAL_MS="300ms",
    )
    worker = launch(deployment)
    time.sleep(3 * idle_timeout_ms / 1000)
    assert worker.is_running(), worker.log_tail()

    send(
        deployment.bootstrap_servers,
        deployment.input_topic,
        [
            (0, b"h1", event("h1", "t1", "chatbot", at("08:00:10"))),
            (1, b"h2", event("h2", "t2", "phone", at("08:01:00"))),
            (2, b"h3", event("h3", "t3", "faq", at("08:03:30"))),
        ],
    )

    end = stamp("08:05:00")
    records = consume_until(
        deployment.bootstrap_servers,
        [deployment.output_topic],
        has_finals(("t1", "5m", end), ("*", "5m", end)),
        timeout=idle_timeout_ms / 1000 + 60,
    )
    assert [counts_of(record) for record in finals_of(records, "*", "5m", end)] == [(2, 3)]


def test_fast_replay_publishes_each_window_once(
    new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    deployment = new_deployment("replay", ADOPTION_WINDOWS="5m/5m")
    launch(deployment)

    # Two hours of a past day, in time order within each input partition, are
    # read as fast as the worker can. No window may close before its data is in.
    generator = random.Random(20250602)
    start_ms = epoch_ms("06:00:00")
    span_ms = 2 * 3_600_000
    window_ms = 300_000
    by_partition: list[list[tuple[int, str, str, str]]] = [[] for _ in range(4)]
    tally: Counter[tuple[str, int, bool]] = Counter()
    for number in range(2_400):
        tenant = generator.choice(["r1", "r2"])
        self_service = generator.random() < 0.35
        channels = SELF_SERVICE_CHANNELS if self_service else ASSISTED_CHANNELS
        occurred_at_ms = start_ms + generator.randrange(span_ms)
        end_ms = occurred_at_ms - occurred_at_ms % window_ms + window_ms
        for key_tenant in (tenant, "*"):
            tally[(key_tenant, end_ms, self_service)] += 1
        by_partition[number % 4].append(
            (occurred_at_ms, f"r-{number}", tenant, generator.choice(channels))
        )
    for events in by_partition:
        events.sort()

    outgoing: list[Outgoing] = []
    for rank in range(max(len(events) for events in by_partition)):
        for partition, events in enumerate(by_partition):
            if rank < len(events):
                occurred_at_ms, event_id, tenant, channel = events[rank]
                outgoing.append(
                    (partition, event_id.encode(), event(event_id, tenant, channel, occurred_at_ms))
                )
    send(deployment.bootstrap_servers, deployment.input_topic, outgoing)

    expected = {
        (tenant, rfc3339(end_ms)): (
            tally[(tenant, end_ms, True)],
            tally[(tenant, end_ms, True)] + tally[(tenant, end_ms, False)],
        )
        for tenant, end_ms, _ in tally
    }
    records = consume_until(
        deployment.bootstrap_servers,
        [deployment.output_topic],
        has_finals(*[(tenant, "5m", end) for tenant, end in expected]),
        timeout=180,
    )

    final_counts: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for record in decode_records(records):
        if record["final"]:
            key = (record["tenant"], record["window_end"])
            final_counts.setdefault(key, []).append(counts_of(record))
    repeated = {key: found for key, found in final_counts.items() if len(found) > 1}
    assert not repeated, f"windows with more than one final record: {repeated}"
    wrong = {
        key: (count, final_counts.get(key))
        for key, count in expected.items()
        if final_counts.get(key) != [count]
    }
    assert not wrong, f"{len(wrong)} windows differ (expected, got): {sorted(wrong.items())[:5]}"
    assert len(expected) == 3 * 24

    dead_letters = read_all(deployment.bootstrap_servers, deployment.dead_letter_topic)
    assert [headers_of(record) for record in dead_letters] == []


def test_backlog_provisional_at_catch_up_interval(
    new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    deployment = new_deployment(
        "catchup",
        input_partitions=1,
        ADOPTION_WINDOWS="1h/1h",
        ADOPTION_PUBLISH_INTERVAL_MS="100ms",
        ADOPTION_CATCH_UP_PUBLISH_INTERVAL_MS="30s",
    )
    launch(deployment)
    # The live tenant counts on another partition than the history tenant.
    history = "h1"
    candidates = [f"l{number}" for number in range(1, 100)]
    live = next(
        tenant for tenant in candidates if counting_partition(tenant) != counting_partition(history)
    )

    def burst(tenant: str, number: int, occurred_at_ms: int) -> None:
        send(
            deployment.bootstrap_servers,
            deployment.input_topic,
            [
                (0, None, event(f"{tenant}-{number}-{n}", tenant, "faq", occurred_at_ms + n))
                for n in range(10)
            ],
        )
        time.sleep(0.7)

    # Six bursts of history, each read after the live interval has passed.
    # All fall in one window, far older than grace.
    for number in range(6):
        burst(history, number, epoch_ms(f"08:{number:02d}:00"))
    for number in range(3):
        burst(live, number, int(time.time() * 1000))

    def live_provisional(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
        return [
            record
            for record in decode_records(records)
            if record["tenant"] == live and not record["final"]
        ]

    def done(records: list[ConsumerRecord]) -> bool:
        live_totals = [counts_of(record)[1] for record in live_provisional(records)]
        return 30 in live_totals and has_final(history, "1h", stamp("09:00:00"))(records)

    records = consume_until(deployment.bootstrap_servers, [deployment.output_topic], done)

    history_records = [record for record in decode_records(records) if record["tenant"] == history]
    provisional = [record for record in history_records if not record["final"]]
    # The first batch publishes provisionally. The catch-up interval ends
    # 30 s later, after the window's final record.
    assert len(provisional) <= 1, [counts_of(record) for record in provisional]
    assert [counts_of(record) for record in history_records if record["final"]] == [(60, 60)]
    assert len(live_provisional(records)) >= 2, [
        counts_of(record) for record in live_provisional(records)
    ]


# One instant in many spellings, and the host's time zone changes nothing


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
def test_time_spellings_agree_in_any_zone(
    zone: str, new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    assert epoch_ms("14:07:00") == 1_748_873_220_000
    deployment = new_deployment("zone", ADOPTION_WINDOWS="5m/5m")
    launch(deployment, TZ=zone)

    sent = send(
        deployment.bootstrap_servers,
        deployment.input_topic,
        [
            (0, b"m1", event("m1", "t1", "chatbot", "2025-06-02T14:07:00Z")),
            (1, b"m2", event("m2", "t1", "phone", "2025-06-02T16:07:00+02:00")),
            (2, b"m3", event("m3", "t1", "community", 1_748_873_220_000)),
            (3, b"m4", event("m4", "t1", "email", "2025-06-02T14:07:00")),
            (0, b"m5", event("m5", "t1", "faq", 1_748_873_220)),
        ],
    )

    end = stamp("14:10:00")
    records = consume_until(
        deployment.bootstrap_servers, [deployment.output_topic], has_finals(("t1", "5m", end))
    )
    finals = finals_of(records, "t1", "5m", end)
    assert [counts_of(record) for record in finals] == [(2, 3)]
    assert finals[0]["window_start"] == stamp("14:05:00")
    assert finals[0]["channels"] == {
        "chatbot": {"count": 1, "class": "self_service"},
        "community": {"count": 1, "class": "self_service"},
        "phone": {"count": 1, "class": "assisted"},
    }
    windows = {record["window_start"] for record in decode_records(records)}
    assert windows <= {stamp("14:05:00")}, f"events counted in other windows: {windows}"

    dead_letters = consume_until(
        deployment.bootstrap_servers,
        [deployment.dead_letter_topic],
        lambda found: len(found) >= 2,
    )
    by_value = {record.value: headers_of(record) for record in dead_letters}
    assert len(dead_letters) == 2
    without_offset = by_value[sent[3].value]
    assert without_offset["adoption.reason"] == "time_without_offset"
    assert "offset" in without_offset["adoption.detail"]
    assert by_value[sent[4].value]["adoption.reason"] == "invalid_time"


# Late within grace counts, and late beyond grace goes to the dead-letter topic


def test_late_event_goes_to_dead_letter(
    new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    # With one input partition, the worker reads the events in the order below.
    # The idle timeout is long, so only the watermark closes windows.
    deployment = new_deployment(
        "late",
        input_partitions=1,
        ADOPTION_WINDOWS="5m/5m",
        ADOPTION_GRACE_MS="2m",
        ADOPTION_IDLE_TIMEOUT_MS="120s",
    )
    worker = launch(deployment)

    def produce(*events: tuple[str, str, str]) -> list[Sent]:
        return send(
            deployment.bootstrap_servers,
            deployment.input_topic,
            [
                (0, event_id.encode(), event(event_id, "t1", channel, at(clock)))
                for event_id, channel, clock in events
            ],
        )

    produce(("l1", "faq", "09:00:30"), ("l2", "ticket", "09:01:00"), ("l3", "phone", "09:06:00"))
    wait_for_clock(worker, "09:06:00")
    produce(("l4", "chatbot", "09:04:50"), ("l5", "email", "09:08:00"))

    end = stamp("09:05:00")
    records = consume_until(
        deployment.bootstrap_servers, [deployment.output_topic], has_finals(("t1", "5m", end))
    )
    [late] = produce(("l6", "chatbot", "09:02:00"))
    consume_until(
        deployment.bootstrap_servers, [deployment.dead_letter_topic], lambda found: len(found) >= 1
    )
    dead_letters = read_all(deployment.bootstrap_servers, deployment.dead_letter_topic)
    records = read_all(deployment.bootstrap_servers, deployment.output_topic)

    finals = finals_of(records, "t1", "5m", end)
    assert [counts_of(record) for record in finals] == [(2, 3)]

    assert len(dead_letters) == 1, [record.value for record in dead_letters]
    [dead_letter] = dead_letters
    assert dead_letter.value == late.value
    assert dead_letter.key == late.key
    headers = headers_of(dead_letter)
    assert headers["adoption.reason"] == "late"
    assert headers["adoption.source.topic"] == deployment.input_topic
    assert headers["adoption.source.partition"] == "0"
    assert headers["adoption.source.offset"] == str(late.offset)
    assert stamp("09:00:00") in headers["adoption.window"]

    samples = scrape(worker)
    assert counter_value(samples, "adoption_events_late_total", tenant="t1") == 1
    assert counter_value(samples, "adoption_events_rejected_total", reason="late") == 1


# Bad records never stop the stream, and a window without data has no rate


@dataclass(frozen=True)
class BadRecord:
    """A record the worker must reject, and the reason code it must give."""

    name: str
    key: bytes | None
    value: bytes
    reason: str


BAD_RECORDS = [
    BadRecord(
        "truncated body",
        b"b1",
        b'{"event_id": "b1", "tenant": "t4", "channel": "chatbot", "occurred_at": "2025-06-0',
        "invalid_json",
    ),
    BadRecord(
        "missing event_id",
        None,
        json.dumps({"tenant": "t4", "channel": "chatbot", "occurred_at": at("12:00:20")}).encode(),
        "missing_field",
    ),
    BadRecord(
        "unknown channel", b"b3", event("b3", "t8-rejected", "fax_machine", at("12:00:25")),
        "unknown_channel",
    ),
    BadRecord(
        "time without offset", b"b4", event("b4", "t4", "chatbot", "2025-06-02T12:00:30"),
        "time_without_offset",
    ),
    BadRecord("time beyond grace", b"b5", event("b5", "t4", "chatbot", at("11:50:00")), "late"),
    BadRecord("empty value", b"b6", b"", "empty_value"),
    BadRecord(
        "JSON array", b"b7", b"[" + event("b7", "t4", "chatbot", at("12:00:35")) + b"]",
        "not_an_object",
    ),
    BadRecord(
        "tenant as number",
        b"b8",
        json.dumps(
            {"event_id": "b8", "tenant": 17, "channel": "chatbot", "occurred_at": at("12:00:40")}
        ).encode(),
        "invalid_type",
    ),
    BadRecord(
        "occurred_at in words", b"b9", event("b9", "t4", "chatbot", "last tuesday"), "invalid_time"
    ),
    BadRecord(
        "epoch seconds", b"b10", event("b10", "t4", "chatbot", epoch_ms("12:00:45") // 1000),
        "invalid_time",
    ),
    # Valid, but too large to travel on with its parsed fields in one record.
    BadRecord(
        "event of 700 KB", b"b11",
        event("b11", "t4", "chatbot", at("12:00:50"), segment="x" * 700_000),
        "too_large",
    ),
    BadRecord(
        "tenant with a line break", b"b12",
        event("b12", "t4\nforged log line", "chatbot", at("12:00:55")),
        "invalid_id",
    ),
]


# Every bad record carries these: a header of the producer's own, and one
# that an earlier rejection left on a record sent again from the dead-letter topic.
BAD_RECORD_HEADERS = [("trace-id", b"4bf92f3577b34da6"), ("adoption.reason", b"invalid_json")]


@dataclass
class BadRecordsRun:
    """What one worker did with good events, bad records and an excluded channel."""

    deployment: Deployment
    bad: list[tuple[BadRecord, Sent]]
    produced: int
    outputs: list[ConsumerRecord]
    dead_letters: list[ConsumerRecord]
    scraped: list[Sample] | str
    health_status: int | None
    log_tail: str

    @property
    def samples(self) -> list[Sample]:
        """Return the /metrics samples taken at the end, failing when the scrape failed."""
        assert not isinstance(self.scraped, str), f"/metrics failed: {self.scraped}"
        return self.scraped


@pytest.fixture(scope="module")
def bad_records_run(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BadRecordsRun]:
    """Run one scenario with a long idle timeout, closing its windows with pacer events.

    The scenario reads no /metrics before its end, so the dead-letter checks
    do not depend on the metrics endpoint.
    """
    deployment = Deployment.create(
        kafka_bootstrap,
        f"bad-{uuid.uuid4().hex[:12]}",
        tmp_path_factory.mktemp("bad-records"),
        settings={"ADOPTION_WINDOWS": "5m/5m", "ADOPTION_IDLE_TIMEOUT_MS": "120s"},
    )
    worker = WorkerProcess(deployment).start()
    try:
        # The late record below must arrive after the clock has passed its
        # window, which the final record of g0's window shows.
        first: list[Outgoing] = [
            (0, b"g0", event("g0", "t4", "faq", at("11:51:00"))),
            (0, b"g1", event("g1", "t4", "chatbot", at("12:00:05"))),
            *pacers("12:00:05", "p1"),
        ]
        send(kafka_bootstrap, deployment.input_topic, first)
        consume_until(
            kafka_bootstrap, [deployment.output_topic], has_finals(("t4", "5m", stamp("11:55:00")))
        )

        rest: list[Outgoing] = [
            (number % 4, bad.key, bad.value) for number, bad in enumerate(BAD_RECORDS)
        ]
        rest.append((1, b"g2", event("g2", "t4", "phone", at("12:00:50"))))
        rest.append((2, b"x1", event("x1", "t8-excluded", "integrated_agency", at("12:02:00"))))
        rest.extend(pacers("12:08:00", "p2"))
        sent = send(kafka_bootstrap, deployment.input_topic, rest, headers=BAD_RECORD_HEADERS)

        end = stamp("12:05:00")
        outputs = consume_until(
            kafka_bootstrap,
            [deployment.output_topic],
            has_finals(("t4", "5m", end), ("t8-excluded", "5m", end)),
        )
        consume_until(
            kafka_bootstrap,
            [deployment.dead_letter_topic],
            lambda found: len(found) >= len(BAD_RECORDS),
            timeout=60,
        )
        scraped: list[Sample] | str
        try:
            scraped = scrape(worker)
        except OSError as exc:  # urllib's HTTPError and URLError are OSErrors
            scraped = repr(exc)
        yield BadRecordsRun(
            deployment=deployment,
            bad=list(zip(BAD_RECORDS, sent, strict=False)),
            produced=len(first) + len(rest),
            outputs=outputs,
            dead_letters=read_all(kafka_bootstrap, deployment.dead_letter_topic),
            scraped=scraped,
            health_status=worker.http_status("/healthz"),
            log_tail=worker.log_tail(),
        )
    finally:
        worker.stop()


@pytest.mark.parametrize("bad", BAD_RECORDS, ids=[bad.name for bad in BAD_RECORDS])
def test_bad_record_kept_in_dead_letter(bad: BadRecord, bad_records_run: BadRecordsRun) -> None:
    run = bad_records_run
    [sent] = [sent for candidate, sent in run.bad if candidate is bad]
    matches = [
        record
        for record in run.dead_letters
        if headers_of(record).get("adoption.source.partition") == str(sent.partition)
        and headers_of(record).get("adoption.source.offset") == str(sent.offset)
    ]
    assert len(matches) == 1, f"{len(matches)} dead letters for {sent}:\n{run.log_tail}"
    [dead_letter] = matches
    headers = headers_of(dead_letter)
    assert dead_letter.value == bad.value
    assert dead_letter.key == bad.key
    # The record's own headers come first; one left by an earlier rejection is dropped.
    assert dead_letter.headers[0] == BAD_RECORD_HEADERS[0]
    assert [name for name, _ in dead_letter.headers].count("adoption.reason") == 1
    assert headers["adoption.reason"] == bad.reason
    assert headers["adoption.source.topic"] == run.deployment.input_topic
    assert headers["adoption.detail"]
    if bad.reason == "late":
        assert stamp("11:50:00") in headers["adoption.window"]


def test_bad_records_counted_by_reason(bad_records_run: BadRecordsRun) -> None:
    run = bad_records_run
    assert len(run.dead_letters) == len(BAD_RECORDS)
    expected = Counter(bad.reason for bad in BAD_RECORDS)
    counted = {
        reason: counter_value(run.samples, "adoption_events_rejected_total", reason=reason)
        for reason in expected
    }
    assert counted == dict(expected)
    assert counter_value(run.samples, "adoption_events_late_total", tenant="t4") == 1


def test_good_records_around_bad_ones_counted(bad_records_run: BadRecordsRun) -> None:
    run = bad_records_run
    finals = finals_of(run.outputs, "t4", "5m", stamp("12:05:00"))
    assert [counts_of(record) for record in finals] == [(1, 2)]
    assert counter_value(
        run.samples, "adoption_events_consumed_total", topic=run.deployment.input_topic
    ) == run.produced
    assert run.health_status == 200


def test_rejected_only_tenant_has_no_rate(bad_records_run: BadRecordsRun) -> None:
    run = bad_records_run
    rates = [record["rate"] for record in decode_records(run.outputs)
             if record["tenant"] == "t8-rejected"]
    assert all(rate is None for rate in rates), rates

    # The scrape happened while the clock was at 12:08, so the newest ended
    # window is [12:00, 12:05). There t4 has a rate and the rejected tenant none.
    assert rate_values(run.samples, "t4") == [0.5]
    assert rate_values(run.samples, "t8-rejected") == []
    assert values_of(run.samples, "support_interactions", tenant="t8-rejected") == []


def test_excluded_only_tenant_has_null_rate(bad_records_run: BadRecordsRun) -> None:
    run = bad_records_run
    finals = finals_of(run.outputs, "t8-excluded", "5m", stamp("12:05:00"))
    assert len(finals) == 1
    [final] = finals
    assert final["total"] == 0
    assert final["excluded"] == 1
    assert final["rate"] is None
    assert final["percent"] is None

    assert rate_values(run.samples, "t4") == [0.5]
    assert rate_values(run.samples, "t8-excluded") == []
    ratios = values_of(run.samples, "self_service_adoption_ratio")
    assert all(math.isfinite(value) and 0 <= value <= 1 for value in ratios), ratios
