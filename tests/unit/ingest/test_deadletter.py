from stream.ingest.deadletter import dead_letter_headers
from stream.ingest.events import Reason


def test_dead_letter_keeps_original_headers() -> None:
    original = [
        ("trace-id", b"4bf92f35"),
        ("adoption.reason", b"invalid_json"),
        ("adoption.detail", b"from an earlier rejection"),
        ("empty", None),
    ]

    headers = dead_letter_headers(
        reason=Reason.UNKNOWN_CHANNEL,
        detail="channel 'fax' is not in the channel table",
        topic="support-interactions",
        partition=2,
        offset=41,
        original=original,
    )

    assert headers == [
        ("trace-id", b"4bf92f35"),
        ("empty", None),
        ("adoption.reason", b"unknown_channel"),
        ("adoption.detail", b"channel 'fax' is not in the channel table"),
        ("adoption.source.topic", b"support-interactions"),
        ("adoption.source.partition", b"2"),
        ("adoption.source.offset", b"41"),
    ]
