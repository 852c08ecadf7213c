"""``adoption-rate demo``: broker, worker and replay in one command, with live output."""

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer

from stream.errors import AdoptionRateError, BrokerError
from stream.replay.mapping import load_mapping
from stream.replay.producer import replay, send_events
from stream.replay.synthetic import generate_events
from stream.settings import load_settings
from stream.timeutil import wall_clock_ms

FILE_WINDOWS = "24h/24h,720h/720h,8760h/8760h"
MAPPINGS_BY_FILE_PREFIX = {"sf311": "sf311", "boston311": "boston311"}


def add_demo_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="run broker, worker and a replay, and print the rates as they change",
        description="Start the local Kafka broker unless KAFKA_BOOTSTRAP_SERVERS is set, "
        "start a worker on fresh topics, replay FILE (or generated events), and print the "
        "self-service adoption rate as the worker publishes it. Metrics are served on "
        "http://127.0.0.1:WEB_PORT/metrics while it runs.",
    )
    parser.add_argument("file", nargs="?", type=Path, help="CSV or JSON-lines file to replay")
    parser.add_argument("--mapping", help="mapping in config/mappings (guessed from FILE's name)")
    parser.add_argument(
        "--web-port",
        type=int,
        default=None,
        help="worker HTTP port (the web_port setting: ADOPTION_WEB_PORT, else 6066)",
    )
    parser.add_argument(
        "--events", type=int, default=30_000, help="generated events, without FILE (30000)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=90.0,
        help="seconds over which generated events are sent, without FILE (90)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the worker and /metrics up after the replay until Ctrl-C",
    )
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo and return the exit status."""
    started_broker: Any = None
    try:
        bootstrap_servers, started_broker = _bootstrap_servers()
        return asyncio.run(_demo(args, bootstrap_servers))
    except KeyboardInterrupt:
        return 130
    except AdoptionRateError as exc:
        print(f"adoption-rate demo: {exc}", file=sys.stderr)
        return 2
    finally:
        if started_broker is not None:
            print("stopping the local Kafka broker the demo started")
            started_broker.stop()


async def _demo(args: argparse.Namespace, bootstrap_servers: str) -> int:
    mapping = None
    if args.file is not None:
        if not args.file.is_file():
            raise AdoptionRateError(f"file {args.file} not found: pass a CSV or JSON-lines file")
        mapping_name = args.mapping or _guess_mapping(args.file)
        mapping = load_mapping(mapping_name) if mapping_name else None

    run_id = time.strftime("%Y%m%d-%H%M%S")
    app_id = f"adoption-demo-{run_id}"
    web_port = _web_port(args.web_port)
    _check_port_free(web_port)
    environment = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "ADOPTION_BOOTSTRAP_SERVERS": bootstrap_servers,
        "ADOPTION_APP_ID": app_id,
        "ADOPTION_INPUT_TOPICS": f"{app_id}-interactions",
        "ADOPTION_OUTPUT_TOPIC": f"{app_id}-rates",
        "ADOPTION_DEAD_LETTER_TOPIC": f"{app_id}-dlq",
        "ADOPTION_ALERTS_TOPIC": f"{app_id}-alerts",
        "ADOPTION_WEB_PORT": str(web_port),
        "ADOPTION_IDLE_TIMEOUT_MS": "5s",
        "ADOPTION_DATA_DIR": tempfile.mkdtemp(prefix="adoption-demo-"),
    }
    if args.file is not None:
        environment["ADOPTION_WINDOWS"] = FILE_WINDOWS
    settings = load_settings(
        bootstrap_servers=bootstrap_servers,
        app_id=app_id,
        input_topics=(environment["ADOPTION_INPUT_TOPICS"],),
        output_topic=environment["ADOPTION_OUTPUT_TOPIC"],
        dead_letter_topic=environment["ADOPTION_DEAD_LETTER_TOPIC"],
        alerts_topic=environment["ADOPTION_ALERTS_TOPIC"],
        windows=environment.get("ADOPTION_WINDOWS", "5m/1m,1h/5m,24h/1h"),
    )
    largest = max(settings.windows, key=lambda spec: spec.size_ms).name
    shown_window = largest if args.file is not None else settings.windows[0].name

    print(f"kafka: {bootstrap_servers}   app: {app_id}")
    print(f"metrics: http://127.0.0.1:{web_port}/metrics")
    worker = subprocess.Popen(
        [sys.executable, "-m", "stream", "worker"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=open(Path(environment["ADOPTION_DATA_DIR"]) / "worker.log", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    data_dir = Path(environment["ADOPTION_DATA_DIR"])
    print(f"worker log: {data_dir}/worker.log (removed when the demo ends without error)")
    failed = True
    try:
        await _wait_ready(web_port, worker)
        printer = asyncio.create_task(
            _print_records(bootstrap_servers, settings.output_topic, shown_window, settings.all_tenants)
        )
        if args.file is not None:
            report = await replay(
                args.file,
                mapping,
                bootstrap_servers,
                settings.input_topics[0],
                progress=False,
            )
            print(report.format())
        else:
            start_ms = wall_clock_ms()
            events = list(
                generate_events(args.events, start_ms=start_ms, span_ms=int(args.duration * 1000))
            )
            await _send_generated(bootstrap_servers, settings.input_topics[0], events)
        await _wait_quiet(printer, quiet_seconds=20.0, keep_running=args.keep_running)
        failed = False
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C is how a demo with --keep-running ends.
        failed = False
        raise
    finally:
        _stop(worker)
        # The state in it belongs to this run's topics, which no later run reads.
        if failed:
            print(f"the worker's log and state are kept in {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def _guess_mapping(path: Path) -> str | None:
    for prefix, name in MAPPINGS_BY_FILE_PREFIX.items():
        if path.name.startswith(prefix):
            return name
    return None


def _bootstrap_servers() -> tuple[str, Any]:
    """Return the broker to use, and the local broker if the demo started it."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get(
        "ADOPTION_BOOTSTRAP_SERVERS"
    )
    if configured:
        return configured, None
    from stream.broker.local import LocalBroker

    broker = LocalBroker()
    if broker.start():
        print(f"started the local Kafka broker ({broker.layout.home})")
        return broker.bootstrap_servers, broker
    return broker.bootstrap_servers, None


