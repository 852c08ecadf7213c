"""Peer (d): a straightforward Faust app with hopping windowed tables, updated per event.

This is what most users write first: a ``faust.Record`` model, one
``app.Table(...).hopping(...)`` per window size, relative to the event's
``occurred_at``, and ``table[tenant] += 1`` for every event (plus a
``<tenant>|self_service`` key for self-service events). Every update of a
hopping table writes one changelog record per window that contains the event.

The tables expire windows after two days: Faust judges expiry against the
wall clock, so a shorter expiry would drop the generated events' windows, which
lie more than a day in the past, before they are compared.
"""

import argparse
from datetime import datetime, timedelta
from typing import Any

import faust

from bench.measure import write_json_atomically
from bench.peers.progress import Progress, peer_arguments, self_service_channels

WINDOWS = {"5m": (300, 60), "1h": (3_600, 300), "24h": (86_400, 3_600)}
PARTITIONS = 4


class Interaction(faust.Record, serializer="json", isodates=True):
    event_id: str
    occurred_at: datetime
    channel: str
    tenant: str = "default"
    customer_id: str | None = None
    segment: str | None = None
    resolved: bool | None = None


def build_app(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap_servers}",
        store="memory://",
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
        datadir=f"/tmp/bench-faust-{args.group}",
    )
    topic = app.topic(args.topic, key_type=bytes, value_type=Interaction)
    tables = {
        name: app.Table(f"counts-{name}", default=int, partitions=PARTITIONS)
        .hopping(size, step, expires=timedelta(days=2))
        .relative_to_field(Interaction.occurred_at)
        for name, (size, step) in WINDOWS.items()
    }
    self_service = self_service_channels()
    progress = Progress(args.progress, args.target)

    @app.agent(topic)
    async def count(stream: faust.StreamT[Interaction]) -> None:
        async for event in stream:
            is_self_service = event.channel in self_service
            for table in tables.values():
                table[event.tenant] += 1
                if is_self_service:
                    table[f"{event.tenant}|self_service"] += 1
            if progress.add():
                write_json_atomically(args.result, dump(tables))
                progress.target = 2**62  # dump once

    return app


def dump(tables: dict[str, Any]) -> dict[str, Any]:
    """Return every window of every table as ``{window: [[key, start, end, count], ...]}``."""
    windows: dict[str, list[list[object]]] = {}
    for name, wrapper in tables.items():
        rows = windows.setdefault(name, [])
        for (key, (start, end)), value in wrapper.table.data.items():
            rows.append([key, start, end, value])
    return {"windows": windows}


def main() -> None:
    args = peer_arguments(__doc__.splitlines()[0]).parse_args()
    app = build_app(args)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
