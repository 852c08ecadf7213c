"""The one-command demo on the real San Francisco 311 sample."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream.broker.process import free_ports

pytestmark = pytest.mark.integration

DATA_FILE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sf311_cases_sample.csv"
FINAL_LINE = re.compile(
    r"^(\d{4})-\d\d-\d\dT\d\d:\d\d \.\. \S+\s+self-service\s+([\d.]+)%\s+\((\d+) of (\d+)\)\s+final$"
)


def test_demo_shows_share_rising_over_years(kafka_bootstrap: str) -> None:
    if not DATA_FILE.is_file():
        pytest.skip(f"{DATA_FILE} is absent: the real 311 data lives in ../shared/data")

    completed = subprocess.run(
        [sys.executable, "-m", "stream", "demo", str(DATA_FILE),
         "--web-port", str(free_ports(1)[0])],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # The worker's folder of this run is removed once the demo ends well.
    log_line = re.search(r"^worker log: (.+)/worker\.log ", completed.stdout, re.MULTILINE)
    assert log_line is not None, completed.stdout[:3000]
    assert not Path(log_line.group(1)).exists()

    finals = [FINAL_LINE.match(line) for line in completed.stdout.splitlines()]
    shares = {int(match.group(1)): float(match.group(2)) for match in finals if match}
    counted = sum(int(match.group(4)) for match in finals if match)

    assert len(shares) >= 8, completed.stdout[-3000:]
    # Self-service plus assisted rows of the sample: all but the 428 internal ones.
    assert counted == 9572
    assert shares[min(shares)] < 1.0
    assert shares[2014] > 45.0
    assert shares[2014] > shares[2011] > shares[min(shares)]

