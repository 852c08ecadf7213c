"""The worker-only phases: live delay, recovery after restart, and memory by tenants and windows."""

import asyncio
import bisect
import logging
import random
import re
import time
from datetime import datetime
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.kafka_io import end_offsets
from bench.measure import SAMPLE_SECONDS, Contender
from bench.throughput import RunContext
from bench.worker import DEFAULT_WINDOWS, WorkerContender
from bench.workload import (
    ASSISTED_MIX,
    PARTITIONS,
    SELF_SERVICE_MIX,
    Load,
    encode_event,
    load_topic,
    tenant_names,
)
from stream.broker.admin import create_topics

logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 180.0
LIVE_WINDOW = "5m"
LIVE_WINDOW_MS = 300_000
LIVE_STEP_MS = 60_000
DRAIN_SECONDS = 10.0
SEND_INTERVAL_SECONDS = 0.02
RECENT_HISTORY_ENDS_BEFORE_NOW_MS = 60_000


def wait_ready(worker: WorkerContender, contender: Contender) -> float | None:
    """Wait until /readyz returns 200; return the wall-clock time, or None."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline and contender.is_running():
        if worker.http_status("/readyz") == 200:
            return time.time()
        time.sleep(0.1)
    return None


# Live delay


def live(context: RunContext, rate: float, seconds: float, tenants: int) -> dict[str, Any]:
    """Feed the worker events stamped with the current time at ``rate`` events/s and time outputs.

    For each event, the delay runs from its append to the first record of the
    5m/1m window ending soonest after it (a provisional record, as a rule)
    whose count includes it. Counts carry no event ids, so an event counts as
    included once the window's total reaches the event's rank among the
    tenant's events in that window, in send order. This is sound because one
    tenant's events stay in order from input partition to counting partition.
    """
    name = f"{context.run_id}-live"
    topic = f"{name}-input"
    workdir = context.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(create_topics(context.bootstrap_servers, {topic: PARTITIONS}))
    worker = WorkerContender(context.bootstrap_servers, name, topic, workdir,
                             extra_environment=context.worker_settings)
    contender = worker.contender("b-live")
    contender.start()
    ready_at = wait_ready(worker, contender)
    if ready_at is None:
        contender.stop()
        return {"error": "the worker did not become ready", "log_tail": contender.log_tail()}
    logger.info("live phase: %.0f events/s for %.0f s", rate, seconds)
    try:
        measured = asyncio.run(_live_run(worker, contender, rate, seconds, tenants))
    finally:
        contender.stop()
    started_at = measured.pop("started_at")
    busy = [sample for sample in contender.samples if sample.at >= started_at]
    if len(busy) >= 2:
        measured["cpu_cores_used"] = (busy[-1].cpu_seconds - busy[0].cpu_seconds) / (
            busy[-1].at - busy[0].at
        )
        measured["peak_rss_bytes"] = max(sample.peak_rss_bytes for sample in busy)
    measured["rate_requested"] = rate
    return measured


async def _live_run(
    worker: WorkerContender, contender: Contender, rate: float, seconds: float, tenants: int
) -> dict[str, Any]:
    outputs: list[tuple[str, int, int, float, float]] = []
    stop_reading = asyncio.Event()
    reader = asyncio.create_task(_read_outputs(worker, outputs, stop_reading))
    sent: list[list[Any]] = []
    producer = AIOKafkaProducer(
        bootstrap_servers=worker.bootstrap_servers, acks="all", linger_ms=5
    )
    await producer.start()
    generator = random.Random(11)
    names = tenant_names(tenants)
    weights = [1 / (rank + 1) ** 0.5 for rank in range(tenants)]
    channels = list(SELF_SERVICE_MIX) + list(ASSISTED_MIX)
    channel_weights = list(SELF_SERVICE_MIX.values()) + list(ASSISTED_MIX.values())
    started_at = time.time()
    started = time.monotonic()
    next_sample = started
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(rate * elapsed) - len(sent)
            for _ in range(max(due, 0)):
                tenant = generator.choices(names, weights=weights)[0]
                now_ms = time.time_ns() // 1_000_000
                value = encode_event(
                    f"live-{len(sent)}", now_ms, generator.choices(channels, channel_weights)[0],
                    tenant, generator.randrange(10_000_000), "smb", True,
                )
                entry: list[Any] = [tenant, now_ms, None]
                future = await producer.send(
                    worker.input_topic, value, key=tenant.encode(), timestamp_ms=now_ms
                )
                future.add_done_callback(lambda _, entry=entry: entry.__setitem__(2, time.time()))
                sent.append(entry)
            if time.monotonic() >= next_sample:
                contender.sample(len(sent))
                next_sample += SAMPLE_SECONDS
            await asyncio.sleep(SEND_INTERVAL_SECONDS)
        await producer.flush()
        send_seconds = time.monotonic() - started
        drain_until = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < drain_until:
            contender.sample(len(sent))
            await asyncio.sleep(SAMPLE_SECONDS)
    finally:
        await producer.stop()
        stop_reading.set()
        await reader
    result = _live_delays(sent, outputs)
    result.update({"events_sent": len(sent), "send_seconds": send_seconds,
                   "rate_achieved": len(sent) / send_seconds, "started_at": started_at,
                   "output_records_read": len(outputs)})
    return result


async def _read_outputs(
    worker: WorkerContender,
    outputs: list[tuple[str, int, int, float, float]],
    stop: asyncio.Event,
) -> None:
    """Collect (tenant, window end, total, record timestamp, receive time) of 5m records."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=worker.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    decoder = msgspec.json.Decoder()
    try:
        partitions: list[TopicPartition] = []
        while not partitions and not stop.is_set():
            await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
            partitions = [TopicPartition(worker.output_topic, partition) for partition in
                          sorted(consumer.partitions_for_topic(worker.output_topic) or ())]
            await asyncio.sleep(0.2)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            received = time.time()
            for records in batch.values():
                for record in records:
                    value = decoder.decode(record.value)
                    if value["window"] == LIVE_WINDOW:
                        outputs.append((value["tenant"], _epoch_ms(value["window_end"]),
                                        value["total"], record.timestamp / 1000, received))
    finally:
        await consumer.stop()


