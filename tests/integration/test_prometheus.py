"""Scrape a real worker with a real Prometheus server and check what it stores.

The Prometheus server is Debian's ``prometheus`` binary on a free loopback
port. It finds the worker through a file of targets and scrapes ``/metrics``
every second. The window gauges describe the newest window that has ended by
the event-time clock of the tenant's partition. Several tests therefore give
the worker one input partition and an idle timeout longer than the test, so
that once the input stops the clock stays at the newest event time and the
gauges stay on one known window.
"""

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream.broker.process import free_ports
from stream.replay.mapping import load_mapping
from stream.replay.producer import replay
from stream.settings import parse_windows
from stream.timeutil import ms_to_rfc3339
from tests.integration.harness import (
    Deployment,
    WorkerProcess,
    consume_until,
    event,
    final_records,
    produce,
)

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SF311_FILE = DATA_DIR / "sf311_cases_sample.csv"

PROMETHEUS_MISSING = "prometheus not installed: apt-get install prometheus"
PROMTOOL_MISSING = "promtool not installed: apt-get install prometheus"
PROMETHEUS_START_TIMEOUT_SECONDS = 60.0
PROMETHEUS_STOP_TIMEOUT_SECONDS = 30.0
SCRAPE_TIMEOUT_SECONDS = 60.0
CONDITION_TIMEOUT_SECONDS = 90.0

HOUR_MS = 3_600_000
# Longer than any test, so the input never counts as idle and the clock never
# moves on to the wall clock.
NEVER_IDLE = "1h"

T = TypeVar("T")


def create_deployment(
    bootstrap_servers: str, name: str, workdir: Path, windows: str, **settings: str
) -> Deployment:
    """Create a deployment with one input partition and the given windows."""
    return Deployment.create(
        bootstrap_servers,
        name,
        workdir,
        input_partitions=1,
        settings={
            "ADOPTION_WINDOWS": windows,
            # The in-stream alerts must watch one of the configured windows.
            "ADOPTION_ALERT_WINDOW": parse_windows(windows)[0].name,
            **settings,
        },
    )


# Waiting and parsing


def wait_for(
    probe: Callable[[], T | None],
    description: str,
    *,
    timeout: float = CONDITION_TIMEOUT_SECONDS,
    interval: float = 0.5,
    details: Callable[[], str] = lambda: "",
) -> T:
    """Call ``probe`` until it returns something other than ``None`` or false, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {description}\n{details()}"
            )
        time.sleep(interval)


def metric_samples(body: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Return the labels and value of every sample named ``name`` in a /metrics body."""
    found: list[tuple[dict[str, str], float]] = []
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                found.append((dict(sample.labels), float(sample.value)))
    return found


def by_tenant(body: str, name: str, **match: str) -> dict[str, float]:
    """Return the samples of ``name`` whose labels include ``match``, keyed by tenant."""
    return {
        labels["tenant"]: value
        for labels, value in metric_samples(body, name)
        if all(labels.get(key) == wanted for key, wanted in match.items())
    }


# The Prometheus server


