"""The ``broker start|stop|status`` commands that manage the local Kafka broker."""

import argparse
import sys
from pathlib import Path

from stream.broker.config import DEFAULT_KAFKA_VERSION
from stream.broker.local import (
    DEFAULT_PORT,
    DEFAULT_START_TIMEOUT_SECONDS,
    DEFAULT_STOP_TIMEOUT_SECONDS,
    HOME_ENV,
    LocalBroker,
)
from stream.errors import BrokerError, ConfigError

# Exit code of ``broker status`` when the broker is not running, as in LSB init scripts.
EXIT_NOT_RUNNING = 3

_HOME_HELP = f"home folder of the broker (default: ${HOME_ENV}, else <project root>/.kafka)"


def add_broker_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``broker start|stop|status`` commands.

    Each command sets ``handler``, a function that runs it and returns the exit code.
    """
    broker = subparsers.add_parser(
        "broker",
        help="run a local Kafka broker on 127.0.0.1 (for machines without Docker)",
        description="Fetch Apache Kafka with Maven and run one KRaft broker on 127.0.0.1.",
    )
    commands = broker.add_subparsers(dest="broker_command", required=True, metavar="COMMAND")

    start = commands.add_parser(
        "start",
        help="start the broker, fetching Kafka first if needed",
        description="Start the broker and wait until it responds to Kafka requests.",
    )
    start.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="client port (default: %(default)s)"
    )
    start.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="KRaft controller port (default: the client port + 1)",
    )
    start.add_argument("--home", type=Path, default=None, help=_HOME_HELP)
    start.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT_SECONDS,
        help="seconds to wait for the broker to respond after launch (default: %(default)s)",
    )
    start.add_argument(
        "--kafka-version",
        default=DEFAULT_KAFKA_VERSION,
        help="Apache Kafka 4.x version to fetch from Maven Central (default: %(default)s)",
    )
    start.set_defaults(handler=run_start)

    stop = commands.add_parser("stop", help="stop the broker", description="Stop the broker.")
    stop.add_argument("--home", type=Path, default=None, help=_HOME_HELP)
    stop.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT_SECONDS,
        help="seconds to wait after SIGTERM before SIGKILL (default: %(default)s)",
    )
    stop.set_defaults(handler=run_stop)

    status = commands.add_parser(
        "status",
        help="show whether the broker runs",
        description=(
            f"Show the broker state. The exit code is 0 if it runs, {EXIT_NOT_RUNNING} if not."
        ),
    )
    status.add_argument("--home", type=Path, default=None, help=_HOME_HELP)
    status.set_defaults(handler=run_status)


def run_start(args: argparse.Namespace) -> int:
    """Start the broker and print its bootstrap servers."""
    try:
        broker = LocalBroker(
            args.home,
            port=args.port,
            controller_port=args.controller_port,
            kafka_version=args.kafka_version,
        )
        started = broker.start(timeout_seconds=args.timeout)
        status = broker.status()
    except (BrokerError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if started:
        print(f"Kafka {status.kafka_version} broker started (pid {status.pid})")
    else:
        print(f"Kafka {status.kafka_version} broker already running (pid {status.pid})")
    print(f"bootstrap servers: {status.bootstrap_servers}")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    """Stop the broker. A broker that is not running counts as success."""
    try:
        broker = LocalBroker(args.home)
        stopped = broker.stop(timeout_seconds=args.timeout)
    except (BrokerError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("broker stopped" if stopped else f"broker of {broker.layout.home} was not running")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the broker state."""
    try:
        status = LocalBroker(args.home).status()
    except (BrokerError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if status.running:
        print(f"running: yes (pid {status.pid})")
        print(f"bootstrap servers: {status.bootstrap_servers}")
        print(f"controller port: {status.controller_port}")
        print(f"Kafka version: {status.kafka_version}")
    else:
        print("running: no")
    print(f"home: {status.home}")
    print(f"log file: {status.log_file}")
    return 0 if status.running else EXIT_NOT_RUNNING