def _web_port(requested: int | None) -> int:
    """Return ``--web-port`` if given, else the web_port setting (ADOPTION_WEB_PORT or default)."""
    return requested if requested is not None else load_settings().web_port


def _check_port_free(port: int) -> None:
    """Fail unless ``port`` is free on loopback, where the demo's worker listens.

    Otherwise the readiness check could reach another process on the port
    and take it for the demo's worker.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise AdoptionRateError(
                f"web port {port} is in use ({exc.strerror}): pass --web-port with a free port"
            ) from exc


async def _wait_ready(port: int, worker: "subprocess.Popen[bytes]", timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/readyz"
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise AdoptionRateError(f"the worker exited with status {worker.returncode}: see its log")
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        await asyncio.sleep(0.5)
    raise BrokerError(f"the worker was not ready within {timeout:.0f} s: see its log")


async def _send_generated(bootstrap_servers: str, topic: str, events: list[Any]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        await send_events(producer.send, topic, events, speed=1.0, key_by="tenant")
    finally:
        await producer.stop()


async def _print_records(bootstrap_servers: str, topic: str, window: str, all_tenants: str) -> None:
    decoder = msgspec.json.Decoder()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async for message in consumer:
            if message.value is None:
                continue
            record: dict[str, Any] = decoder.decode(message.value)
            if record["window"] != window or record["tenant"] != all_tenants:
                continue
            if not record["final"] and not _closes_next(record):
                continue
            rate = record["rate"]
            shown = f"{rate * 100:5.1f}%" if rate is not None else "  n/a "
            print(
                f"{record['window_start'][:16]} .. {record['window_end'][:16]}  "
                f"self-service {shown}  ({record['self_service']} of {record['total']})  "
                f"{'final' if record['final'] else 'provisional'}",
                flush=True,
            )
    finally:
        await consumer.stop()


def _closes_next(record: dict[str, Any]) -> bool:
    """Tell whether a live window is the next to close, so overlapping windows print once."""
    end_ms = _parse_rfc3339_ms(record["window_end"])
    until_end_ms = end_ms - wall_clock_ms()
    if until_end_ms > record["window_step_seconds"] * 1000:
        return False
    # Historical windows ended long ago: print them all as they change.
    return until_end_ms > 0 or until_end_ms < -record["window_size_seconds"] * 1000


def _parse_rfc3339_ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


async def _wait_quiet(printer: "asyncio.Task[None]", *, quiet_seconds: float, keep_running: bool) -> None:
    """Wait until the worker has had time to close the last windows, or forever."""
    if keep_running:
        print("replay done; press Ctrl-C to stop")
        await printer
        return
    await asyncio.sleep(quiet_seconds)
    printer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await printer


def _stop(worker: "subprocess.Popen[bytes]") -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
