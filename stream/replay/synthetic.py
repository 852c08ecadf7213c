"""Generated interaction events for the demo and benchmarks, when no file is given."""

import random
from collections.abc import Iterator

from stream.replay.mapping import MappedEvent
from stream.timeutil import ms_to_rfc3339

SELF_SERVICE_CHANNELS = ("knowledge_base", "faq", "chatbot", "community")
ASSISTED_CHANNELS = ("email", "phone", "live_chat", "ticket")
SEGMENTS = ("smb", "mid_market", "enterprise")


def generate_events(
    count: int,
    *,
    start_ms: int,
    span_ms: int,
    tenants: int = 5,
    start_share: float = 0.3,
    end_share: float = 0.6,
    seed: int = 7,
) -> Iterator[MappedEvent]:
    """Yield ``count`` events spread evenly over ``span_ms`` from ``start_ms``, in time order.

    The self-service share rises linearly from ``start_share`` to ``end_share``,
    so the demo shows a trend; each tenant gets its own offset from that share.
    """
    generator = random.Random(seed)
    tenant_names = [f"tenant-{number:03d}" for number in range(tenants)]
    tenant_offsets = {name: generator.uniform(-0.1, 0.1) for name in tenant_names}
    step_ms = span_ms / max(count, 1)

    for number in range(count):
        occurred_at_ms = start_ms + int(number * step_ms)
        tenant = generator.choice(tenant_names)
        progress = number / max(count - 1, 1)
        share = start_share + (end_share - start_share) * progress + tenant_offsets[tenant]
        self_service = generator.random() < min(max(share, 0.0), 1.0)
        channel = generator.choice(SELF_SERVICE_CHANNELS if self_service else ASSISTED_CHANNELS)
        event = {
            "event_id": f"demo-{seed}-{number}",
            "occurred_at": ms_to_rfc3339(occurred_at_ms),
            "channel": channel,
            "tenant": tenant,
            "customer_id": f"customer-{generator.randrange(10_000)}",
            "segment": generator.choice(SEGMENTS),
            "resolved": generator.random() < (0.7 if self_service else 0.9),
        }
        yield MappedEvent(event=event, occurred_at_ms=occurred_at_ms)
