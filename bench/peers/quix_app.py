"""Peer (c): a minimal Quix Streams app with the worker's three hopping windows per tenant.

The windows are 5m/1m, 1h/5m and 24h/1h with 2 minutes of grace, the
worker's defaults, each a branch of one dataframe that counts all events and
sums the self-service ones. Event time comes from ``occurred_at``. Windows are
emitted with ``final()``, once closed, to an output topic. Every event updates
each window that contains it (5 + 12 + 24 = 41 window states), in RocksDB with
a changelog topic per store, which are Quix Streams' defaults.
"""

from datetime import datetime

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Sum

from bench.peers.progress import Progress, peer_arguments, self_service_channels

WINDOWS_MS = {"5m": (300_000, 60_000), "1h": (3_600_000, 300_000), "24h": (86_400_000, 3_600_000)}
GRACE_MS = 120_000


def occurred_at_ms(value: dict, headers: object, timestamp: float, timestamp_type: object) -> int:
    return int(datetime.fromisoformat(value["occurred_at"]).timestamp() * 1000)


def main() -> None:
    parser = peer_arguments(__doc__.splitlines()[0])
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap_servers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer="json",
        timestamp_extractor=occurred_at_ms,
    )
    output = app.topic(args.output_topic, key_serializer="str", value_serializer="json")
    self_service = self_service_channels()
    progress = Progress(args.progress, args.target)

    sdf = app.dataframe(topic)
    sdf = sdf.apply(lambda event: {"self_service": int(event["channel"] in self_service)})
    sdf = sdf.update(lambda _: progress.add())
    for name, (size_ms, step_ms) in WINDOWS_MS.items():
        windows = (
            sdf.hopping_window(size_ms, step_ms, grace_ms=GRACE_MS, name=f"counts-{name}")
            .agg(total=Count(), self_service=Sum("self_service"))
            .final(closing_strategy="partition")
        )
        windows = windows.apply(lambda window, name=name: {**window, "window": name})
        windows.to_topic(output)
    app.run()


if __name__ == "__main__":
    main()
