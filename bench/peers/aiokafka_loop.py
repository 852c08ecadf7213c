"""Peer (a): a minimal aiokafka loop that fetches, decodes JSON and counts per tenant and minute.

It keeps no state beyond a dictionary, writes no changelog and publishes
nothing, so it marks the practical ceiling of a Python consumer here. JSON is
decoded with msgspec, as the worker does.
"""

import asyncio
import time
from datetime import datetime

import msgspec
from aiokafka import AIOKafkaConsumer

from bench.measure import write_json_atomically
from bench.peers.progress import Progress, peer_arguments, self_service_channels


async def run(bootstrap_servers: str, topic: str, group: str, progress: Progress) -> dict:
    self_service = self_service_channels()
    decode = msgspec.json.decode
    parse_time = datetime.fromisoformat
    counts: dict[tuple[str, int], list[int]] = {}
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        done = False
        while not done:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                if progress.first_at is None:
                    progress.first_at = time.time()
                for record in records:
                    event = decode(record.value)
                    minute = int(parse_time(event["occurred_at"]).timestamp()) // 60
                    key = (event.get("tenant") or "default", minute)
                    bucket = counts.get(key)
                    if bucket is None:
                        bucket = counts[key] = [0, 0]
                    bucket[0] += 1
                    if event["channel"] in self_service:
                        bucket[1] += 1
                done = progress.add(len(records)) or done
    finally:
        await consumer.stop()

    totals: dict[str, list[int]] = {}
    for (tenant, _), (total, self_service_count) in counts.items():
        tenant_totals = totals.setdefault(tenant, [0, 0])
        tenant_totals[0] += total
        tenant_totals[1] += self_service_count
    return {"totals": totals, "minute_buckets": len(counts)}


def main() -> None:
    args = peer_arguments(__doc__.splitlines()[0]).parse_args()
    progress = Progress(args.progress, args.target)
    result = asyncio.run(run(args.bootstrap_servers, args.topic, args.group, progress))
    write_json_atomically(args.result, result)


if __name__ == "__main__":
    main()
