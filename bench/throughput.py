"""The throughput phase: each contender, in its own process, counts the whole loaded topic.

Each run gets a fresh consumer group, fresh state and fresh topics. The rate
is the counted records divided by the time from the first record consumed to
the last counted, so start-up (topic creation, group join) is left out and
reported apart.
"""

import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bench import verify
from bench.kafka_io import end_offsets, read_topic, topics_with_prefix
from bench.measure import Contender, read_json_file
from bench.worker import WorkerContender
from bench.workload import Load

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

CONTENDERS = {
    "a": "aiokafka loop",
    "b": "adoption-rate worker",
    "c": "Quix Streams",
    "d": "Faust tables",
}
PEER_MODULES = {"a": "bench.peers.aiokafka_loop", "c": "bench.peers.quix_app",
                "d": "bench.peers.faust_app"}


@dataclass
class RunContext:
    """Settings shared by every contender run."""

    bootstrap_servers: str
    run_id: str
    workdir: Path
    timeout_seconds: float
    scrape_interval_seconds: float = 0.5
    # ADOPTION_* variables given to every worker process, over the bench's own.
    worker_settings: Mapping[str, str] = field(default_factory=dict)
    full_scrape_interval_seconds: float = 15.0
    worker_processes: int = 1


def run_contender(kind: str, load: Load, repetition: int, context: RunContext) -> dict[str, Any]:
    """Run one contender over ``load`` and return its measurements and count checks."""
    name = f"{context.run_id}-{kind}-{repetition}"
    workdir = context.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    load_average = os.getloadavg()
    # The worker imports its source when it starts; record which source that was.
    source = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True).stdout.strip()
    logger.info("running %s (%s) on %s", name, CONTENDERS[kind], load.topic)
    if kind == "b":
        result = _run_worker(name, load, workdir, context)
    else:
        result = _run_peer(kind, name, load, workdir, context)
    result.update({"contender": kind, "name": name, "repetition": repetition,
                   "load_average_before": load_average, "source_at_start": source})
    if not result.get("finished"):
        verdict = "not compared (unfinished)"
    else:
        verdict = "match" if result.get("counts_match") else "DO NOT MATCH"
    logger.info(
        "%s: %s events/s, %s events per CPU-second, peak RSS %.0f MB, counts %s",
        name,
        _round(result.get("events_per_second")),
        _round(result.get("events_per_cpu_second")),
        result.get("peak_rss_bytes", 0) / 1e6,
        verdict,
    )
    return result


