"""Conversions between epoch milliseconds, durations and RFC 3339 text.

Inside the package every instant is an ``int`` of epoch milliseconds (UTC)
and every duration an ``int`` of milliseconds; these helpers convert at the
edges.
"""

import functools
import re
import time
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# About 100 years, far beyond any data's span: a longer grace would keep every window open.
MAX_DURATION_MS = 36_500 * 86_400_000


def parse_duration_ms(text: str | int) -> int:
    """Parse ``"5m"``, ``"90s"``, ``"24h"`` or a plain integer of milliseconds."""
    if isinstance(text, bool):
        # A TOML or JSON true would otherwise read as 1 ms.
        raise ValueError(
            f"invalid duration {text!r}: expected milliseconds or a duration like '5m'"
        )
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        duration_ms = text
    else:
        match = _DURATION.match(text)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: expected milliseconds or a number with a unit "
                "ms, s, m, h or d, like '5m'"
            )
        duration_ms = int(match.group(1)) * _UNIT_MS[match.group(2) or "ms"]
    if duration_ms > MAX_DURATION_MS:
        raise ValueError(
            f"invalid duration {text!r}: more than {MAX_DURATION_MS // _UNIT_MS['d']}d, the "
            "longest allowed"
        )
    return duration_ms


def format_duration(duration_ms: int) -> str:
    """Format milliseconds with the largest unit that divides them: 300000 -> ``"5m"``."""
    for unit in ("h", "m", "s"):
        size = _UNIT_MS[unit]
        if duration_ms and duration_ms % size == 0:
            return f"{duration_ms // size}{unit}"
    return f"{duration_ms}ms"


# Window bounds repeat across tenants and records, so formatting them is cached.
@functools.lru_cache(maxsize=8_192)
def ms_to_rfc3339(epoch_ms: int) -> str:
    """Format epoch milliseconds as RFC 3339 UTC with millisecond precision."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def wall_clock_ms() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000
