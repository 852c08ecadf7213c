"""The ``replay`` command: produce the events of a CSV or JSON-lines file to Kafka."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from stream.errors import AdoptionRateError
from stream.replay.mapping import load_mapping
from stream.replay.producer import replay
from stream.settings import load_settings


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {text}: must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text}: must be 1 or more")
    return value


def add_replay_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``replay`` subcommand, whose ``handler`` default runs it and returns an exit code."""
    parser = subparsers.add_parser(
        "replay",
        help="produce the events of a CSV or JSON-lines file to Kafka, in event-time order",
        description=(
            "Read FILE, map each row to an interaction event with a mapping file, sort "
            "the events by event time and produce them to the input topic. Rows that "
            "cannot be mapped are skipped and counted by reason in the final report."
        ),
    )
    parser.add_argument(
        "file", type=Path, metavar="FILE", help="input file: .csv, .jsonl or .ndjson"
    )
    parser.add_argument(
        "--mapping",
        metavar="NAME",
        help=(
            "mapping name in config/mappings (sf311, boston311) or path to a mapping "
            ".toml file, required for CSV. Without it, JSON lines must already be events"
        ),
    )
    parser.add_argument(
        "--topic", help="topic to produce to (default: the first configured input topic)"
    )
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: the configured bootstrap_servers)",
    )
    parser.add_argument(
        "--speed",
        type=_positive_float,
        metavar="X",
        help=(
            "event-time speed-up, e.g. 3600 sends one hour of event time per second "
            "(default: as fast as possible)"
        ),
    )
    parser.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="read at most N records of FILE, in file order, before sorting",
    )
    parser.add_argument(
        "--key-by",
        choices=("tenant", "customer", "none"),
        default="tenant",
        help="record key: the event's tenant, its customer_id, or no key (default: tenant)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar"
    )
    parser.set_defaults(handler=run_replay)
    return parser


def run_replay(args: argparse.Namespace) -> int:
    """Run the replay that the parsed arguments describe, print its report and return 0 or 1.

    A file with rows of which none could be mapped returns 1: that is a wrong
    mapping or file, not an empty stream.
    """
    try:
        settings = load_settings()
        mapping = load_mapping(args.mapping) if args.mapping else None
        report = asyncio.run(
            replay(
                args.file,
                mapping,
                args.bootstrap_servers or settings.bootstrap_servers,
                args.topic or settings.input_topics[0],
                speed=args.speed,
                limit=args.limit,
                key_by=args.key_by,
                progress=not args.no_progress,
            )
        )
    except AdoptionRateError as exc:
        print(f"adoption-rate replay: error: {exc}", file=sys.stderr)
        return 1
    print(report.format())
    if report.rows_read and not report.events_produced:
        reasons = ", ".join(f"{reason} ({count})" for reason, count in report.skipped.most_common(3))
        print(
            f"adoption-rate replay: error: none of the {report.rows_read} rows of {args.file} "
            f"could be mapped to an event ({reasons}): check --mapping and the file's columns",
            file=sys.stderr,
        )
        return 1
    return 0
