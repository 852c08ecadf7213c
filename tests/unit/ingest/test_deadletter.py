from typing import Any

from stream.ingest.deadletter import MAX_DEAD_LETTER_BYTES, dead_letter
from stream.ingest.events import Reason

SOURCE: dict[str, Any] = {
    "reason": Reason.UNKNOWN_CHANNEL,
    "detail": "channel 'fax' is not in the channel table",
    "topic": "support-interactions",
    "partition": 2,
    "offset": 41,
}
REASON_HEADERS = [
    ("adoption.reason", b"unknown_channel"),
    ("adoption.detail", b"channel 'fax' is not in the channel table"),
    ("adoption.source.topic", b"support-interactions"),
    ("adoption.source.partition", b"2"),
    ("adoption.source.offset", b"41"),
]


def test_dead_letter_keeps_original_headers() -> None:
    original = [
        ("trace-id", b"4bf92f35"),
        ("adoption.reason", b"invalid_json"),
        ("adoption.detail", b"from an earlier rejection"),
        ("empty", None),
    ]

    key, value, headers = dead_letter(key=b"k", value=b"{}", original=original, **SOURCE)

    assert (key, value) == (b"k", b"{}")
    assert headers == [("trace-id", b"4bf92f35"), ("empty", None), *REASON_HEADERS]


def test_oversized_dead_letter_drops_headers_first() -> None:
    # A record below Kafka's limit, whose dead letter would not be.
    value = b"x" * (MAX_DEAD_LETTER_BYTES - 1000)
    original = [("blob", b"y" * 2000), ("trace-id", b"4bf92f35")]

    key, kept_value, headers = dead_letter(key=b"k", value=value, original=original, **SOURCE)

    assert (key, kept_value) == (b"k", value)
    assert headers == [*REASON_HEADERS, ("adoption.headers.dropped", b"2")]


def test_oversized_dead_letter_drops_value_next() -> None:
    value = b"x" * (MAX_DEAD_LETTER_BYTES + 1)

    key, kept_value, headers = dead_letter(
        key=b"k", value=value, original=[("trace-id", b"4bf92f35")], **SOURCE
    )

    assert (key, kept_value) == (b"k", None)
    assert headers == [
        *REASON_HEADERS,
        ("adoption.headers.dropped", b"1"),
        ("adoption.value.dropped", str(len(value)).encode()),
    ]
