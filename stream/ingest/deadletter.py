"""Dead-letter records: the original key and value, with the reason in headers."""

from stream.ingest.events import Reason

HEADER_PREFIX = "adoption."


def dead_letter_headers(
    *,
    reason: Reason,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    window: str | None = None,
    window_name: str | None = None,
) -> list[tuple[str, bytes]]:
    """Return the headers with the reason for and the source of a rejected record."""
    headers = [
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