def _epoch_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


def _live_delays(
    sent: list[list[Any]], outputs: list[tuple[str, int, int, float, float]]
) -> dict[str, Any]:
    """Match each event to the first output record of its window that includes it."""
    by_window: dict[tuple[str, int], list[tuple[int, float, float]]] = {}
    for tenant, end_ms, total, created, received in outputs:
        by_window.setdefault((tenant, end_ms), []).append((total, created, received))

    history: dict[str, list[int]] = {}
    from_ack: list[float] = []
    from_send: list[float] = []
    to_created: list[float] = []
    missing = 0
    for tenant, occurred_ms, acked in sent:
        end_ms = occurred_ms - occurred_ms % LIVE_STEP_MS + LIVE_STEP_MS
        earlier = history.setdefault(tenant, [])
        rank = len(earlier) - bisect.bisect_left(earlier, end_ms - LIVE_WINDOW_MS) + 1
        earlier.append(occurred_ms)
        match = next(
            (entry for entry in by_window.get((tenant, end_ms), ()) if entry[0] >= rank), None
        )
        if match is None or acked is None:
            missing += 1
            continue
        _, created, received = match
        from_ack.append(received - acked)
        from_send.append(received - occurred_ms / 1000)
        to_created.append(created - occurred_ms / 1000)
    return {
        "events_matched": len(from_ack),
        "events_without_output": missing,
        "delay_from_ack_seconds": _percentiles(from_ack),
        "delay_from_send_seconds": _percentiles(from_send),
        "delay_send_to_output_created_seconds": _percentiles(to_created),
    }


# Recovery


_RESTORED = re.compile(r"restored partition (\d+) from (\d+) journal records in ([0-9.]+) s")


def recovery(
    context: RunContext, events: int, tenants: int, timeout_seconds: float
) -> dict[str, Any]:
    """Process ``events`` of history, stop the worker, restart it and time its return."""
    name = f"{context.run_id}-recovery-{events}"
    workdir = context.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    # The history ends a minute before now. Older history would be expired by
    # the worker itself: once the input is idle, it moves the clock to the wall
    # clock, and slices older than the longest window plus grace are dropped.
    load = asyncio.run(load_topic(context.bootstrap_servers, f"{name}-input", events,
                                  tenants=tenants, flush=False,
                                  ends_before_now_ms=RECENT_HISTORY_ENDS_BEFORE_NOW_MS))
    worker = WorkerContender(context.bootstrap_servers, name, load.topic, workdir,
                             extra_environment=context.worker_settings)
    first = worker.contender("b-history")
    first.start()
    logger.info("recovery: processing %d events of history", events)
    finished = first.run_until(worker.counted, load.target, timeout_seconds)
    start, end = worker.interval(load.target)
    result: dict[str, Any] = {"events": events, "history_finished": finished,
                              "history": first.summary(start, end, load.target)}
    if not finished:
        result["log_tail"] = first.log_tail()
        first.stop()
        return result
    worker.wait_for_quiet("adoption_changelog_records_written_total",
                          quiet_seconds=3.0, timeout_seconds=60.0)
    first.stop()
    ends = asyncio.run(end_offsets(context.bootstrap_servers, worker.changelog_topics))
    result["changelog_records"] = ends

    second = worker.contender("b-restart")
    second.log_path = workdir / "worker-restart.log"
    output_ends = asyncio.run(end_offsets(context.bootstrap_servers, [worker.output_topic]))
    second.start()
    timings = asyncio.run(_time_restart(worker, second, output_ends[worker.output_topic]))
    second.stop()
    restored = _RESTORED.findall(second.log_path.read_text(errors="replace"))
    result.update(timings)
    result["restored_partitions"] = [
        {"partition": int(p), "journal_records": int(n), "seconds": float(s)}
        for p, n, s in restored
    ]
    return result


