"""The bench stops the contenders it started, however it ends."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from bench import measure, run

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_main_stops_running_contenders_when_interrupted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[measure.Contender] = []

    def interrupted_run(argv: list[str] | None) -> int:
        contender = measure.Contender("sleeper", SLEEPER, dict(os.environ), tmp_path / "log")
        contender.start()
        started.append(contender)
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_main", interrupted_run)

    with pytest.raises(KeyboardInterrupt):
        run.main([])

    assert started[0].process is not None
    assert wait_gone(started[0].process.pid)
    assert not started[0].is_running()


def test_sigterm_to_the_bench_stops_its_contenders(tmp_path: Path) -> None:
    pid_file = tmp_path / "contender.pid"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from bench import measure, run

        def long_run(argv):
            contender = measure.Contender("sleeper", {SLEEPER!r}, dict(os.environ),
                                          Path({str(tmp_path / "log")!r}))
            contender.start()
            Path({str(pid_file)!r}).write_text(str(contender.process.pid))
            time.sleep(120)
            return 0

        run._main = long_run
        try:
            run.main([])
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    bench = subprocess.Popen([sys.executable, "-c", script], cwd=Path(run.__file__).parents[1])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the bench never started its contender"
            time.sleep(0.05)
        contender_pid = int(pid_file.read_text())

        bench.send_signal(signal.SIGTERM)

        assert bench.wait(timeout=30) == 130
        assert wait_gone(contender_pid)
    finally:
        bench.kill()
        bench.wait()