@dataclass
class PrometheusServer:
    """A Prometheus process that scrapes the targets written to ``targets_file``."""

    url: str
    targets_file: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def scrape(self, worker: WorkerProcess) -> str:
        """Make the worker the only scrape target and wait for a successful scrape.

        Returns the target's ``instance`` label.
        """
        instance = f"127.0.0.1:{worker.web_port}"
        staging = self.targets_file.with_suffix(".tmp")
        staging.write_text(json.dumps([{"targets": [instance]}]))
        # A rename replaces the file in one step, so Prometheus never reads half of it.
        staging.replace(self.targets_file)
        wait_for(
            lambda: self.values(f'up{{instance="{instance}"}}') == [1.0],
            f"a successful scrape of {instance}",
            timeout=SCRAPE_TIMEOUT_SECONDS,
            details=lambda: (
                f"last scrape error: {self.scrape_error(instance)}\n"
                f"worker log:\n{worker.log_tail(20)}\nprometheus log:\n{self.log_tail()}"
            ),
        )
        return instance

    def scrape_error(self, instance: str) -> str:
        """Return the error of the target's last scrape, as the targets API reports it."""
        address = f"{self.url}/api/v1/targets"
        with urllib.request.urlopen(address, timeout=10) as response:  # noqa: S310 - loopback only
            document = json.load(response)
        for target in document["data"]["activeTargets"]:
            if target["labels"].get("instance") == instance:
                return str(target["lastError"]) or "(none)"
        return "(target not found)"

    def query(self, expression: str) -> list[dict[str, Any]]:
        """Run an instant query through the HTTP API and return its result vector."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(address, timeout=10) as response:  # noqa: S310 - loopback only
            document = json.load(response)
        assert document["status"] == "success", f"query {expression!r} failed: {document}"
        assert document["data"]["resultType"] == "vector", document
        result: list[dict[str, Any]] = document["data"]["result"]
        return result

    def values(self, expression: str) -> list[float]:
        """Return the values of an instant query's result, in the order Prometheus returns them."""
        return [float(item["value"][1]) for item in self.query(expression)]

    def gauges(self, name: str, instance: str, *label_names: str) -> dict[tuple[str, ...], float]:
        """Return the current series of a metric of one target, keyed by the given label values."""
        return {
            tuple(item["metric"].get(label, "") for label in label_names): float(item["value"][1])
            for item in self.query(f'{name}{{instance="{instance}"}}')
        }

    def last_successful_scrape(self, instance: str) -> float | None:
        """Return the time, in Unix seconds, of the target's latest scrape if it succeeded."""
        # timestamp() returns the sample's time only for a plain selector. Prometheus
        # 2.42 returns the query's evaluation time for timestamp(up == 1).
        selector = f'up{{instance="{instance}"}}'
        found = self.values(f"timestamp({selector}) and on(instance) {selector} == 1")
        return found[0] if found else None

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the server's log."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _prometheus_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:  # noqa: S310
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A Prometheus server on a free loopback port that scrapes every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(PROMETHEUS_MISSING)

    home = tmp_path / "prometheus"
    home.mkdir()
    targets_file = home / "targets.json"
    targets_file.write_text("[]")
    config_file = home / "prometheus.yml"
    # JSON is valid YAML, so the configuration needs no YAML writer.
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "adoption-rate",
                "metrics_path": "/metrics",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            }
        ],
    }
    config_file.write_text(json.dumps(config, indent=2))

    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log_path = home / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={home / 'data'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(url, targets_file, log_path, process)
    try:
        deadline = time.monotonic() + PROMETHEUS_START_TIMEOUT_SECONDS
        while not _prometheus_ready(url):
            if process.poll() is not None:
                raise AssertionError(
                    f"prometheus exited with {process.returncode}:\n{server.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"prometheus not ready within {PROMETHEUS_START_TIMEOUT_SECONDS:.0f} s:\n"
                    f"{server.log_tail()}"
                )
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=PROMETHEUS_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=PROMETHEUS_STOP_TIMEOUT_SECONDS)


