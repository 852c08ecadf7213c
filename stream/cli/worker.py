"""``adoption-rate worker``: run the stream worker."""

import argparse
import asyncio
import logging
import socket
import sys

from aiokafka.errors import KafkaError

from stream.errors import AdoptionRateError
from stream.settings import load_settings

logger = logging.getLogger(__name__)

EXIT_CONFIG_ERROR = 2
# EX_UNAVAILABLE from sysexits.h: a service the worker needs is not available.
EXIT_KAFKA_UNAVAILABLE = 69


def add_worker_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``worker`` subcommand."""
    parser = subparsers.add_parser(
        "worker",
        help="consume interaction events and publish adoption rates",
        description="Run the worker. Settings come from config/adoption-rate.toml and "
        "ADOPTION_* environment variables; the options below override them.",
    )
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers, host:port[,...]")
    parser.add_argument("--web-port", type=int, help="HTTP port of /metrics, /healthz, /readyz")
    parser.add_argument("--app-id", help="consumer group and prefix of internal topics")
    parser.set_defaults(handler=run_worker)


def web_port_error(host: str, port: int) -> str | None:
    """Return why the worker could not listen on ``host:port``, or None if it can.

    Faust itself reports a port in use with a traceback and exit status 1.
    """
    if port == 0:
        return None
    try:
        with socket.create_server((host, port)):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def run_worker(args: argparse.Namespace) -> int:
    """Start the worker and block until it stops."""
    overrides = {
        name: value
        for name, value in (
            ("bootstrap_servers", args.bootstrap_servers),
            ("web_port", args.web_port),
            ("app_id", args.app_id),
        )
        if value is not None
    }
    try:
        settings = load_settings(**overrides)
        from stream.worker.app import AdoptionApp
        from stream.worker.topics import ensure_topics

        service = AdoptionApp(settings)
    except AdoptionRateError as exc:
        print(f"adoption-rate worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        # Faust creates the folder itself, but not its parents.
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"adoption-rate worker: cannot create data_dir {settings.data_dir}: "
            f"{exc.strerror or exc}. Set data_dir (ADOPTION_DATA_DIR) to a writable folder",
            file=sys.stderr,
        )
        return EXIT_CONFIG_ERROR
    port_error = web_port_error(settings.web_host, settings.web_port)
    if port_error is not None:
        print(
            f"adoption-rate worker: cannot listen on {settings.web_host}:{settings.web_port}: "
            f"{port_error}. Set another web_port (ADOPTION_WEB_PORT or --web-port)",
            file=sys.stderr,
        )
        return EXIT_CONFIG_ERROR
    # The Kafka client logs each failed connection, and the error below reports it in one line.
    client_log = logging.getLogger("aiokafka")
    client_level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        asyncio.run(ensure_topics(settings))
    except AdoptionRateError as exc:
        print(f"adoption-rate worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except (KafkaError, OSError) as exc:
        print(
            f"adoption-rate worker: cannot reach Kafka at {settings.bootstrap_servers}: {exc}. "
            "Check that the broker runs, and bootstrap_servers (ADOPTION_BOOTSTRAP_SERVERS, "
            "else KAFKA_BOOTSTRAP_SERVERS, else the settings file)",
            file=sys.stderr,
        )
        return EXIT_KAFKA_UNAVAILABLE
    finally:
        client_log.setLevel(client_level)

    import faust

    worker = faust.Worker(
        service.app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()
    return 0
