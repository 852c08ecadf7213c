"""Benchmark the worker against peers on a real Kafka broker.

Phases, each optional (``--phases``):

* load: produce the events to a fresh 4-partition topic and time it (it also
  runs when only throughput is named, which reads that topic);
* throughput: contenders (a) aiokafka loop, (b) the worker, (c) Quix Streams,
  (d) Faust, one after another, each in its own process, ``--repeat`` times;
* live: the worker at a steady input rate, delay from input append to the
  first output record that includes the event;
* recovery: restart of the worker with a processed history in its changelog;
* memory: peak RSS of the worker with 1 and 3 windows and with 100 and 1,000
  tenants, then with 250 to 2,000 tenants at a fixed number of events each.

Results go to ``bench/results/<run id>.json``; ``--summarize FILE`` prints
the tables of a results file as Markdown. Start a broker first, for example
``adoption-rate broker start --port 29392 --home /tmp/bench-kafka``.
"""

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import measure, phases, summary
from bench.throughput import CONTENDERS, RunContext, run_contender
from bench.workload import load_topic
from stream.broker.config import DEFAULT_KAFKA_VERSION

logger = logging.getLogger("bench")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALL_PHASES = ("load", "throughput", "live", "recovery", "memory")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:29392",
                        help="Kafka bootstrap servers (default: %(default)s)")
    parser.add_argument("--events", type=int, default=2_000_000,
                        help="events in the throughput load (default: %(default)s)")
    parser.add_argument("--tenants", type=int, default=1_000,
                        help="tenants in the throughput load (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repetitions of the throughput phase (default: %(default)s)")
    parser.add_argument("--contenders", default="a,b,c,d",
                        help="comma-separated contenders: " + ", ".join(
                            f"{key} = {value}" for key, value in CONTENDERS.items()))
    parser.add_argument("--phases", default=",".join(ALL_PHASES),
                        help="comma-separated phases (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=1_200.0,
                        help="seconds a contender may take to count the load before it is "
                             "stopped and reported as unfinished (default: %(default)s)")
    parser.add_argument("--scrape-interval", type=float, default=0.5,
                        help="seconds between polls of the worker's counted and consumed "
                             "events (/metrics restricted by name[]) in the throughput phase "
                             "(default: %(default)s)")
    parser.add_argument("--full-scrape-interval", type=float, default=15.0,
                        help="seconds between scrapes of the worker's whole /metrics in the "
                             "throughput phase, as Prometheus with config/prometheus "
                             "(default: %(default)s)")
    parser.add_argument("--worker-processes", type=int, default=1,
                        help="worker processes of contender (b) in the throughput phase, "
                             "sharing its partitions (default: %(default)s)")
    parser.add_argument("--live-rate", type=float, default=None,
                        help="events/s of the live phase (default: half the worker's median "
                             "throughput in this run, else 2000)")
    parser.add_argument("--worker-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="an ADOPTION_* variable for every worker process of the run, "
                             "for example ADOPTION_PUBLISH_INTERVAL_MS=200ms (repeatable)")
    parser.add_argument("--live-seconds", type=float, default=60.0,
                        help="seconds of live input (default: %(default)s)")
    parser.add_argument("--recovery-events", default="1000000",
                        help="comma-separated history sizes for the recovery phase "
                             "(default: %(default)s)")
    parser.add_argument("--recovery-timeout", type=float, default=3_600.0,
                        help="seconds the worker may take to process the recovery history "
                             "(default: %(default)s)")
    parser.add_argument("--memory-events", type=int, default=200_000,
                        help="events per memory-phase run (default: %(default)s)")
    parser.add_argument("--broker-version", default=DEFAULT_KAFKA_VERSION,
                        help="Kafka version of the broker, recorded in the results "
                             "(default: %(default)s, the version `adoption-rate broker` runs)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/adoption-rate-bench"),
                        help="folder for logs, progress files and state (default: %(default)s)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="folder of the results JSON (default: bench/results)")
    parser.add_argument("--summarize", type=Path, metavar="FILE",
                        help="print the tables of a results file as Markdown and exit")
    return parser.parse_args(argv)


def worker_settings(assignments: list[str]) -> dict[str, str]:
    """Return the ``NAME=VALUE`` pairs of ``--worker-setting`` as a mapping.

    Raises SystemExit with the usage error when a pair has no ``=`` or a name
    outside ``ADOPTION_``.
    """
    settings: dict[str, str] = {}
    for assignment in assignments:
        name, separator, value = assignment.partition("=")
        if not separator or not name.startswith("ADOPTION_"):
            raise SystemExit(
                f"bench: --worker-setting {assignment!r} is invalid: use ADOPTION_NAME=VALUE"
            )
        settings[name] = value
    return settings