async def _time_restart(
    worker: WorkerContender, contender: Contender, output_offset_total: int
) -> dict[str, Any]:
    """Send a probe event at once; time /readyz 200 and the probe's first output record."""
    probe_tenant = "bench-recovery-probe"
    producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap_servers, acks="all")
    await producer.start()
    now_ms = time.time_ns() // 1_000_000
    await producer.send_and_wait(
        worker.input_topic,
        encode_event("recovery-probe", now_ms, "faq", probe_tenant, 0, "smb", True),
        key=probe_tenant.encode(),
    )
    await producer.stop()
    probe_sent_at = time.time()

    consumer = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap_servers,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    ready_at = output_at = None
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
        partitions = [TopicPartition(worker.output_topic, partition) for partition in
                      sorted(consumer.partitions_for_topic(worker.output_topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        while (ready_at is None or output_at is None) and time.monotonic() < deadline:
            if ready_at is None and await asyncio.to_thread(worker.http_status, "/readyz") == 200:
                ready_at = time.time()
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    if output_at is None and record.key.startswith(probe_tenant.encode()):
                        output_at = time.time()
            contender.sample(0)
    finally:
        await consumer.stop()
    started = contender.started_at
    return {
        "seconds_to_ready": None if ready_at is None else ready_at - started,
        "seconds_to_probe_output": None if output_at is None else output_at - started,
        "probe_sent_after_start_seconds": probe_sent_at - started,
        "output_records_before_restart": output_offset_total,
        "peak_rss_bytes_restart": max((s.peak_rss_bytes for s in contender.samples), default=0),
    }


# Memory


MEMORY_VARIANTS = (
    ("3 windows (5m/1m, 1h/5m, 24h/1h), 1000 tenants", DEFAULT_WINDOWS, 1_000),
    ("3 windows (5m/1m, 1h/5m, 24h/1h), 100 tenants", DEFAULT_WINDOWS, 100),
    ("1 window (5m/1m), 1000 tenants", "5m/1m", 1_000),
    ("1 window (24h/1h), 1000 tenants", "24h/1h", 1_000),
    ("3 windows on 1h slices (2h/1h, 6h/1h, 24h/1h), 1000 tenants", "2h/1h,6h/1h,24h/1h", 1_000),
)
# Tenant counts of the series that keeps the average events per tenant fixed,
# so that memory per tenant can be read from the slope.
TENANT_SERIES = (250, 500, 1_000, 2_000)


def memory(context: RunContext, events: int) -> list[dict[str, Any]]:
    """Run the worker over the same events with each window and tenant variant; report RSS.

    Then run the default windows with each count of ``TENANT_SERIES`` and
    ``events / 1000`` events per tenant on average. The generator weights
    tenants by ``1 / sqrt(rank)`` whatever their number, so the spread of
    events over tenants keeps its shape.
    """
    loads: dict[tuple[int, int], Load] = {}
    results: list[dict[str, Any]] = []
    runs = [(label, windows, tenants, events, "variant")
            for label, windows, tenants in MEMORY_VARIANTS]
    runs += [(f"3 windows, {tenants} tenants, {events // 1_000} events per tenant on average",
              DEFAULT_WINDOWS,
              tenants, events * tenants // 1_000, "tenant series")
             for tenants in TENANT_SERIES]
    for label, windows, tenants, run_events, series in runs:
        if (tenants, run_events) not in loads:
            loads[(tenants, run_events)] = asyncio.run(load_topic(
                context.bootstrap_servers,
                f"{context.run_id}-memory-{tenants}-{run_events}-input", run_events,
                tenants=tenants, flush=False,
            ))
        load = loads[(tenants, run_events)]
        name = f"{context.run_id}-memory-{len(results)}"
        worker = WorkerContender(context.bootstrap_servers, name, load.topic,
                                 context.workdir / name, windows=windows,
                                 extra_environment=context.worker_settings)
        contender = worker.contender("b-memory")
        contender.start()
        logger.info("memory: %s", label)
        finished = contender.run_until(worker.counted, load.target, context.timeout_seconds)
        start, end = worker.interval(load.target)
        summary = contender.summary(start, end, load.target)
        first_answer = next((s for s in contender.samples if s.progress is not None
                             and s.at >= (worker.history[0][0] if worker.history else 0)), None)
        metrics = worker.metrics() or {}
        contender.stop()
        results.append({
            "variant": label,
            "series": series,
            "windows": windows,
            "tenants": tenants,
            "events": run_events,
            "finished": finished,
            "peak_rss_bytes": summary.get("peak_rss_bytes"),
            "rss_bytes_at_first_scrape": first_answer.rss_bytes if first_answer else None,
            "events_per_second": summary.get("events_per_second"),
            "remembered_ids": metrics.get("adoption_dedup_remembered_ids"),
        })
    return results

