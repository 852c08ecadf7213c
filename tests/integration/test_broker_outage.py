"""A worker whose broker goes away: it reports not ready, keeps running, and recovers.

The test runs its own broker, so stopping it leaves the session's broker alone.
"""

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
    wait_until,
)
from tests.integration.test_local_broker import START_TIMEOUT_SECONDS, new_broker

pytestmark = pytest.mark.integration

# /readyz turns 503 once no tick has been acknowledged for the session timeout.
SESSION_TIMEOUT = "6s"
NOT_READY_TIMEOUT_SECONDS = 40.0
RECOVERY_TIMEOUT_SECONDS = 120.0


def consumed(worker: WorkerProcess) -> float:
    return counter_value(scrape(worker), "adoption_events_consumed_total")


def test_readyz_follows_the_broker(tmp_path: Path, unique_name: Callable[[str], str]) -> None:
    broker = new_broker(tmp_path / "kafka")
    broker.start(timeout_seconds=START_TIMEOUT_SECONDS)
    worker: WorkerProcess | None = None
    try:
        deployment = Deployment.create(
            broker.bootstrap_servers,
            unique_name("outage"),
            tmp_path,
            settings={"ADOPTION_SESSION_TIMEOUT_MS": SESSION_TIMEOUT},
        )
        worker = WorkerProcess(deployment).start()
        now_ms = int(time.time() * 1000)
        produce(broker.bootstrap_servers, deployment.input_topic,
                [event(f"before-{number}", "acme", "faq", now_ms) for number in range(3)])
        assert wait_until(lambda: consumed(worker) == 3), worker.log_tail()

        broker.stop()
        assert wait_until(lambda: worker.http_status("/readyz") == 503,
                          NOT_READY_TIMEOUT_SECONDS), worker.log_tail()
        assert worker.is_running(), worker.log_tail()
        assert worker.http_status("/healthz") == 200

        broker.start(timeout_seconds=START_TIMEOUT_SECONDS)
        assert wait_until(lambda: worker.http_status("/readyz") == 200,
                          RECOVERY_TIMEOUT_SECONDS), worker.log_tail()
        now_ms = int(time.time() * 1000)
        produce(broker.bootstrap_servers, deployment.input_topic,
                [event(f"after-{number}", "acme", "faq", now_ms) for number in range(2)])
        assert wait_until(lambda: consumed(worker) == 5), worker.log_tail()
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