# Workers


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """A list for the test's started workers, which are stopped at teardown."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


class LiveProducer:
    """Sends one event of a tenant, stamped with the current time, every ``interval`` seconds."""

    def __init__(self, bootstrap_servers: str, topic: str, tenant: str, interval: float) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.tenant = tenant
        self.interval = interval
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"live-{tenant}", daemon=True)

    def __enter__(self) -> "LiveProducer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        if self.error is not None:
            raise AssertionError(f"live producer of {self.tenant} failed") from self.error

    def _run(self) -> None:
        try:
            asyncio.run(self._send_until_stopped())
        except BaseException as exc:  # noqa: BLE001 - re-raised by __exit__ in the test thread
            self.error = exc

    async def _send_until_stopped(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all")
        await producer.start()
        try:
            while not self._stop.is_set():
                value = event(
                    f"{self.tenant}-{self.sent}",
                    self.tenant,
                    "faq" if self.sent % 2 else "phone",
                    int(time.time() * 1000),
                )
                await producer.send_and_wait(self.topic, value, key=self.tenant.encode())
                self.sent += 1
                await asyncio.sleep(self.interval)
        finally:
            await producer.stop()


# Tests


def test_real_file_rates_match_output_records(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    prometheus: PrometheusServer,
    workers: list[WorkerProcess],
) -> None:
    if not SF311_FILE.is_file():
        pytest.skip(f"{SF311_FILE} is absent: the San Francisco 311 sample lives in ../shared/data")

    # Steps of a month or a week keep the output of the file's eight years small.
    windows = {"720h": 720 * HOUR_MS, "2160h": 720 * HOUR_MS, "168h": 168 * HOUR_MS}  # name: step
    deployment = create_deployment(
        kafka_bootstrap,
        unique_name("prom-sf311"),
        tmp_path,
        "720h/720h,2160h/720h,168h/168h",
        ADOPTION_GRACE_MS="0s",
        ADOPTION_IDLE_TIMEOUT_MS=NEVER_IDLE,
        # At least the grace plus one slice, which is one day here.
        ADOPTION_DEDUP_HORIZON_MS="24h",
    )
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    instance = prometheus.scrape(worker)

    report = asyncio.run(
        replay(SF311_FILE, load_mapping("sf311"), kafka_bootstrap, deployment.input_topic,
               progress=False)
    )
    assert report.events_produced > 1000
    assert report.last_event_ms is not None

    # The clock stops at the newest event time, so the gauge of each window size
    # shows the window that ends at the last step boundary before it. With no
    # grace, that window is final, and its all-tenants record is the last to be final.
    newest_ms = report.last_event_ms
    ends = {name: ms_to_rfc3339(newest_ms - newest_ms % step) for name, step in windows.items()}
    records = consume_until(
        kafka_bootstrap,
        [deployment.output_topic],
        lambda found: all(("*", name, end) in final_records(found) for name, end in ends.items()),
        timeout=180,
    )
    settled_at = time.time()
    finals = final_records(records)
    missing = [("*", name, end) for name, end in ends.items() if ("*", name, end) not in finals]
    assert not missing, f"no final all-tenants record for {missing}:\n{worker.log_tail()}"

    expected = {
        (record["tenant"], name): record
        for (_, name, end), record in finals.items()
        if ends.get(name) == end and record["total"] > 0
    }
    assert len({tenant for tenant, _ in expected}) > 5
    assert {name for _, name in expected} == set(windows)

    wait_for(
        lambda: (prometheus.last_successful_scrape(instance) or 0.0) > settled_at,
        "a successful scrape after the last final record",
        timeout=SCRAPE_TIMEOUT_SECONDS,
    )

    def read_gauges() -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
        return (
            prometheus.gauges("self_service_adoption_ratio", instance, "tenant", "window"),
            prometheus.gauges("self_service_interactions", instance, "tenant", "window"),
            prometheus.gauges("support_interactions", instance, "tenant", "window"),
        )

    def gauges_match() -> bool:
        ratios, self_service, totals = read_gauges()
        return set(ratios) == set(expected) and all(
            self_service[key] == record["self_service"] and totals[key] == record["total"]
            for key, record in expected.items()
        )

    # On a loaded machine a scrape can still catch a partition's clock one tick
    # behind, so the gauges get a few scrapes to settle before the checks.
    deadline = time.monotonic() + SCRAPE_TIMEOUT_SECONDS
    while not gauges_match() and time.monotonic() < deadline:
        time.sleep(1.0)
    ratios, self_service, totals = read_gauges()

    assert set(ratios) == set(expected)
    for key, record in expected.items():
        assert ratios[key] == pytest.approx(record["rate"]), key
        assert self_service[key] == record["self_service"], key
        assert totals[key] == record["total"], key


def test_metrics_pass_promtool_check(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(PROMTOOL_MISSING)

    deployment = create_deployment(
        kafka_bootstrap,
        unique_name("prom-lint"),
        tmp_path,
        "10s",
        ADOPTION_GRACE_MS="0s",
        ADOPTION_IDLE_TIMEOUT_MS=NEVER_IDLE,
    )
    worker = WorkerProcess(deployment).start()
    workers.append(worker)

    # Fill every family with samples: counted events, a duplicate and two rejections.
    base_ms = int(time.time() * 1000) - 60_000
    base_ms -= base_ms % 10_000
    produce(
        kafka_bootstrap,
        deployment.input_topic,
        [
            event("lint-1", "acme", "faq", base_ms + 1_000),
            event("lint-2", "acme", "phone", base_ms + 2_000),
            event("lint-2", "acme", "phone", base_ms + 2_000),
            b"{not json",
            event("lint-3", "acme", "carrier_pigeon", base_ms + 3_000),
            event("lint-4", "acme", "faq", base_ms + 12_000),
        ],
    )

    def populated() -> str | None:
        body = worker.metrics_text()
        needed = (
            "self_service_adoption_ratio",
            "support_channel_interactions",
            "adoption_events_duplicate_total",
            "adoption_events_rejected_total",
            "adoption_newest_event_age_seconds",
        )
        return body if all(metric_samples(body, name) for name in needed) else None

    body = wait_for(populated, "samples of every metric family", details=worker.log_tail)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), body


def test_tenants_beyond_limit_fold_into_other(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    deployment = create_deployment(
        kafka_bootstrap,
        unique_name("prom-fold"),
        tmp_path,
        "10s",
        ADOPTION_GRACE_MS="0s",
        ADOPTION_IDLE_TIMEOUT_MS=NEVER_IDLE,
        ADOPTION_MAX_TENANT_SERIES="2",
    )
    worker = WorkerProcess(deployment).start()
    workers.append(worker)

    # Four tenants for two labels, so "other" must add up two tenants.
    counts = {"north": (1, 2), "south": (2, 3), "east": (3, 5), "west": (5, 8)}  # self, assisted
    base_ms = int(time.time() * 1000) - 60_000
    base_ms -= base_ms % 10_000
    values: list[bytes] = []
    for tenant, (self_count, assisted_count) in counts.items():
        channels = ["faq"] * self_count + ["phone"] * assisted_count
        for number, channel in enumerate(channels):
            occurred_at = base_ms + 100 * len(values)
            values.append(event(f"{tenant}-{number}", tenant, channel, occurred_at))
    # One event in the next window moves the clock past the end of the first.
    values.append(event("north-clock", "north", "faq", base_ms + 12_000))
    produce(kafka_bootstrap, deployment.input_topic, values)

    grand_total = sum(sum(pair) for pair in counts.values())

    def complete() -> str | None:
        body = worker.metrics_text()
        totals = by_tenant(body, "support_interactions", window="10s")
        return body if totals.get("*") == grand_total and "other" in totals else None

    def last_totals() -> str:
        totals = by_tenant(worker.metrics_text(), "support_interactions", window="10s")
        return f"support_interactions by tenant: {totals}\n{worker.log_tail(20)}"

    body = wait_for(complete, f"support_interactions of * = {grand_total} and of other",
                    details=last_totals)

    totals = by_tenant(body, "support_interactions", window="10s")
    self_service = by_tenant(body, "self_service_interactions", window="10s")
    ratios = by_tenant(body, "self_service_adoption_ratio", window="10s")
    named = set(totals) - {"other", "*"}
    folded = set(counts) - named
    assert len(named) == 2, totals
    assert named <= set(counts), totals
    assert set(totals) == named | {"other", "*"}

    for tenant in named:
        assert self_service[tenant] == counts[tenant][0], tenant
        assert totals[tenant] == sum(counts[tenant]), tenant
    other_self_service = sum(counts[tenant][0] for tenant in folded)
    other_total = sum(sum(counts[tenant]) for tenant in folded)
    assert self_service["other"] == other_self_service
    assert totals["other"] == other_total
    assert ratios["other"] == pytest.approx(other_self_service / other_total)
    assert self_service["*"] == sum(self_count for self_count, _ in counts.values())

    channel_samples = [
        (labels, value)
        for labels, value in metric_samples(body, "support_channel_interactions")
        if labels["tenant"] == "other"
    ]
    assert {labels["channel"]: value for labels, value in channel_samples} == {
        "faq": other_self_service,
        "phone": other_total - other_self_service,
    }
    ages = by_tenant(body, "adoption_newest_event_age_seconds")
    assert set(ages) - {"*"} == named | {"other"}

    # A tenant keeps the label it got first.
    later = worker.metrics_text()
    assert set(by_tenant(later, "support_interactions", window="10s")) == named | {"other", "*"}

    # name[] parameters restrict the response to the series named.
    restricted = worker.metrics_text(
        "?name[]=adoption_events_counted_total&name[]=adoption_events_consumed_total"
    )
    families = {family.name for family in text_string_to_metric_families(restricted)}
    assert families == {"adoption_events_counted", "adoption_events_consumed"}, restricted
    assert metric_samples(restricted, "adoption_events_counted_total") == [
        ({}, float(len(values)))
    ]
    gauges = worker.metrics_text("?name[]=support_interactions")
    families = {family.name for family in text_string_to_metric_families(gauges)}
    assert families == {"support_interactions"}, gauges
    assert by_tenant(gauges, "support_interactions", window="10s") == totals
    # A blank name is ignored, as prometheus_client's own handlers do.
    assert "adoption_events_counted_total" in worker.metrics_text("?name[]=")


def test_silent_tenant_series_leave_metrics(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    prometheus: PrometheusServer,
    workers: list[WorkerProcess],
) -> None:
    # The grace of 20 s keeps the silent tenant's slices, and so its newest-event
    # age, for 30 to 35 s after its last event, well after its 10 s windows end.
    deployment = create_deployment(
        kafka_bootstrap, unique_name("prom-silent"), tmp_path, "10s/5s", ADOPTION_GRACE_MS="20s"
    )
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    instance = prometheus.scrape(worker)
    quiet = f'self_service_adoption_ratio{{instance="{instance}",tenant="quiet",window="10s"}}'

    # The steady tenant keeps the input active, so the clock follows the wall clock.
    with LiveProducer(kafka_bootstrap, deployment.input_topic, "steady", 0.5):
        burst_ms = int(time.time() * 1000)
        produce(
            kafka_bootstrap,
            deployment.input_topic,
            [
                event(f"quiet-{n}", "quiet", "faq" if n % 4 else "email", burst_ms + n)
                for n in range(20)
            ],
        )
        newest_quiet_ms = burst_ms + 19

        wait_for(lambda: prometheus.values(quiet) == [0.75],
                 "the quiet tenant's rate in prometheus", details=worker.log_tail)

        def quiet_gone() -> str | None:
            body = worker.metrics_text()
            ratios = by_tenant(body, "self_service_adoption_ratio", window="10s")
            return body if "quiet" not in ratios and "steady" in ratios else None

        body = wait_for(quiet_gone, "the quiet tenant's rate to leave /metrics",
                        details=worker.log_tail)
        for name in ("self_service_interactions", "support_interactions"):
            assert "quiet" not in by_tenant(body, name), name
        assert all(
            labels["tenant"] != "quiet"
            for labels, _ in metric_samples(body, "support_channel_interactions")
        )

        # Prometheus marks the series stale at its next scrape, while the steady
        # tenant's series from the same scrape shows that the scrape succeeded.
        def tenants_in_prometheus() -> set[str]:
            found = prometheus.gauges("self_service_adoption_ratio", instance, "tenant", "window")
            return {tenant for tenant, window in found if window == "10s"} - {"*"}

        wait_for(
            lambda: tenants_in_prometheus() == {"steady"},
            "prometheus to drop the quiet tenant's rate but keep the steady one's",
            timeout=SCRAPE_TIMEOUT_SECONDS,
        )

        ages: list[float] = []
        for _ in range(3):
            before_ms = int(time.time() * 1000)
            age = by_tenant(worker.metrics_text(), "adoption_newest_event_age_seconds").get("quiet")
            after_ms = int(time.time() * 1000)
            assert age is not None, "the quiet tenant's newest-event age left with its rate"
            assert (before_ms - newest_quiet_ms) / 1000 - 0.001 <= age
            assert age <= (after_ms - newest_quiet_ms) / 1000 + 0.001
            ages.append(age)
            time.sleep(1.1)
        assert ages == sorted(ages), ages
        assert ages[0] < ages[-1], ages
        assert len(prometheus.values(
            f'adoption_newest_event_age_seconds{{instance="{instance}",tenant="quiet"}}'
        )) == 1


def test_readiness_follows_partition_assignment(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    prometheus: PrometheusServer,
    workers: list[WorkerProcess],
) -> None:
    deployment = create_deployment(kafka_bootstrap, unique_name("prom-ready"), tmp_path, "10s")
    worker = WorkerProcess(deployment)
    workers.append(worker)
    worker.start(wait_ready=False)

    # Poll from the start: the web server responds before the consumer group has
    # assigned the partitions, and /readyz must return 503 until then.
    statuses: list[int | None] = []
    deadline = time.monotonic() + CONDITION_TIMEOUT_SECONDS
    while not statuses or statuses[-1] != 200:
        assert worker.is_running(), worker.log_tail()
        assert time.monotonic() < deadline, f"/readyz: {statuses[-20:]}\n{worker.log_tail()}"
        statuses.append(worker.http_status("/readyz"))
        time.sleep(0.05)
    assert "partitions assigned" in worker.log_path.read_text(errors="replace")
    responses = [status for status in statuses if status is not None]
    assert 503 in responses, f"no 503 from /readyz before it became ready: {statuses}"
    assert set(responses[:-1]) == {503}, statuses

    instance = prometheus.scrape(worker)
    produce(
        kafka_bootstrap,
        deployment.input_topic,
        [event(f"ready-{number}", "acme", "faq", int(time.time() * 1000)) for number in range(5)],
    )
    consumed = f'adoption_events_consumed_total{{instance="{instance}"}}'
    wait_for(lambda: prometheus.values(consumed) == [5.0], "5 consumed events in prometheus",
             details=worker.log_tail)
    assert worker.http_status("/healthz") == 200
    assert worker.http_status("/readyz") == 200
    ready = f'adoption_worker_ready{{instance="{instance}"}}'
    # The worker updates this gauge on a 5 s timer.
    wait_for(lambda: prometheus.values(ready) == [1.0], "adoption_worker_ready 1 in prometheus")


def test_all_tenants_gauge_after_pause(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    # Tenants spread over the counting partitions. Once the input pauses,
    # their clocks follow the wall clock into windows that got no new event,
    # but still hold the burst: the all-tenants gauge must show it there.
    deployment = create_deployment(
        kafka_bootstrap,
        unique_name("prom-pause"),
        tmp_path,
        "2m/10s",
        ADOPTION_GRACE_MS="10m",
        ADOPTION_IDLE_TIMEOUT_MS="2s",
    )
    worker = WorkerProcess(deployment).start()
    workers.append(worker)

    now_ms = int(time.time() * 1000)
    tenants = [f"tenant-{index}" for index in range(8)]
    values = [
        event(f"{tenant}-{number}", tenant, channel, now_ms - 30_000 + 700 * (index + number))
        for index, tenant in enumerate(tenants)
        for number, channel in enumerate(["faq", "chatbot", "phone"][: 1 + index % 3])
    ]
    produce(kafka_bootstrap, deployment.input_topic, values)

    def following_wall_clock() -> str | None:
        # Partitions without tenants have no clock and no lag sample.
        body = worker.metrics_text()
        lags = [value for _, value in metric_samples(body, "adoption_event_time_lag_seconds")]
        counted = metric_samples(body, "adoption_events_counted_total")
        done = counted == [({}, float(len(values)))] and lags and max(lags) < 2
        return body if done else None

    wait_for(following_wall_clock, "every counting partition's clock to follow the wall clock",
             details=worker.log_tail)
    # Across a step boundary of the window, so the gauge moves to a window
    # that no event changed.
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        totals = by_tenant(worker.metrics_text(), "support_interactions", window="2m")
        assert set(totals) == {*tenants, "*"}, totals
        assert totals["*"] == len(values) == sum(totals[tenant] for tenant in tenants)
        time.sleep(0.5)


def test_all_tenants_series_follow_the_clock(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    deployment = create_deployment(
        kafka_bootstrap,
        unique_name("prom-all"),
        tmp_path,
        "10s/5s",
        ADOPTION_GRACE_MS="1s",
        ADOPTION_IDLE_TIMEOUT_MS="10s",
    )
    worker = WorkerProcess(deployment).start()
    workers.append(worker)

    # Two hours old: once the input is idle, the clock moves to the wall clock,
    # the newest ended window contains no event and the tenant's slices expire.
    old_ms = int(time.time() * 1000) - 2 * HOUR_MS
    produce(
        kafka_bootstrap,
        deployment.input_topic,
        [event(f"old-{number}", "solo", "faq", old_ms + number) for number in range(20)],
    )

    def solo_age_present() -> dict[str, float] | None:
        ages = by_tenant(worker.metrics_text(), "adoption_newest_event_age_seconds")
        return ages if "solo" in ages else None

    # The clock stays at the events' time until the idle timeout passes.
    counted = wait_for(solo_age_present, "the solo tenant's newest-event age",
                       details=worker.log_tail)
    # The TenantTrafficStopped alert also matches tenant="*".
    assert "*" in counted

    end_ms = old_ms - old_ms % 5_000 + 10_000
    consume_until(
        kafka_bootstrap,
        [deployment.output_topic],
        lambda found: ("*", "10s", ms_to_rfc3339(end_ms)) in final_records(found),
    )

    def solo_rate_gone() -> str | None:
        body = worker.metrics_text()
        return body if "solo" not in by_tenant(body, "self_service_adoption_ratio") else None

    body = wait_for(
        solo_rate_gone, "the solo tenant's rate to leave /metrics", details=worker.log_tail
    )
    # Its silence still shows: the newest-event age outlives the expired slices.
    assert by_tenant(body, "adoption_newest_event_age_seconds")["solo"] > 2 * 3600 - 60
    wait_for(
        lambda: "*" not in by_tenant(worker.metrics_text(), "self_service_adoption_ratio"),
        "the all-tenants rate to leave /metrics like the solo tenant's",
        timeout=20,
    )
