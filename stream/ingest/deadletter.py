"""Dead-letter records: the original key, value and headers, with the reason in headers."""

from collections.abc import Sequence

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
    original: Sequence[tuple[str, bytes | None]] | None = None,
) -> list[tuple[str, bytes | None]]:
    """Return the record's ``original`` headers, then the reason for and source of its rejection.

    Original headers named like the worker's own are left out: they come from
    an earlier rejection, as when dead letters are fixed and sent again, and
    would contradict the reason of this one.
    """
    headers = [
        (name, value) for name, value in original or () if not name.startswith(HEADER_PREFIX)
    ]
    headers += [
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
