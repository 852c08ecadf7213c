"""Hard cases of restarts, kills and rebalances, against the real broker and worker processes.

A restart starts a new worker process on the same deployment, which rebuilds
its counting state from the journal changelog, as after a crash or an upgrade.
"""

import asyncio
import os
import random
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from stream.windows.journal import decode_delta
from stream.worker.messages import Batch, Tick, decode_internal
from tests.integration.harness import (
    ASSISTED_CHANNELS,
    COUNTING_PARTITIONS,
    SELF_SERVICE_CHANNELS,
    Deployment,
    Outgoing,
    Sample,
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
    has_finals,
    headers_of,
    pacers,
    rate_values,
    read_all,
    scrape,
    send,
    stamp,
    values_of,
    wait_for_clock,
    wait_until,
)


pytestmark = pytest.mark.integration


# A hard kill loses nothing and doubles nothing


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_hard_kill_loses_and_doubles_nothing(
    guarantee: str,
    new_deployment: Callable[..., Deployment],
    launch: Callable[..., WorkerProcess],
) -> None:
    # The idle timeout must outlast the moment between the first half being
    # counted and the kill, or idleness would close the hour before the rest.
    deployment = new_deployment(
        "kill",
        ADOPTION_WINDOWS="1h/1h",
        ADOPTION_IDLE_TIMEOUT_MS="10s",
        ADOPTION_PROCESSING_GUARANTEE=guarantee,
    )

    # 10,000 events of one hour in random order, 4,000 of them self-service.
    generator = random.Random(10_000)
    hour_start_ms = epoch_ms("10:00:00")
    events: list[Outgoing] = []
    for number in range(10_000):
        channels = SELF_SERVICE_CHANNELS if number < 4_000 else ASSISTED_CHANNELS
        event_id = f"c4-{number:05d}"
        occurred_at_ms = hour_start_ms + generator.randrange(3_600_000)
        value = event(event_id, "t2", generator.choice(channels), occurred_at_ms)
        events.append((number % 4, event_id.encode(), value))
    generator.shuffle(events)

    # Both processes share a worker id, so the second fences the first's
    # transactional producers and aborts what they left open.
    first = launch(deployment, ADOPTION_WORKER_ID="kill-worker")
    send(deployment.bootstrap_servers, deployment.input_topic, events[:5_000])
    consume_until(
        deployment.bootstrap_servers,
        [deployment.output_topic],
        lambda records: any(record["tenant"] == "t2" for record in decode_records(records)),
    )
    first.kill()

    launch(deployment, ADOPTION_WORKER_ID="kill-worker")
    send(deployment.bootstrap_servers, deployment.input_topic, events[5_000:])

    end = stamp("11:00:00")
    records = consume_until(
        deployment.bootstrap_servers,
        [deployment.output_topic],
        has_finals(("t2", "1h", end), ("*", "1h", end)),
        timeout=180,
    )
    finals = finals_of(records, "t2", "1h", end)
    assert finals, "no final record for t2"
    assert {counts_of(record) for record in finals} == {(4_000, 10_000)}
    assert {record["rate"] for record in finals} == {0.4}
    all_tenants = finals_of(records, "*", "1h", end)
    assert {counts_of(record) for record in all_tenants} == {(4_000, 10_000)}

    if guarantee == "exactly_once":
        # De-duplication alone may repeat a final record after a crash. With
        # transactions a read_committed consumer reads each one once.
        output = read_all(deployment.bootstrap_servers, deployment.output_topic)
        assert len(finals_of(output, "t2", "1h", end)) == 1
        assert len(finals_of(output, "*", "1h", end)) == 1


