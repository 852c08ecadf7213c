"""Progress of a peer contender, written to a JSON file that the bench polls."""

import argparse
import time
import tomllib
from pathlib import Path

from bench.measure import write_json_atomically

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WRITE_EVERY_SECONDS = 0.25


def self_service_channels() -> frozenset[str]:
    """Return the self-service channels of config/channels.toml, as the worker reads them."""
    with open(PROJECT_ROOT / "config" / "channels.toml", "rb") as file:
        table = tomllib.load(file)
    return frozenset(channel.lower() for channel in table["self_service"]["channels"])


def peer_arguments(description: str) -> argparse.ArgumentParser:
    """Return the options that every peer takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True, help="input topic")
    parser.add_argument("--group", required=True, help="fresh consumer group and state prefix")
    parser.add_argument("--target", type=int, required=True, help="records to count before done")
    parser.add_argument("--progress", type=Path, required=True, help="progress JSON file")
    parser.add_argument("--result", type=Path, required=True, help="result JSON file")
    return parser


class Progress:
    """A count of processed records, written to the progress file with wall-clock times."""

    def __init__(self, path: Path, target: int) -> None:
        self.path = path
        self.target = target
        self.processed = 0
        self.first_at: float | None = None
        self.done_at: float | None = None
        self._written_at = 0.0

    def add(self, number: int = 1) -> bool:
        """Count ``number`` records; return True once the target is reached."""
        if self.first_at is None:
            self.first_at = time.time()
        self.processed += number
        if self.done_at is None and self.processed >= self.target:
            self.done_at = time.time()
            self.write()
        elif time.monotonic() - self._written_at >= WRITE_EVERY_SECONDS:
            self.write()
        return self.done_at is not None

    def write(self) -> None:
        self._written_at = time.monotonic()
        write_json_atomically(
            self.path,
            {"processed": self.processed, "first_at": self.first_at, "done_at": self.done_at},
        )
