"""One contender in its own process: start, sample CPU and memory, stop.

CPU time is user plus system seconds of the process and all its descendants,
including children that have exited and been waited for. Memory is sampled
every ``SAMPLE_SECONDS``: the resident set size (RSS) summed over the process
tree, and the peak RSS so far, summed over the tree from each process's
``VmHWM`` in ``/proc/<pid>/status`` (Linux). For a contender of one process the
peak is exact; for several it is an upper bound.
"""

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

SAMPLE_SECONDS = 0.5

# Contenders run in sessions of their own, so a signal to the bench does not
# reach them. The bench stops those still running when it exits.
_running: "set[Contender]" = set()


def stop_all(timeout_seconds: float = 60.0) -> None:
    """Stop every contender still running."""
    for contender in list(_running):
        contender.stop(timeout_seconds)


@dataclass(slots=True)
class Sample:
    """One observation of a contender: wall time, progress, CPU seconds and RSS bytes."""

    at: float
    progress: int
    cpu_seconds: float
    rss_bytes: int
    peak_rss_bytes: int


def peak_rss(pid: int) -> int:
    """Return the peak RSS of a process in bytes from ``VmHWM``, or 0 where it is unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_usage(process: psutil.Process) -> tuple[float, int, int]:
    """Return CPU seconds (user + system, waited children included), RSS and peak RSS of a tree."""
    cpu = 0.0
    rss = 0
    peak = 0
    members = [process]
    try:
        members += process.children(recursive=True)
    except psutil.NoSuchProcess:
        return cpu, rss, peak
    for member in members:
        try:
            times = member.cpu_times()
            memory = member.memory_info()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        cpu += times.user + times.system + times.children_user + times.children_system
        rss += memory.rss
        peak += max(peak_rss(member.pid), memory.rss)
    return cpu, rss, peak


def interpolate(samples: Sequence[Sample], at: float, attribute: str) -> float:
    """Return ``attribute`` of the samples linearly interpolated at wall time ``at``."""
    before = [sample for sample in samples if sample.at <= at]
    after = [sample for sample in samples if sample.at >= at]
    if not before:
        return float(getattr(samples[0], attribute))
    if not after:
        return float(getattr(samples[-1], attribute))
    low, high = before[-1], after[0]
    if high.at == low.at:
        return float(getattr(low, attribute))
    share = (at - low.at) / (high.at - low.at)
    low_value = float(getattr(low, attribute))
    return low_value + share * (float(getattr(high, attribute)) - low_value)


@dataclass(eq=False)
class Contender:
    """A contender process and the samples taken while it ran."""

    name: str
    command: Sequence[str]
    environment: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    samples: list[Sample] = field(default_factory=list)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        self.started_at = time.time()
        self.process = subprocess.Popen(
            list(self.command),
            env=dict(self.environment),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _running.add(self)
        log.close()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def sample(self, progress: int) -> Sample:
        assert self.process is not None
        try:
            cpu, rss, peak = tree_usage(psutil.Process(self.process.pid))
        except psutil.NoSuchProcess:
            cpu, rss, peak = (self.samples[-1].cpu_seconds, 0, 0) if self.samples else (0.0, 0, 0)
        sample = Sample(time.time(), progress, cpu, rss, peak)
        self.samples.append(sample)
        return sample

    def run_until(
        self,
        progress: Callable[[], int | None],
        target: int,
        timeout_seconds: float,
    ) -> bool:
        """Sample until ``progress()`` reaches ``target``; return False on timeout or exit."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            value = progress()
            self.sample(value or 0)
            if value is not None and value >= target:
                return True
            if not self.is_running():
                return False
            time.sleep(SAMPLE_SECONDS)
        return False

    def stop(self, timeout_seconds: float = 60.0) -> int | None:
        """Stop the process group with SIGTERM, then SIGKILL; return the exit code."""
        if self.process is None:
            return None
        _running.discard(self)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def summary(self, start: float | None, end: float | None, events: int) -> dict[str, Any]:
        """Return rate, CPU and memory over the processing interval ``[start, end]``."""
        samples = self.samples
        result: dict[str, Any] = {
            "peak_rss_bytes": max((sample.peak_rss_bytes for sample in samples), default=0),
            "cpu_seconds_total": samples[-1].cpu_seconds if samples else None,
            "samples": len(samples),
        }
        if start is None or end is None or end <= start or not samples:
            return result
        in_interval = [sample for sample in samples if sample.at <= end]
        cpu = interpolate(samples, end, "cpu_seconds") - interpolate(samples, start, "cpu_seconds")
        result.update(
            {
                "peak_rss_bytes": max((s.peak_rss_bytes for s in in_interval), default=0),
                "seconds": end - start,
                "startup_seconds": start - self.started_at,
                "events_per_second": events / (end - start),
                "cpu_seconds": cpu,
                "events_per_cpu_second": events / cpu if cpu > 0 else None,
                "cpu_cores_used": cpu / (end - start),
            }
        )
        return result


def read_json_file(path: Path) -> dict[str, Any] | None:
    """Return the JSON object in ``path``, or None while it is missing or half written."""
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json_atomically(path: Path, document: object) -> None:
    """Write JSON to a temporary file and rename it, so readers never see half a file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)
