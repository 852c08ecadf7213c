"""Output records: one JSON object per tenant, window and window end."""

from typing import Any

import msgspec

from stream.ingest.channels import ChannelClass
from stream.timeutil import ms_to_rfc3339
from stream.windows.counts import WindowCounts
from stream.windows.spec import WindowSpec

SCHEMA_VERSION = 1

_encoder = msgspec.json.Encoder()
_CLASS_LABELS = {int(channel_class): channel_class.label for channel_class in ChannelClass}


def record_key(tenant: str, spec: WindowSpec) -> bytes:
    """Return the output record key: tenant and window name, so compaction keeps the newest."""
    return f"{tenant}|{spec.name}".encode()


def window_record(
    tenant: str,
    spec: WindowSpec,
    end_ms: int,
    counts: WindowCounts,
    *,
    final: bool,
    computed_at_ms: int,
) -> dict[str, Any]:
    """Build the output record of one window."""
    rate = counts.rate
    classes = counts.channel_classes
    resolution_rate = (
        counts.self_service_resolved / counts.self_service if counts.self_service else None
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant": tenant,
        "window": spec.name,
        "window_size_seconds": spec.size_ms // 1000,
        "window_step_seconds": spec.step_ms // 1000,
        "window_start": ms_to_rfc3339(end_ms - spec.size_ms),
        "window_end": ms_to_rfc3339(end_ms),
        "self_service": counts.self_service,
        "assisted": counts.assisted,
        "total": counts.total,
        "rate": rate,
        "percent": round(rate * 100, 2) if rate is not None else None,
        "self_service_resolved": counts.self_service_resolved,
        "self_service_resolution_rate": resolution_rate,
        "excluded": counts.excluded,
        "unclassified": counts.unclassified,
        "channels": {
            channel: {"count": number, "class": _CLASS_LABELS[classes[channel]]}
            for channel, number in sorted(counts.channels.items())
        },
        "final": final,
        "computed_at": ms_to_rfc3339(computed_at_ms),
    }


def encode_record(record: dict[str, Any]) -> bytes:
    """Serialise a record as compact JSON."""
    return _encoder.encode(record)