def test_reread_closed_events_are_duplicates(
    new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    # Input offsets are committed only once a minute, so the restarted worker
    # reads every event again. By then the events' window is final and their
    # ids are forgotten: the pacers moved the clock two hours on.
    deployment = new_deployment(
        "reread",
        ADOPTION_WINDOWS="5m/5m",
        ADOPTION_COMMIT_INTERVAL_MS="60s",
        ADOPTION_WORKER_ID="reread-worker",
    )
    first = launch(deployment)
    events: list[Outgoing] = [
        (number % 4, f"e{number}".encode(), event(f"e{number}", "t5", "faq", at("08:01:00")))
        for number in range(20)
    ]
    send(deployment.bootstrap_servers, deployment.input_topic, [*events, *pacers("10:00:00", "p1")])
    end = stamp("08:05:00")
    consume_until(
        deployment.bootstrap_servers, [deployment.output_topic], has_finals(("t5", "5m", end))
    )
    first.kill()

    second = launch(deployment)
    assert wait_until(
        lambda: counter_value(scrape(second), "adoption_events_duplicate_total", tenant="t5") >= 20,
        timeout=60,
    ), second.log_tail()

    dead_letters = read_all(deployment.bootstrap_servers, deployment.dead_letter_topic)
    assert [headers_of(record) for record in dead_letters] == []
    assert counter_value(scrape(second), "adoption_events_late_total", tenant="t5") == 0
    output = read_all(deployment.bootstrap_servers, deployment.output_topic)
    # At least once, the final record may come again after the crash, never different.
    assert {counts_of(record) for record in finals_of(output, "t5", "5m", end)} == {(20, 20)}


def test_killed_worker_watermark_released_after_restart(
    new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    # The killed worker's last watermark (08:08) would hold the clocks until
    # it went stale, three idle timeouts later. Its ticks belong to an older
    # consumer group generation than the restarted worker's, so they are
    # dropped as soon as the restarted worker owns every input partition.
    deployment = new_deployment(
        "released", ADOPTION_WINDOWS="5m/5m", ADOPTION_IDLE_TIMEOUT_MS="30s"
    )
    first = launch(deployment)
    early: list[Outgoing] = [
        (number % 4, None, event(f"a{number}", "t6", "faq", at("08:01:00"))) for number in range(8)
    ]
    send(deployment.bootstrap_servers, deployment.input_topic, [*early, *pacers("08:08:00", "p1")])
    consume_until(
        deployment.bootstrap_servers,
        [deployment.output_topic],
        has_finals(("t6", "5m", stamp("08:05:00"))),
    )
    first.kill()

    launch(deployment)
    later: list[Outgoing] = [
        (number % 4, None, event(f"b{number}", "t6", "faq", at("08:11:00"))) for number in range(8)
    ]
    send(deployment.bootstrap_servers, deployment.input_topic, [*later, *pacers("08:18:00", "p2")])
    sent_at = time.monotonic()
    records = consume_until(
        deployment.bootstrap_servers,
        [deployment.output_topic],
        has_finals(("t6", "5m", stamp("08:15:00"))),
        timeout=120,
    )
    waited = time.monotonic() - sent_at

    assert [counts_of(record) for record in finals_of(records, "t6", "5m", stamp("08:15:00"))] == [
        (8, 8)
    ]
    assert waited < 30, f"final record {waited:.0f} s after the events, not within 30 s"


# A worker killed inside its backlog: nothing lost, and with transactions nothing doubled


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kill_inside_backlog_loses_nothing(
    guarantee: str,
    new_deployment: Callable[..., Deployment],
    launch: Callable[..., WorkerProcess],
) -> None:
    # The restarted worker resumes from committed offsets in the middle of a
    # backlog, and Faust seeks its eight input partitions back to them while
    # its recovery has the fetcher running. The restarted worker gets another
    # worker id, so the broker, not a fencing producer, aborts the killed
    # worker's open transactions.
    deployment = new_deployment(
        "backlog",
        input_partitions=BACKLOG_PARTITIONS,
        ADOPTION_WINDOWS="1h/1h",
        ADOPTION_IDLE_TIMEOUT_MS="20s",
        ADOPTION_PROCESSING_GUARANTEE=guarantee,
        ADOPTION_TRANSACTION_TIMEOUT_MS="5s",
    )
    load, invalid, worker = start_backlog(deployment, 60_000, launch)
    if guarantee == "exactly_once":
        # Kill it at a moment when one of its transactions has records on the broker.
        transactional_topics = [
            deployment.dead_letter_topic,
            deployment.output_topic,
            f"{deployment.app_id}-by-tenant",
            journal_changelog(deployment),
        ]
        assert asyncio.run(
            kill_inside_transaction(worker, deployment.bootstrap_servers, transactional_topics)
        ), "the worker never had an open transaction with records"
    else:
        worker.kill()

    launch(deployment)
    check_backlog_counted(deployment, load, invalid, exactly_once=guarantee == "exactly_once")
    if guarantee == "at_least_once":
        return

    # A restarted worker numbers journal records on from the committed ones,
    # so a key written twice would mean a record of an aborted transaction
    # was read back.
    journal = read_all(deployment.bootstrap_servers, journal_changelog(deployment))
    written = Counter(record.key for record in journal if record.value is not None)
    assert {key: number for key, number in written.items() if number > 1} == {}


BACKLOG_PARTITIONS = 8


@dataclass(frozen=True)
class Backlog:
    """Input records of one tenant in one hour, and their true counts."""

    events: list[Outgoing]
    self_service: int
    total: int


def backlog(records: int, partitions: int) -> Backlog:
    """Return records of tenant t5 between 10:00 and 11:00, every fifth one invalid JSON.

    The invalid records make every ingest batch write dead letters, from its
    start to its end.
    """
    generator = random.Random(records)
    hour_start_ms = epoch_ms("10:00:00")
    events: list[Outgoing] = []
    self_service = total = 0
    for number in range(records):
        if number % 5 == 4:
            events.append((number % partitions, f"bad-{number}".encode(), b'{"event_id": "cut'))
            continue
        channels = SELF_SERVICE_CHANNELS if number % 3 == 0 else ASSISTED_CHANNELS
        self_service += number % 3 == 0
        total += 1
        event_id = f"x-{number:06d}"
        occurred_at_ms = hour_start_ms + generator.randrange(3_600_000)
        value = event(event_id, "t5", generator.choice(channels), occurred_at_ms)
        events.append((number % partitions, event_id.encode(), value))
    return Backlog(events, self_service, total)


def start_backlog(
    deployment: Deployment,
    records: int,
    launch: Callable[..., WorkerProcess],
    *,
    send_first: bool = False,
) -> tuple[Backlog, set[tuple[int, int]], WorkerProcess]:
    """Start a worker, send it a backlog, and wait until it has read 3,000 records.

    With ``send_first`` the whole backlog is on the broker before the worker
    starts, so the worker reads it at its full rate from the start.
    Returns the backlog, the partitions and offsets of its invalid records,
    and the worker.
    """
    load = backlog(records, BACKLOG_PARTITIONS)
    worker = None if send_first else launch(deployment)
    sent = send(deployment.bootstrap_servers, deployment.input_topic, load.events)
    if worker is None:
        worker = launch(deployment)
    invalid = {
        (record.partition, record.offset)
        for record in sent
        if record.key is not None and record.key.startswith(b"bad-")
    }
    assert wait_until(
        lambda: consumed(scrape(worker), deployment) >= 3_000, timeout=120
    ), worker.log_tail()
    return load, invalid, worker


def check_backlog_counted(
    deployment: Deployment, load: Backlog, invalid: set[tuple[int, int]], *, exactly_once: bool
) -> None:
    """Check the backlog's final counts and dead letters: nothing lost, nothing counted twice.

    Exactly once, each final record and each dead letter is also there once.
    """
    end = stamp("11:00:00")
    records = consume_until(
        deployment.bootstrap_servers,
        [deployment.output_topic],
        has_finals(("t5", "1h", end), ("*", "1h", end)),
        timeout=180,
    )
    for tenant in ("t5", "*"):
        assert {counts_of(record) for record in finals_of(records, tenant, "1h", end)} == {
            (load.self_service, load.total)
        }

    # Every invalid record is in the committed dead-letter topic.
    dead_letters = read_all(deployment.bootstrap_servers, deployment.dead_letter_topic)
    sources = Counter(
        (int(headers["adoption.source.partition"]), int(headers["adoption.source.offset"]))
        for headers in map(headers_of, dead_letters)
    )
    assert set(sources) == invalid
    if not exactly_once:
        return
    assert {source: number for source, number in sources.items() if number > 1} == {}
    output = read_all(deployment.bootstrap_servers, deployment.output_topic)
    assert len(finals_of(output, "t5", "1h", end)) == 1
    assert len(finals_of(output, "*", "1h", end)) == 1


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_join_inside_backlog_counts_each_event_once(
    guarantee: str,
    new_deployment: Callable[..., Deployment],
    launch: Callable[..., WorkerProcess],
) -> None:
    # A second worker joins while the first reads a backlog in fetches of
    # thousands of records. The rebalance stops the first worker's flow in
    # the middle of a fetch, and the second worker reads the partitions that
    # move from their committed offsets. Nothing may be lost in either mode.
    # Records delivered twice show only in exactly-once mode, as repeated
    # dead letters or final records: de-duplication keeps the counts exact.
    deployment = new_deployment(
        "join",
        input_partitions=BACKLOG_PARTITIONS,
        ADOPTION_WINDOWS="1h/1h",
        ADOPTION_IDLE_TIMEOUT_MS="20s",
        ADOPTION_PROCESSING_GUARANTEE=guarantee,
        # 256 KiB a partition: still thousands of records a fetch, and slow
        # enough that the backlog lasts until the second worker joins.
        ADOPTION_MAX_PARTITION_FETCH_BYTES="262144",
    )
    load, invalid, first = start_backlog(deployment, 600_000, launch, send_first=True)
    # The first worker reads faster than a second one starts, so it waits,
    # stopped, until the second one's join has begun the rebalance.
    assert first.process is not None
    os.kill(first.process.pid, signal.SIGSTOP)
    try:
        second = launch(deployment, wait_ready=False)
        rebalancing = asyncio.run(
            wait_for_group_state(deployment.bootstrap_servers, deployment.app_id, timeout=8)
        )
    finally:
        os.kill(first.process.pid, signal.SIGCONT)
    assert rebalancing, second.log_tail()
    # The Kafka client logs a revocation at each join: the first worker's own,
    # then the one of the rebalance that the second worker starts.
    assert wait_until(
        lambda: first.log_path.read_text(errors="replace").count(
            "Revoking previously assigned partitions"
        )
        >= 2,
        timeout=60,
    ), first.log_tail()
    read_at_join = consumed(scrape(first), deployment)
    assert read_at_join < len(load.events), (
        "the first worker read the whole backlog before the second joined"
    )
    second.wait_ready()

    check_backlog_counted(deployment, load, invalid, exactly_once=guarantee == "exactly_once")
    # The second worker took input partitions while they still had a backlog.
    assert consumed(scrape(second), deployment) > 0, second.log_tail()
    # Both workers, the group leader and the other, name the input partitions'
    # number, without which counting partitions cannot wait for new owners.
    internal = read_all(deployment.bootstrap_servers, f"{deployment.app_id}-by-tenant")
    ticks = [decode_internal(record.value) for record in internal]
    totals: dict[str, set[int | None]] = {}
    for message in ticks:
        tick = message.tick if isinstance(message, Batch) else message
        if tick.generation is not None and tick.generation >= 2:
            totals.setdefault(tick.sender, set()).add(tick.input_total)
    assert len(totals) == 2, totals
    assert all(found == {BACKLOG_PARTITIONS} for found in totals.values()), totals


def test_stalled_worker_restores_missed_counts(
    new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    # A worker stopped past its session timeout loses its partitions to the
    # other worker, which counts more events into the same windows. When it
    # wakes, the group has moved on by two generations, and the state in its
    # memory lacks those events. It must restore its partitions from the
    # changelogs, or the final records of the partitions it gets back miss
    # what the other worker counted meanwhile.
    deployment = new_deployment(
        "stall",
        ADOPTION_WINDOWS="1m/1m",
        ADOPTION_GRACE_MS="10m",
        ADOPTION_IDLE_TIMEOUT_MS="120s",
        ADOPTION_SESSION_TIMEOUT_MS="6s",
    )
    first = launch(deployment)
    second = launch(deployment)
    assert wait_until(
        lambda: len(counting_partitions_in_log(first)) == 2
        and len(counting_partitions_in_log(second)) == 2
    ), first.log_tail() + second.log_tail()
    owned_before = counting_partitions_in_log(first)

    tenants = tenants_on_every_partition()
    truth: Counter[tuple[str, str, bool]] = Counter()

    def produce(name: str, clocks: list[str]) -> None:
        records: list[Outgoing] = []
        for number, (tenant, clock) in enumerate(
            (tenant, clock) for clock in clocks for tenant in tenants
        ):
            self_service = number % 3 != 0
            channel = SELF_SERVICE_CHANNELS[0] if self_service else ASSISTED_CHANNELS[0]
            event_id = f"{name}-{number}"
            records.append(
                (number % 4, event_id.encode(), event(event_id, tenant, channel, at(clock)))
            )
            # The end of the event's 1-minute window. No time here is in an hour's last minute.
            end = stamp(f"{clock[:3]}{int(clock[3:5]) + 1:02d}:00")
            truth[(tenant, end, self_service)] += 1
        send(deployment.bootstrap_servers, deployment.input_topic, records)

    # Minute 10:01 gets events from both sides of the stall.
    produce("before", ["10:00:10", "10:00:40", "10:01:10", "10:01:20"])
    wait_for_clock(first, "10:01:20", partitions=2)

    assert first.process is not None
    os.kill(first.process.pid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: len(counting_partitions_in_log(second)) == 4, timeout=60), (
            second.log_tail()
        )
        produce("during", ["10:01:30", "10:01:50", "10:02:10", "10:02:40"])
        wait_for_clock(second, "10:02:40")
        # With the other worker gone, the stalled one gets every partition back,
        # its own among them, whose state in its memory is stale, not absent.
        second.stop()
    finally:
        os.kill(first.process.pid, signal.SIGCONT)

    assert wait_until(
        lambda: "missed a rebalance" in first.log_tail(2_000), timeout=60
    ), first.log_tail()
    first.wait_ready()
    assert set(counting_partitions_in_log(first)) == {0, 1, 2, 3}, first.log_tail()
    assert set(owned_before) < {0, 1, 2, 3}

    send(deployment.bootstrap_servers, deployment.input_topic, pacers("10:30:00", "close"))
    ends = [stamp(clock) for clock in ("10:01:00", "10:02:00", "10:03:00")]
    records = consume_until(
        deployment.bootstrap_servers,
        [deployment.output_topic],
        has_finals(*[(tenant, "1m", end) for tenant in tenants for end in ends]),
        timeout=120,
    )
    for tenant in tenants:
        for end in ends:
            expected = (
                truth[(tenant, end, True)],
                truth[(tenant, end, True)] + truth[(tenant, end, False)],
            )
            found = {counts_of(record) for record in finals_of(records, tenant, "1m", end)}
            assert found == {expected}, (tenant, end, found, expected)


async def wait_for_group_state(
    bootstrap_servers: str,
    group: str,
    states: frozenset[str] = frozenset({"PreparingRebalance", "CompletingRebalance"}),
    timeout: float = 10,
) -> bool:
    """Wait until the consumer group is in one of ``states``; return whether it got there."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            (response,) = await admin.describe_consumer_groups([group])
            # Each described group is (error code, group id, state, ...).
            if response.groups[0][2] in states:
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await admin.close()


async def partitions_of(bootstrap_servers: str, topic: str) -> set[int]:
    """Return the partition numbers of a topic."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        partitions: set[int] = await producer.partitions_for(topic)
        return partitions
    finally:
        await producer.stop()


async def kill_inside_transaction(
    worker: WorkerProcess, bootstrap_servers: str, topics: list[str], attempts: int = 1_000
) -> bool:
    """Kill the worker with SIGKILL while one of its transactions has records in ``topics``.

    A batch's records go out at its end, just before the commit, so the
    worker is paused with SIGSTOP at short intervals until the last stable
    offset of some partition lags its end offset. Return whether that happened.
    """
    assert worker.process is not None
    pid = worker.process.pid
    committed = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers,
                                 isolation_level="read_committed")
    everything = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await committed.start()
    await everything.start()
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(await partitions_of(bootstrap_servers, topic))
        ]
        assert partitions, f"no partitions found for {topics}"
        for _ in range(attempts):
            os.kill(pid, signal.SIGSTOP)
            stable = await committed.end_offsets(partitions)
            ends = await everything.end_offsets(partitions)
            if any(stable[tp] < ends[tp] for tp in partitions):
                worker.kill()
                return True
            os.kill(pid, signal.SIGCONT)
            await asyncio.sleep(0.01)
        return False
    finally:
        await committed.stop()
        await everything.stop()


# Redelivered events count once, and state survives a restart


def journal_changelog(deployment: Deployment) -> str:
    """Return the changelog topic of the worker's journal table."""
    return f"{deployment.app_id}-journal-changelog"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_redelivered_event_counts_once_across_restart(
    guarantee: str,
    new_deployment: Callable[..., Deployment],
    launch: Callable[..., WorkerProcess],
) -> None:
    # The idle timeout outlasts the restart, so the window stays open through it.
    deployment = new_deployment(
        "dedup",
        ADOPTION_WINDOWS="5m/5m",
        ADOPTION_IDLE_TIMEOUT_MS="20s",
        ADOPTION_PROCESSING_GUARANTEE=guarantee,
    )
    d1 = event("d1", "t3", "chatbot", at("11:00:05"))
    d2 = event("d2", "t3", "live_chat", at("11:00:15"))
    d3 = event("d3", "t3", "knowledge_base", at("11:00:45"))

    first = launch(deployment)
    send(deployment.bootstrap_servers, deployment.input_topic, [(0, b"d1", d1), (1, b"d2", d2)])
    send(deployment.bootstrap_servers, deployment.input_topic, [(1, b"d2", d2)])
    assert wait_until(
        lambda: counter_value(scrape(first), "adoption_events_duplicate_total", tenant="t3") == 1,
        timeout=60,
    ), first.log_tail()
    first.stop()
    journal_before = read_all(deployment.bootstrap_servers, journal_changelog(deployment))

    # The third copy of d2 arrives on another input partition. De-duplication
    # still catches it, because it keys on tenant and event id after the
    # repartition by tenant.
    second = launch(deployment)
    send(
        deployment.bootstrap_servers,
        deployment.input_topic,
        [(2, b"d2", d2), (3, b"d3", d3)],
    )
    # d1 and d2 come back from the journal, d3 is new.
    assert wait_until(
        lambda: values_of(scrape(second), "adoption_dedup_remembered_ids") == [3], timeout=30
    ), values_of(scrape(second), "adoption_dedup_remembered_ids")

    end = stamp("11:05:00")
    records = consume_until(
        deployment.bootstrap_servers, [deployment.output_topic], has_finals(("t3", "5m", end))
    )
    finals = finals_of(records, "t3", "5m", end)
    assert [counts_of(record) for record in finals] == [(2, 3)]
    # Counters start at zero in each process, so one duplicate in the first
    # and one in the second make the two of the scenario.
    samples = scrape(second)
    assert counter_value(samples, "adoption_events_duplicate_total", tenant="t3") == 1

    # Restored windows still expire. Once the idle clock has passed them, the
    # ids are forgotten and the first process's journal records are deleted.
    assert wait_until(
        lambda: values_of(scrape(second), "adoption_dedup_remembered_ids") == [0], timeout=60
    ), values_of(scrape(second), "adoption_dedup_remembered_ids")

    counted_keys = {
        record.key
        for record in journal_before
        if record.value is not None
        and any(tenant == "t3" for tenant, _ in decode_delta(record.value).counts)
    }
    assert counted_keys, "the first process journaled no counts of t3"
    tombstoned: set[bytes] = set()

    def all_tombstoned() -> bool:
        journal = read_all(deployment.bootstrap_servers, journal_changelog(deployment))
        tombstoned.update(record.key for record in journal if record.value is None)
        return counted_keys <= tombstoned

    assert wait_until(all_tombstoned, timeout=30), (
        f"journal records {sorted(counted_keys - tombstoned)} were never deleted"
    )


# One series per tenant and window, and none for a quiet tenant


def test_restart_exports_one_series_per_window(
    new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    # Windows close only through pacer events, so a series stays exported
    # until the clock passes it.
    deployment = new_deployment(
        "series", ADOPTION_WINDOWS="5m/5m", ADOPTION_IDLE_TIMEOUT_MS="120s"
    )
    first = launch(deployment)
    send(
        deployment.bootstrap_servers,
        deployment.input_topic,
        [
            (0, b"s1", event("s1", "t7", "chatbot", at("10:01:00"))),
            (1, b"s2", event("s2", "t7", "faq", at("10:02:00"))),
            (2, b"s3", event("s3", "t7", "phone", at("10:03:00"))),
            (3, b"q1", event("q1", "q7", "chatbot", at("10:01:00"))),
            (0, b"q2", event("q2", "q7", "email", at("10:04:00"))),
            *pacers("10:05:30", "p1"),
        ],
    )
    assert wait_until(lambda: bool(rate_values(scrape(first), "q7")), timeout=60), first.log_tail()
    samples = scrape(first)
    assert rate_values(samples, "t7") == [pytest.approx(2 / 3)]
    assert rate_values(samples, "q7") == [0.5]
    first.stop()

    second = launch(deployment)
    assert wait_until(lambda: bool(rate_values(scrape(second), "q7")), timeout=60), (
        second.log_tail()
    )
    samples = scrape(second)
    assert rate_values(samples, "t7") == [pytest.approx(2 / 3)]
    assert values_of(samples, "support_interactions", tenant="t7", window="5m") == [3]
    assert rate_values(samples, "q7") == [0.5]
    assert values_of(samples, "support_interactions", tenant="q7", window="5m") == [2]

    send(
        deployment.bootstrap_servers,
        deployment.input_topic,
        [
            (0, b"s4", event("s4", "t7", "chatbot", at("10:06:00"))),
            (1, b"s5", event("s5", "t7", "phone", at("10:07:00"))),
            (2, b"s6", event("s6", "t7", "email", at("10:08:00"))),
            (3, b"s7", event("s7", "t7", "ticket", at("10:09:00"))),
            *pacers("10:10:30", "p2"),
        ],
    )
    assert wait_until(
        lambda: values_of(scrape(second), "support_interactions", tenant="t7", window="5m") != [3],
        timeout=60,
    ), second.log_tail()
    samples = scrape(second)
    assert rate_values(samples, "t7") == [0.25]
    assert values_of(samples, "support_interactions", tenant="t7", window="5m") == [4]
    # q7 had nothing in [10:05, 10:10), the newest window that has ended.
    assert rate_values(samples, "q7") == []


def test_stopped_worker_sends_quiet_tick_last(
    new_deployment: Callable[..., Deployment], launch: Callable[..., WorkerProcess]
) -> None:
    # A stopped worker's last watermark must not hold the clocks back until
    # it goes stale. The last record it sends to each counting partition is
    # a quiet tick that owns no input partition, so the clocks wait only for
    # the next generation, whose workers read its partitions again.
    deployment = new_deployment("farewell", ADOPTION_WINDOWS="5m/5m")
    worker = launch(deployment)
    send(
        deployment.bootstrap_servers,
        deployment.input_topic,
        [(0, b"f1", event("f1", "t8", "chatbot", at("10:01:00"))), *pacers("10:05:30", "p1")],
    )
    assert wait_until(lambda: bool(rate_values(scrape(worker), "t8")), timeout=60), (
        worker.log_tail()
    )
    worker.stop()

    internal = read_all(deployment.bootstrap_servers, f"{deployment.app_id}-by-tenant")
    last: dict[int, Tick | Batch] = {}
    for record in sorted(internal, key=lambda record: (record.partition, record.offset)):
        last[record.partition] = decode_internal(record.value)
    assert sorted(last) == list(range(COUNTING_PARTITIONS))
    for partition, message in last.items():
        assert isinstance(message, Tick), (partition, message)
        assert message.quiet, (partition, message)
        assert message.watermark_ms is None, (partition, message)
        assert message.inputs == 0, (partition, message)
        assert message.input_total == 4, (partition, message)
        assert message.generation is not None and message.generation > 0, (partition, message)


# Two workers: a rebalance moves series, and one tenant's events are counted once


@dataclass
class TwoWorkersRun:
    """Snapshots of a deployment that grows from one worker to two."""

    tenants: list[str]
    joined_partitions: list[int]
    before_join: list[Sample]
    after_join: tuple[list[Sample], list[Sample]]
    after_join_settled: bool
    consumed_during_last_phase: tuple[float, float]
    outputs: list[ConsumerRecord]
    after_last_phase: tuple[list[Sample], list[Sample]]
    logs: str


QUIET_TENANTS_PER_PARTITION = 2


def tenants_on_every_partition() -> list[str]:
    """Return tenant names that spread evenly over the counting partitions."""
    chosen: list[str] = []
    counts = dict.fromkeys(range(4), 0)
    number = 0
    while len(chosen) < 4 * QUIET_TENANTS_PER_PARTITION:
        tenant = f"r{number}"
        partition = counting_partition(tenant)
        if counts[partition] < QUIET_TENANTS_PER_PARTITION:
            counts[partition] += 1
            chosen.append(tenant)
        number += 1
    return chosen


def expected_rate(index: int) -> float:
    """Return the rate of the ``index``-th tenant: ``index + 1`` self-service, one assisted."""
    return (index + 1) / (index + 2)


def counting_partitions_in_log(worker: WorkerProcess) -> list[int]:
    """Return the counting partitions of the worker's latest assignment, from its log."""
    found = re.findall(r"partitions assigned: counting \[([\d, ]*)\]", worker.log_tail(2_000))
    assert found, f"no assignment in the log:\n{worker.log_tail()}"
    return [int(number) for number in found[-1].split(",") if number.strip()]


def consumed(samples: list[Sample], deployment: Deployment) -> float:
    """Return how many input records a worker has read."""
    return counter_value(samples, "adoption_events_consumed_total", topic=deployment.input_topic)


def exporters(tenant: str, snapshots: tuple[list[Sample], list[Sample]]) -> list[int]:
    """Return which of the two workers (0 or 1) export a rate for ``tenant``."""
    return [index for index, samples in enumerate(snapshots) if rate_values(samples, tenant)]


@pytest.fixture(scope="module", params=["at_least_once", "exactly_once"])
def two_workers_run(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TwoWorkersRun]:
    """Start one worker, add a second, then send one tenant's events to both, in each mode."""
    deployment = Deployment.create(
        kafka_bootstrap,
        f"pair-{uuid.uuid4().hex[:12]}",
        tmp_path_factory.mktemp("two-workers"),
        settings={
            "ADOPTION_WINDOWS": "5m/5m",
            "ADOPTION_IDLE_TIMEOUT_MS": "120s",
            "ADOPTION_PROCESSING_GUARANTEE": request.param,
        },
    )
    tenants = tenants_on_every_partition()
    first = WorkerProcess(deployment)
    second = WorkerProcess(deployment)
    try:
        first.start()
        outgoing: list[Outgoing] = []
        for index, tenant in enumerate(tenants):
            for number in range(index + 1):
                event_id = f"{tenant}-s{number}"
                value = event(event_id, tenant, "faq", at(f"10:0{number % 5}:1{index}"))
                outgoing.append((len(outgoing) % 4, event_id.encode(), value))
            value = event(f"{tenant}-a", tenant, "phone", at("10:04:00"))
            outgoing.append((len(outgoing) % 4, f"{tenant}-a".encode(), value))
        send(kafka_bootstrap, deployment.input_topic, [*outgoing, *pacers("10:05:30", "p1")])
        assert wait_until(
            lambda: all(rate_values(scrape(first), tenant) for tenant in tenants), timeout=60
        ), first.log_tail()
        before_join = scrape(first)

        second.start()
        assert wait_until(
            lambda: first.http_status("/readyz") == 200 and second.http_status("/readyz") == 200
        ), f"{first.log_tail()}\n{second.log_tail()}"
        snapshots: tuple[list[Sample], list[Sample]] = ([], [])

        def settled() -> bool:
            nonlocal snapshots
            snapshots = (scrape(first), scrape(second))
            return all(len(exporters(tenant, snapshots)) == 1 for tenant in tenants)

        after_join_settled = wait_until(settled, timeout=60)
        joined_partitions = counting_partitions_in_log(second)

        consumed_before = (consumed(snapshots[0], deployment), consumed(snapshots[1], deployment))
        send(
            kafka_bootstrap,
            deployment.input_topic,
            [
                (0, b"c1", event("c1", "tc", "chatbot", at("10:11:00"))),
                (1, b"c2", event("c2", "tc", "phone", at("10:12:00"))),
                (2, b"c3", event("c3", "tc", "faq", at("10:13:00"))),
                (3, b"c4", event("c4", "tc", "community", at("10:14:00"))),
                *pacers("10:17:30", "p2"),
            ],
        )
        end = stamp("10:15:00")
        outputs = consume_until(
            kafka_bootstrap,
            [deployment.output_topic],
            has_finals(("tc", "5m", end), ("*", "5m", end)),
        )
        assert wait_until(
            lambda: len(exporters("tc", (scrape(first), scrape(second)))) >= 1, timeout=30
        )
        after_last_phase = (scrape(first), scrape(second))
        yield TwoWorkersRun(
            tenants=tenants,
            joined_partitions=joined_partitions,
            before_join=before_join,
            after_join=snapshots,
            after_join_settled=after_join_settled,
            consumed_during_last_phase=(
                consumed(after_last_phase[0], deployment) - consumed_before[0],
                consumed(after_last_phase[1], deployment) - consumed_before[1],
            ),
            outputs=outputs,
            after_last_phase=after_last_phase,
            logs=f"{first.log_tail()}\n{second.log_tail()}",
        )
    finally:
        second.stop()
        first.stop()


def test_rebalance_moves_tenant_series(two_workers_run: TwoWorkersRun) -> None:
    run = two_workers_run
    for index, tenant in enumerate(run.tenants):
        assert rate_values(run.before_join, tenant) == [pytest.approx(expected_rate(index))]

    assert run.joined_partitions, "the second worker got no counting partition"
    moved = [t for t in run.tenants if counting_partition(t) in run.joined_partitions]
    assert moved
    for index, tenant in enumerate(run.tenants):
        owner = 1 if tenant in moved else 0
        assert exporters(tenant, run.after_join) == [owner], (
            f"{tenant} on counting partition {counting_partition(tenant)}; the second "
            f"worker counts {run.joined_partitions}"
        )
        assert rate_values(run.after_join[owner], tenant) == [
            pytest.approx(expected_rate(index))
        ]
    assert run.after_join_settled


def test_two_workers_count_one_tenant_once(two_workers_run: TwoWorkersRun) -> None:
    run = two_workers_run
    assert all(number > 0 for number in run.consumed_during_last_phase), (
        f"input records read by each worker: {run.consumed_during_last_phase}"
    )
    end = stamp("10:15:00")
    finals = finals_of(run.outputs, "tc", "5m", end)
    assert [counts_of(record) for record in finals] == [(3, 4)]
    assert finals[0]["channels"] == {
        "chatbot": {"count": 1, "class": "self_service"},
        "community": {"count": 1, "class": "self_service"},
        "faq": {"count": 1, "class": "self_service"},
        "phone": {"count": 1, "class": "assisted"},
    }
    all_tenants = finals_of(run.outputs, "*", "5m", end)
    assert [counts_of(record) for record in all_tenants] == [(3, 4)]

    assert len(exporters("tc", run.after_last_phase)) == 1
    for samples in run.after_last_phase:
        assert rate_values(samples, "tc") in ([], [0.75])


def test_quiet_tenant_series_disappear(two_workers_run: TwoWorkersRun) -> None:
    run = two_workers_run
    # The clock is at 10:17:30, so the newest ended window is [10:10, 10:15),
    # where the first tenants had no events.
    for tenant in run.tenants:
        assert exporters(tenant, run.after_last_phase) == [], tenant
