"""The ``adoption-rate`` command line."""

import argparse
import logging
import sys

from stream import __version__


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every subcommand."""
    from stream.cli.broker import add_broker_commands
    from stream.cli.demo import add_demo_command
    from stream.cli.replay import add_replay_command
    from stream.cli.worker import add_worker_command

    parser = argparse.ArgumentParser(
        prog="adoption-rate",
        description="Live self-service adoption rate of customer-support interactions.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_worker_command(subparsers)
    add_replay_command(subparsers)
    add_demo_command(subparsers)
    add_broker_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