def _round(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _run_peer(kind: str, name: str, load: Load, workdir: Path, context: RunContext) -> dict[str, Any]:
    progress_path = workdir / "progress.json"
    result_path = workdir / "result.json"
    command = [
        sys.executable, "-m", PEER_MODULES[kind],
        "--bootstrap-servers", context.bootstrap_servers,
        "--topic", load.topic,
        "--group", name,
        "--target", str(load.target),
        "--progress", str(progress_path),
        "--result", str(result_path),
    ]
    output_topic = f"{name}-out"
    if kind == "c":
        command += ["--output-topic", output_topic, "--state-dir", str(workdir / "state")]
    contender = Contender(name, command, dict(os.environ), workdir / "peer.log")
    contender.start()

    def processed() -> int | None:
        progress = read_json_file(progress_path)
        return None if progress is None else int(progress["processed"])

    finished = contender.run_until(processed, load.target, context.timeout_seconds)
    progress = read_json_file(progress_path) or {}
    start = progress.get("first_at")
    if finished:
        end = progress.get("done_at")
    else:
        end = contender.samples[-1].at if contender.samples else None
    events = load.target if finished else int(progress.get("processed", 0))
    result = contender.summary(start, end, events)
    result.update({"finished": finished, "events_counted": events})

    if kind in ("a", "d") and finished:
        _wait_for_file(result_path, contender, 120.0)
    if kind == "c" and finished:
        time.sleep(2.0)  # the last closed windows are produced right after the last event
    result["exit_code"] = contender.stop()
    changelogs = asyncio.run(_peer_changelog_topics(context.bootstrap_servers, kind, name))
    records = sum(asyncio.run(end_offsets(context.bootstrap_servers, changelogs)).values())
    result["changelog_topics"] = changelogs
    result["changelog_records"] = records
    result["changelog_records_per_event"] = records / max(events, 1)
    if not finished:
        result["log_tail"] = contender.log_tail()
        result["counts_match"] = False
        result["counts"] = {"skipped": "the contender did not count every event in time"}
        return result
    result["counts"] = _peer_counts(kind, load, result_path, output_topic, context)
    result["counts_match"] = verify.passed(result["counts"])
    return result


async def _peer_changelog_topics(bootstrap_servers: str, kind: str, name: str) -> list[str]:
    if kind == "c":
        return [
            topic for topic in await topics_with_prefix(bootstrap_servers, "changelog__")
            if name in topic
        ]
    if kind == "d":
        return [
            topic for topic in await topics_with_prefix(bootstrap_servers, f"{name}-")
            if topic.endswith("-changelog")
        ]
    return []


def _wait_for_file(path: Path, contender: Contender, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and read_json_file(path) is None:
        if not contender.is_running() and read_json_file(path) is None:
            break
        time.sleep(0.2)


def _peer_counts(kind: str, load: Load, result_path: Path, output_topic: str,
                 context: RunContext) -> dict[str, Any]:
    if kind == "c":
        records: list[tuple[str, dict[str, Any]]] = []
        asyncio.run(read_topic(
            context.bootstrap_servers,
            output_topic,
            lambda record: records.append((record.key.decode(), msgspec.json.decode(record.value))),
        ))
        return verify.check_windows(load.truth, verify.quix_table(records))
    document = read_json_file(result_path)
    if document is None:
        return {"error": f"{result_path} was not written"}
    if kind == "a":
        return {"totals": verify.check_totals(load.truth, document["totals"])}
    return verify.check_windows(load.truth, verify.faust_table(document["windows"]))


def _run_worker(name: str, load: Load, workdir: Path, context: RunContext) -> dict[str, Any]:
    worker = WorkerContender(context.bootstrap_servers, name, load.topic, workdir,
                             extra_environment=context.worker_settings,
                             scrape_interval_seconds=context.scrape_interval_seconds,
                             full_scrape_interval_seconds=context.full_scrape_interval_seconds,
                             processes=context.worker_processes)
    contender = worker.contender()
    contender.start()
    finished = contender.run_until(worker.counted, load.target, context.timeout_seconds)
    start, end = worker.interval(load.target)
    counted = int(worker.history[-1][2]) if worker.history else 0
    if not finished and contender.samples:
        end = contender.samples[-1].at
    result = contender.summary(start, end, load.target if finished else counted)
    result.update({"finished": finished, "events_counted": counted,
                   "scrapes": len(worker.history),
                   "scrape_interval_seconds": context.scrape_interval_seconds,
                   "full_scrape_interval_seconds": context.full_scrape_interval_seconds,
                   "full_scrapes": worker.full_scrapes,
                   "worker_processes": context.worker_processes,
                   "scrape_seconds_median": statistics.median(worker.scrape_seconds)
                   if worker.scrape_seconds else None,
                   "scrape_seconds_max": max(worker.scrape_seconds, default=None)})
    if not finished:
        result["log_tail"] = contender.log_tail()
        result["exit_code"] = contender.stop()
        ends = asyncio.run(end_offsets(context.bootstrap_servers, worker.changelog_topics))
        result["changelog_topics"] = ends
        result["changelog_records"] = sum(ends.values())
        result["changelog_records_per_event"] = sum(ends.values()) / max(counted, 1)
        result["counts_match"] = False
        result["counts"] = {"skipped": "the worker did not count every event in time"}
        return result

    # The flush events close every window; wait until the final records stop coming.
    worker.wait_for_quiet(
        'adoption_records_published_total{kind="final"}', quiet_seconds=5.0, timeout_seconds=300.0
    )
    metrics = worker.metrics() or {}
    result["exit_code"] = contender.stop()
    written = metrics.get("adoption_changelog_records_written_total")
    ends = asyncio.run(end_offsets(context.bootstrap_servers, worker.changelog_topics))
    result.update(
        {
            "changelog_records_metric": written,
            "changelog_topics": ends,
            "changelog_records": sum(ends.values()),
            "changelog_records_per_event": sum(ends.values()) / load.events,
            "rejected": metrics.get("adoption_events_rejected_total", 0.0),
        }
    )
    table = verify.WindowTable()
    decoder = msgspec.json.Decoder()
    kinds = {"final": 0, "provisional": 0}

    def add(record: Any) -> None:
        value = decoder.decode(record.value)
        kinds["final" if value["final"] else "provisional"] += 1
        verify.add_worker_record(table, value)

    result["output_records"] = asyncio.run(read_topic(
        context.bootstrap_servers, worker.output_topic, add
    ))
    result["output_records_by_kind"] = kinds
    result["counts"] = verify.check_windows(load.truth, table)
    result["counts_match"] = verify.passed(result["counts"])
    return result
