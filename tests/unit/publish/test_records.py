"""Tests of the output records: their fields, times and null rate."""

import json
import re
from datetime import UTC, datetime
from typing import Any

from stream.ingest.channels import ChannelClass
from stream.publish.records import SCHEMA_VERSION, encode_record, record_key, window_record
from stream.windows.counts import RESOLVED_BASE, WindowCounts
from stream.windows.spec import WindowSpec

FIVE_MINUTES = WindowSpec(name="5m", size_ms=300_000, step_ms=300_000)
ONE_HOUR = WindowSpec(name="1h", size_ms=3_600_000, step_ms=300_000)
END_MS = 1_748_873_100_000  # 2025-06-02T14:05:00Z
COMPUTED_AT_MS = END_MS + 123_456
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$")


def counts(slice_counts: dict[tuple[int, str], int]) -> WindowCounts:
    result = WindowCounts()
    result.add_slice(slice_counts)
    return result


def encoded_record(
    spec: WindowSpec, window_counts: WindowCounts, *, final: bool = True
) -> dict[str, Any]:
    """Build a record and read it back from its JSON bytes, as a consumer would."""
    record = window_record(
        "t1", spec, END_MS, window_counts, final=final, computed_at_ms=COMPUTED_AT_MS
    )
    decoded: dict[str, Any] = json.loads(encode_record(record))
    return decoded


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_window_record_fields() -> None:
    window_counts = counts(
        {
            (int(ChannelClass.SELF_SERVICE), "chatbot"): 2,
            (int(ChannelClass.ASSISTED), "phone"): 1,
            (int(ChannelClass.EXCLUDED), "internal"): 4,
            (int(ChannelClass.UNCLASSIFIED), "fax_machine"): 5,
            (RESOLVED_BASE + int(ChannelClass.SELF_SERVICE), ""): 1,
        }
    )

    record = encoded_record(FIVE_MINUTES, window_counts)

    assert record["schema_version"] == SCHEMA_VERSION
    assert record["tenant"] == "t1"
    assert record["window"] == "5m"
    assert record["window_size_seconds"] == 300
    assert record["window_step_seconds"] == 300
    assert record["self_service"] == 2
    assert record["assisted"] == 1
    assert record["total"] == 3
    assert record["rate"] == 2 / 3
    assert record["percent"] == 66.67
    assert record["self_service_resolved"] == 1
    assert record["self_service_resolution_rate"] == 0.5
    assert record["excluded"] == 4
    assert record["unclassified"] == 5
    assert record["final"] is True


def test_window_record_times_utc() -> None:
    record = encoded_record(ONE_HOUR, counts({(int(ChannelClass.SELF_SERVICE), "faq"): 1}))

    assert RFC3339_UTC.match(record["window_start"]), record["window_start"]
    assert RFC3339_UTC.match(record["window_end"]), record["window_end"]
    assert RFC3339_UTC.match(record["computed_at"]), record["computed_at"]
    assert parse_utc(record["window_start"]) == datetime(2025, 6, 2, 13, 5, tzinfo=UTC)
    assert parse_utc(record["window_end"]) == datetime(2025, 6, 2, 14, 5, tzinfo=UTC)
    assert parse_utc(record["computed_at"]) == datetime(2025, 6, 2, 14, 7, 3, 456_000, tzinfo=UTC)
    assert record["window_size_seconds"] == 3_600
    assert record["window_step_seconds"] == 300


def test_window_record_before_1970() -> None:
    record = window_record(
        "t1", FIVE_MINUTES, -300_000, WindowCounts(), final=True, computed_at_ms=-1
    )

    assert record["window_start"] == "1969-12-31T23:50:00.000Z"
    assert record["window_end"] == "1969-12-31T23:55:00.000Z"
    assert record["computed_at"] == "1969-12-31T23:59:59.999Z"


def test_window_record_no_rate_without_total() -> None:
    window_counts = counts(
        {
            (int(ChannelClass.EXCLUDED), "internal"): 2,
            (int(ChannelClass.UNCLASSIFIED), "fax_machine"): 1,
        }
    )

    record = encoded_record(FIVE_MINUTES, window_counts, final=False)

    assert record["total"] == 0
    assert record["rate"] is None
    assert record["percent"] is None
    assert record["self_service_resolution_rate"] is None
    assert record["final"] is False


def test_window_record_rate_zero_with_data() -> None:
    record = encoded_record(FIVE_MINUTES, counts({(int(ChannelClass.ASSISTED), "phone"): 3}))

    assert record["rate"] == 0.0
    assert record["percent"] == 0.0


def test_window_record_channels_with_class() -> None:
    window_counts = counts(
        {
            (int(ChannelClass.SELF_SERVICE), "chatbot"): 2,
            (int(ChannelClass.ASSISTED), "phone"): 1,
            (int(ChannelClass.EXCLUDED), "internal"): 4,
            (int(ChannelClass.UNCLASSIFIED), "fax_machine"): 5,
        }
    )

    record = encoded_record(FIVE_MINUTES, window_counts)

    assert record["channels"] == {
        "chatbot": {"count": 2, "class": "self_service"},
        "fax_machine": {"count": 5, "class": "unclassified"},
        "internal": {"count": 4, "class": "excluded"},
        "phone": {"count": 1, "class": "assisted"},
    }


def test_record_key_tenant_and_window() -> None:
    assert record_key("t1", FIVE_MINUTES) == b"t1|5m"
    assert record_key("*", ONE_HOUR) == b"*|1h"
