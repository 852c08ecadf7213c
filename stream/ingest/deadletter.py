"""Dead-letter records: the original key, value and headers, with the reason in headers."""

from collections.abc import Sequence

from stream.ingest.events import Reason, headers_size

HEADER_PREFIX = "adoption."
# A dead letter stays below this size, under Kafka's default limit of 1 MiB on
# a record and on the worker's producer batches (960 KiB).
MAX_DEAD_LETTER_BYTES = 900 * 1024

Headers = list[tuple[str, bytes | None]]


def dead_letter(
    *,
    key: bytes | None,
    value: bytes | None,
    original: Sequence[tuple[str, bytes | None]] | None,
    reason: Reason,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    window: str | None = None,
    window_name: str | None = None,
) -> tuple[bytes | None, bytes | None, Headers]:
    """Return the key, value and headers of a rejected record's dead letter.

    The headers are the record's ``original`` ones, then the reason for and
    source of its rejection. Original headers named like the worker's own are
    left out: they come from an earlier rejection, as when dead letters are
    fixed and sent again, and would contradict the reason of this one.

    A dead letter larger than ``MAX_DEAD_LETTER_BYTES`` could not be written,
    so it loses the original headers, then the value, then the key, until it
    fits. Headers such as ``adoption.value.dropped`` give the size of each
    part left out, and the source headers lead to the original record.
    """
    record_headers = [
        (name, data) for name, data in original or () if not name.startswith(HEADER_PREFIX)
    ]
    record_headers_size = headers_size(record_headers)
    headers = _reason_headers(
        reason=reason,
        detail=detail,
        topic=topic,
        partition=partition,
        offset=offset,
        window=window,
        window_name=window_name,
    )
    size = len(key or b"") + len(value or b"") + record_headers_size + headers_size(headers)
    if size > MAX_DEAD_LETTER_BYTES and record_headers:
        size -= record_headers_size
        headers.append((HEADER_PREFIX + "headers.dropped", str(len(record_headers)).encode()))
        record_headers = []
    if size > MAX_DEAD_LETTER_BYTES and value:
        size -= len(value)
        headers.append((HEADER_PREFIX + "value.dropped", str(len(value)).encode()))
        value = None
    if size > MAX_DEAD_LETTER_BYTES and key:
        headers.append((HEADER_PREFIX + "key.dropped", str(len(key)).encode()))
        key = None
    return key, value, record_headers + headers


def _reason_headers(
    *,
    reason: Reason,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    window: str | None = None,
    window_name: str | None = None,
) -> Headers:
    """Return the headers with the reason for and the source of a rejected record."""
    headers: Headers = [
        (HEADER_PREFIX + "reason", reason.value.encode()),
        (HEADER_PREFIX + "detail", detail.encode()),
        (HEADER_PREFIX + "source.topic", topic.encode()),
        (HEADER_PREFIX + "source.partition", str(partition).encode()),
        (HEADER_PREFIX + "source.offset", str(offset).encode()),
    ]
    if window is not None:
        headers.append((HEADER_PREFIX + "window", window.encode()))
    if window_name is not None:
        headers.append((HEADER_PREFIX + "window.name", window_name.encode()))
    return headers
