"""Expected window counts computed straight from a CSV file, as ground truth for tests.

This module imports nothing from ``stream``. It reads the CSV with the csv
module, converts times with zoneinfo and assigns windows with its own
arithmetic. It takes the raw ``Source`` values of each class instead of the
mapping files or the channel classification. A bug in the replay's
mapping, the worker's window code or the configuration files therefore
cannot also hide in the expected numbers.

The rules match the documented behaviour of the pipeline:

* a row with an empty id, a time that does not parse or the wrong number of
  fields is not counted;
* a repeated id is counted once, at its first row in file order. The worker
  de-duplicates too, but the replay sorts by event time first, so it may keep
  another of the rows when their times differ. The 311 files have no repeated ids;
* a local time that occurs twice takes the first instant (``fold=0``), and a
  skipped local time is read with the offset before the change;
* an empty tenant cell takes ``tenant_fallback``;
* windows are half-open ``[end - window_ms, end)`` with ``end`` a multiple of
  ``step_ms`` from the epoch;
* a source value in neither set (internal or unknown) is counted in neither
  count and creates no window.
"""

import csv
from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def local_time_to_epoch_ms(text: str, time_format: str, zone: ZoneInfo) -> int:
    """Convert a local time string to epoch milliseconds, taking ``fold=0``."""
    naive = datetime.strptime(text.strip(), time_format)
    aware = naive.replace(tzinfo=zone, fold=0)
    delta = aware - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def window_ends_ms(instant_ms: int, window_ms: int, step_ms: int) -> list[int]:
    """List the ends of every window ``[end - window_ms, end)`` that contains the instant."""
    ends = []
    end_ms = (instant_ms // step_ms + 1) * step_ms
    while end_ms - window_ms <= instant_ms:
        ends.append(end_ms)
        end_ms += step_ms
    return ends


def expected_counts(
    csv_path: Path | str,
    *,
    id_column: str,
    time_column: str,
    time_format: str,
    zone: str,
    tenant_column: str,
    tenant_fallback: str,
    channel_column: str,
    self_service_values: Collection[str],
    assisted_values: Collection[str],
    window_ms: int,
    step_ms: int,
    limit: int | None = None,
    all_tenants: str | None = None,
) -> dict[tuple[str, int], tuple[int, int]]:
    """Count self-service and total interactions per tenant and window of a CSV file.

    Returns ``{(tenant, window_end_ms): (self_service, total)}`` for every
    window that contains at least one counted row. ``limit`` reads only the
    first rows in file order, like ``replay --limit``. With ``all_tenants``
    set, the sums over all tenants are added under that tenant name.
    """
    zone_info = ZoneInfo(zone)
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    seen_ids: set[str] = set()

    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        for row_index, row in enumerate(csv.DictReader(handle)):
            if limit is not None and row_index >= limit:
                break
            if None in row or None in row.values():
                continue

            event_id = (row.get(id_column) or "").strip()
            if not event_id or event_id in seen_ids:
                continue
            try:
                time_text = row.get(time_column) or ""
                instant_ms = local_time_to_epoch_ms(time_text, time_format, zone_info)
            except ValueError:
                continue
            seen_ids.add(event_id)

            source = (row.get(channel_column) or "").strip()
            if source in self_service_values:
                self_service = 1
            elif source in assisted_values:
                self_service = 0
            else:
                continue

            tenant = (row.get(tenant_column) or "").strip() or tenant_fallback
            tenants = [tenant] if all_tenants is None else [tenant, all_tenants]
            for end_ms in window_ends_ms(instant_ms, window_ms, step_ms):
                for name in tenants:
                    cell = counts[(name, end_ms)]
                    cell[0] += self_service
                    cell[1] += 1

    return {key: (cell[0], cell[1]) for key, cell in counts.items()}
