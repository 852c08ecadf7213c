"""Replay each real 311 file through the broker and the worker, and check every final record.

The expected counts come from :mod:`tests.truth`, which reads the CSV with
plain Python and shares no code with the service.
"""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stream.replay.mapping import load_mapping
from stream.replay.producer import replay
from tests.integration.harness import Deployment, WorkerProcess, consume_until, final_records
from tests.truth import expected_counts

pytestmark = pytest.mark.integration

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HOUR_MS = 3_600_000
WINDOWS = {"720h": (720 * HOUR_MS, 720 * HOUR_MS), "8760h": (8760 * HOUR_MS, 8760 * HOUR_MS),
           "168h": (168 * HOUR_MS, 24 * HOUR_MS)}

LAYOUTS: dict[str, dict[str, Any]] = {
    "sf311": {
        "file": "sf311_cases_sample.csv",
        "truth": {
            "id_column": "CaseID",
            "time_column": "Opened",
            "time_format": "%m/%d/%Y %I:%M:%S %p",
            "zone": "America/Los_Angeles",
            "tenant_column": "Supervisor.District",
            "tenant_fallback": "unknown",
            "channel_column": "Source",
            "self_service_values": {"Open311", "Web Self Service"},
            "assisted_values": {"Voice In", "Twitter", "e-mail In", "Mail In"},
        },
    },
    "boston311": {
        "file": "boston311_street_light_outages_2015.csv",
        "truth": {
            "id_column": "CASE_ENQUIRY_ID",
            "time_column": "OPEN_DT",
            "time_format": "%m/%d/%Y %I:%M:%S %p",
            "zone": "America/New_York",
            "tenant_column": "neighborhood",
            "tenant_fallback": "unknown",
            "channel_column": "Source",
            "self_service_values": {"Citizens Connect App", "Self Service"},
            "assisted_values": {"Constituent Call", "Twitter"},
        },
    },
}


def _rfc3339(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


@pytest.fixture
def deployment(kafka_bootstrap: str, unique_name: Any, tmp_path: Path) -> Iterator[Deployment]:
    yield Deployment.create(
        kafka_bootstrap,
        unique_name("real"),
        tmp_path,
        settings={"ADOPTION_WINDOWS": "720h/720h,8760h/8760h,168h/24h"},
    )


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_real_file_final_counts_match_csv(layout: str, deployment: Deployment) -> None:
    source = DATA_DIR / LAYOUTS[layout]["file"]
    if not source.is_file():
        pytest.skip(f"{source} is absent: the real 311 data lives in ../shared/data")

    expected: dict[tuple[str, str, str], tuple[int, int]] = {}
    for window, (size_ms, step_ms) in WINDOWS.items():
        counts = expected_counts(
            source, window_ms=size_ms, step_ms=step_ms, all_tenants="*",
            **LAYOUTS[layout]["truth"],
        )
        for (tenant, end_ms), value in counts.items():
            expected[(tenant, window, _rfc3339(end_ms))] = value
    assert len(expected) > 100

    worker = WorkerProcess(deployment).start()
    try:
        report = asyncio.run(
            replay(source, load_mapping(layout), deployment.bootstrap_servers,
                   deployment.input_topic, progress=False)
        )
        assert report.rows_skipped == 0

        records = consume_until(
            deployment.bootstrap_servers,
            [deployment.output_topic],
            lambda records: set(expected) <= set(final_records(records)),
            timeout=180,
        )
    finally:
        worker.stop()

    finals = final_records(records)
    missing = sorted(set(expected) - set(finals))
    assert not missing, f"{len(missing)} windows have no final record, first {missing[:5]}"

    wrong = {
        key: (expected[key], (finals[key]["self_service"], finals[key]["total"]))
        for key in expected
        if (finals[key]["self_service"], finals[key]["total"]) != expected[key]
    }
    assert not wrong, f"{len(wrong)} windows differ (expected, got): {list(wrong.items())[:5]}"

    for key, record in finals.items():
        if key not in expected:
            assert record["total"] == 0, f"unexpected counted window {key}: {record}"
            assert record["rate"] is None
        else:
            self_service, total = expected[key]
            assert record["rate"] == pytest.approx(self_service / total)