def machine_info() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {
        "nproc": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "cpu_model": model,
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
    }


def versions(broker_version: str) -> dict[str, str]:
    found = {"python": platform.python_version(), "kafka_broker": broker_version}
    for package in ("faust-streaming", "aiokafka", "quixstreams", "confluent-kafka",
                    "mode-streaming", "msgspec", "psutil"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def source_version() -> dict[str, Any]:
    """Return the commit of the worker's source and whether stream/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "stream"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"error": f"git failed: {exc}"}
    return {"commit": commit, "stream_has_uncommitted_changes": bool(changes)}


def save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=1, default=str))
    os.replace(temporary, path)


def median_rate(results: dict[str, Any], kind: str) -> float | None:
    """Return the median events/s of a contender, unfinished runs included."""
    rates = [
        run["events_per_second"]
        for run in results.get("throughput", {}).get(kind, [])
        if run.get("events_per_second")
    ]
    return statistics.median(rates) if rates else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen phases; on exit or SIGTERM, stop any contender still running."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)
        measure.stop_all()


def _main(argv: list[str] | None) -> int:
    args = parse_arguments(argv)
    if args.summarize:
        try:
            results = json.loads(args.summarize.read_text())
        except (OSError, ValueError) as exc:
            print(f"bench: cannot read results file {args.summarize}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(results, dict) or "run_id" not in results:
            print(f"bench: {args.summarize} is not a results file of bench.run (no run_id)",
                  file=sys.stderr)
            return 2
        print(summary.markdown(results))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "kafka", "stream", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    chosen_phases = [phase.strip() for phase in args.phases.split(",") if phase.strip()]
    unknown = sorted(set(chosen_phases) - set(ALL_PHASES))
    if unknown:
        print(f"bench: unknown phases {unknown}; choose from {list(ALL_PHASES)}", file=sys.stderr)
        return 2
    if args.worker_processes < 1:
        print("bench: --worker-processes must be at least 1", file=sys.stderr)
        return 2
    kinds = [kind.strip() for kind in args.contenders.split(",") if kind.strip()]
    if set(kinds) - set(CONTENDERS):
        print(f"bench: unknown contenders {kinds}; choose from {list(CONTENDERS)}", file=sys.stderr)
        return 2

    run_id = time.strftime("bench-%Y%m%d-%H%M%S")
    results_path = args.results_dir / f"{run_id}.json"
    context = RunContext(args.bootstrap_servers, run_id, args.workdir / run_id, args.timeout,
                         args.scrape_interval, worker_settings(args.worker_setting),
                         args.full_scrape_interval, args.worker_processes)
    results: dict[str, Any] = {
        "run_id": run_id,
        "machine": machine_info(),
        "versions": versions(args.broker_version),
        "source": source_version(),
        "arguments": {key: str(value) for key, value in vars(args).items()},
        "phases": chosen_phases,
    }
    logger.info("run %s: results in %s", run_id, results_path)
    save(results, results_path)

    load = None
    if "load" in chosen_phases or "throughput" in chosen_phases:
        load = asyncio.run(load_topic(args.bootstrap_servers, f"{run_id}-input", args.events,
                                      tenants=args.tenants))
        results["load"] = {key: value for key, value in load.to_json().items() if key != "truth"}
        logger.info("loaded %d events in %.1f s (%.0f events/s)", load.events,
                    load.load_seconds, load.events / load.load_seconds)
        save(results, results_path)

    if "throughput" in chosen_phases and load is not None:
        throughput: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        results["throughput"] = throughput
        for repetition in range(1, args.repeat + 1):
            for kind in kinds:
                throughput[kind].append(run_contender(kind, load, repetition, context))
                save(results, results_path)

    if "live" in chosen_phases:
        rate = args.live_rate or (median_rate(results, "b") or 4_000.0) / 2
        results["live"] = phases.live(context, rate, args.live_seconds, args.tenants)
        save(results, results_path)

    if "recovery" in chosen_phases:
        results["recovery"] = []
        for events in (int(text) for text in args.recovery_events.split(",") if text.strip()):
            results["recovery"].append(
                phases.recovery(context, events, args.tenants, args.recovery_timeout)
            )
            save(results, results_path)

    if "memory" in chosen_phases:
        results["memory"] = phases.memory(context, args.memory_events)
        save(results, results_path)

    print(summary.markdown(results))
    logger.info("results saved to %s", results_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
