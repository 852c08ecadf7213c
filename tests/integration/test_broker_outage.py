"""A worker whose broker goes away: it reports not ready, keeps running, and recovers.

The test runs its own broker, so stopping it leaves the session's broker alone.
"""

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import (
    Deployment,
    WorkerProcess,
    counter_value,
    event,
    produce,
    scrape,
    values_of,
    wait_until,
)
from tests.integration.test_local_broker import START_TIMEOUT_SECONDS, new_broker

pytestmark = pytest.mark.integration

# /readyz turns 503 once no tick has been acknowledged for the session timeout.
SESSION_TIMEOUT_SECONDS = 6
TICK_INTERVAL_SECONDS = 0.3
NOT_READY_TIMEOUT_SECONDS = 40.0
RECOVERY_TIMEOUT_SECONDS = 120.0
# The Kafka client logs each failed connection and request while the broker
# is down. The worker lets ten records of each message through a minute.
MAX_LOG_LINES_DURING_OUTAGE = 300


# A client that retries at once after each failed request keeps a whole core
# busy, while an idle worker uses far less.
MAX_CORES_WHILE_BROKER_DOWN = 0.5
CPU_SAMPLE_SECONDS = 5.0


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counted(worker: WorkerProcess) -> float:
    return counter_value(scrape(worker), "adoption_events_counted_total")


def log_lines(worker: WorkerProcess) -> list[str]:
    return worker.log_path.read_text(errors="replace").splitlines()


def test_readyz_follows_the_broker(tmp_path: Path, unique_name: Callable[[str], str]) -> None:
    broker = new_broker(tmp_path / "kafka")
    broker.start(timeout_seconds=START_TIMEOUT_SECONDS)
    worker: WorkerProcess | None = None
    try:
        deployment = Deployment.create(
            broker.bootstrap_servers,
            unique_name("outage"),
            tmp_path,
            settings={
                "ADOPTION_SESSION_TIMEOUT_MS": f"{SESSION_TIMEOUT_SECONDS}s",
                "ADOPTION_TICK_INTERVAL_MS": f"{int(TICK_INTERVAL_SECONDS * 1000)}ms",
            },
        )
        worker = WorkerProcess(deployment).start()
        now_ms = int(time.time() * 1000)
        produce(broker.bootstrap_servers, deployment.input_topic,
                [event(f"before-{number}", "acme", "faq", now_ms) for number in range(3)])
        assert wait_until(lambda: counted(worker) == 3), worker.log_tail()
        assert worker.http_status("/readyz") == 200

        lines_before = len(log_lines(worker))
        stopped_at = time.monotonic()
        broker.stop()
        assert wait_until(lambda: worker.http_status("/readyz") == 503,
                          NOT_READY_TIMEOUT_SECONDS), worker.log_tail()
        not_ready_after = time.monotonic() - stopped_at
        # A scrape reads the readiness of the moment, not of the gauge timer's last run.
        assert values_of(scrape(worker), "adoption_worker_ready") == [0.0]
        # The broker takes a few seconds to stop, and the rest is the session timeout.
        assert not_ready_after <= SESSION_TIMEOUT_SECONDS + 15
        assert worker.is_running(), worker.log_tail()
        assert worker.http_status("/healthz") == 200
        assert wait_until(
            lambda: any("failed to write watermark ticks" in line for line in log_lines(worker)),
            timeout=30,
        ), worker.log_tail()
        assert worker.process is not None
        before = cpu_seconds(worker.process.pid)
        time.sleep(CPU_SAMPLE_SECONDS)
        cores = (cpu_seconds(worker.process.pid) - before) / CPU_SAMPLE_SECONDS
        assert cores < MAX_CORES_WHILE_BROKER_DOWN, f"{cores:.2f} cores with the broker down"

        broker.start(timeout_seconds=START_TIMEOUT_SECONDS)
        outage_lines = log_lines(worker)[lines_before:]
        assert len(outage_lines) <= MAX_LOG_LINES_DURING_OUTAGE, "\n".join(outage_lines[-40:])
        assert wait_until(lambda: worker.http_status("/readyz") == 200,
                          RECOVERY_TIMEOUT_SECONDS), worker.log_tail()
        assert wait_until(
            lambda: values_of(scrape(worker), "adoption_worker_ready") == [1.0], timeout=30
        )
        now_ms = int(time.time() * 1000)
        produce(broker.bootstrap_servers, deployment.input_topic,
                [event(f"after-{number}", "acme", "faq", now_ms) for number in range(2)])
        assert wait_until(lambda: counted(worker) == 5), worker.log_tail()
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
