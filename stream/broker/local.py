"""One Apache Kafka KRaft broker on loopback, for machines without a Docker engine.

The broker runs from jars that Maven fetches from Maven Central into the home
folder (``<project root>/.kafka`` by default, or ``ADOPTION_BROKER_HOME``). It is
a detached Java process that outlives the Python process which started it, and
its pid is kept in ``broker.pid`` so that a later ``stop()`` finds it.

Example::

    broker = LocalBroker(port=9092)
    broker.start(timeout_seconds=120)   # fetches the jars on first use
    print(broker.bootstrap_servers)     # 127.0.0.1:9092
    broker.stop()
"""

import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.broker.admin import probe_broker
from stream.broker.config import (
    DEFAULT_KAFKA_VERSION,
    BrokerLayout,
    render_log4j_config,
    render_server_properties,
)
from stream.broker.fetch import ensure_jars, find_java
from stream.broker.process import (
    command_line,
    file_size,
    is_alive,
    port_accepts,
    port_in_use,
    read_pid,
    tail,
)
from stream.errors import BrokerError, ConfigError
from stream.settings import PROJECT_ROOT

logger = logging.getLogger(__name__)

HOME_ENV = "ADOPTION_BROKER_HOME"
DEFAULT_PORT = 9092
DEFAULT_HEAP_MAX = "1g"
DEFAULT_START_TIMEOUT_SECONDS = 120.0
DEFAULT_STOP_TIMEOUT_SECONDS = 30.0
KILL_WAIT_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 0.5
LOG_TAIL_LINES = 20

# Java is started through sh, so it is not a child of this process. Python then
# keeps no zombie after the broker exits and does not warn about a running child.
_LAUNCH_SCRIPT = 'log=$1; shift; "$@" </dev/null >"$log" 2>&1 & echo $!'


def default_home() -> Path:
    """Return ``ADOPTION_BROKER_HOME`` if set, else ``<project root>/.kafka``."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return PROJECT_ROOT / ".kafka"


def random_cluster_id() -> str:
    """Return a KRaft cluster id: 16 random bytes in URL-safe base64 without padding.

    This is the format of ``kafka-storage random-uuid``. The id contains no
    dash, because a command-line tool may read a leading dash as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if "-" not in cluster_id:
            return cluster_id


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """State of a local broker as read from its home folder and the process table."""

    running: bool
    pid: int | None
    port: int
    controller_port: int
    kafka_version: str
    home: Path
    log_file: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


class LocalBroker:
    """Fetch, format, start and stop one combined KRaft broker and controller on 127.0.0.1.

    ``home`` contains the config, data, logs and pid file of this broker.
    ``cache_dir`` contains the jars and defaults to ``home``. Several homes
    can share one cache, so that the jars are fetched once.
    """

    def __init__(
        self,
        home: Path | str | None = None,
        *,
        port: int = DEFAULT_PORT,
        controller_port: int | None = None,
        kafka_version: str = DEFAULT_KAFKA_VERSION,
        cache_dir: Path | str | None = None,
        heap_max: str = DEFAULT_HEAP_MAX,
    ) -> None:
        home_path = Path(home).expanduser().resolve() if home is not None else default_home()
        cache_path = Path(cache_dir).expanduser().resolve() if cache_dir is not None else home_path
        try:
            self.layout = BrokerLayout(
                home=home_path,
                cache_dir=cache_path,
                port=port,
                controller_port=controller_port if controller_port is not None else port + 1,
                kafka_version=kafka_version,
            )
        except ValueError as exc:
            raise ConfigError(f"invalid local broker settings: {exc}") from exc
        self.heap_max = heap_max
        # Size of server.log when this object last launched Java, so that error
        # messages quote only what that run wrote.
        self._server_log_offset = 0

    @property
    def bootstrap_servers(self) -> str:
        return self.layout.bootstrap_servers

    def status(self) -> BrokerStatus:
        """Return whether the broker of this home runs, with its pid, ports and version."""
        layout = self.layout
        pid = self._running_pid()
        state = self._read_state() if pid is not None else {}
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            port=int(state.get("port", layout.port)),
            controller_port=int(state.get("controller_port", layout.controller_port)),
            kafka_version=str(state.get("kafka_version", layout.kafka_version)),
            home=layout.home,
            log_file=layout.server_log,
        )

    def start(self, timeout_seconds: float = DEFAULT_START_TIMEOUT_SECONDS) -> bool:
        """Start the broker and wait until it responds to Kafka metadata requests.

        On first use this fetches the jars and formats the storage. Neither
        step counts against ``timeout_seconds``, which limits only the wait
        for the broker to respond. Returns False if the broker of this home
        was already running. It blocks the calling thread and runs its own
        event loop, so call it outside a running one.
        """
        layout = self.layout
        current = self.status()
        if current.running and current.pid is not None:
            if current.port != layout.port:
                raise BrokerError(
                    f"the broker of {layout.home} already runs on port {current.port} "
                    f"(pid {current.pid}), not on the requested port {layout.port}; stop it "
                    "first or use another home folder"
                )
            logger.info(
                "Kafka broker already running at %s (pid %d)",
                current.bootstrap_servers,
                current.pid,
            )
            self._wait_until_ready(current.pid, time.monotonic() + timeout_seconds)
            return False

        if layout.pid_file.exists():
            logger.warning(
                "removing stale pid file %s: its process is not this home's broker",
                layout.pid_file,
            )
        self._remove_run_files()
        self._check_ports_free()
        java = find_java()
        libs_dir = ensure_jars(layout)
        self._write_config()
        self._format_storage(java, libs_dir)
        pid = self._launch(java, libs_dir)

        try:
            self._wait_until_ready(pid, time.monotonic() + timeout_seconds)
        except BrokerError:
            if is_alive(pid):
                logger.error("Kafka broker (pid %d) did not become ready; stopping it", pid)
                self._terminate(pid, DEFAULT_STOP_TIMEOUT_SECONDS)
            self._remove_run_files()
            raise
        logger.info(
            "Kafka %s broker started at %s (pid %d, home %s)",
            layout.kafka_version,
            layout.bootstrap_servers,
            pid,
            layout.home,
        )
        return True

    def stop(self, timeout_seconds: float = DEFAULT_STOP_TIMEOUT_SECONDS) -> bool:
        """Stop the broker with SIGTERM, or SIGKILL after ``timeout_seconds``.

        Returns False if it was not running. Removes the pid file either way.
        """
        pid = self._running_pid()
        if pid is None:
            self._remove_run_files()
            logger.info("Kafka broker of %s is not running", self.layout.home)
            return False
        self._terminate(pid, timeout_seconds)
        self._remove_run_files()
        logger.info("Kafka broker stopped (pid %d, home %s)", pid, self.layout.home)
        return True

    def _running_pid(self) -> int | None:
        """Return the pid from the pid file if that process is this home's broker."""
        pid = read_pid(self.layout.pid_file)
        if pid is None or not is_alive(pid):
            return None
        # A pid from an old file may now belong to another program.
        command = command_line(pid)
        if command is not None:
            ours = "kafka.Kafka" in command and str(self.layout.properties_file) in command
            if not ours:
                return None
        return pid

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.layout.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return state if isinstance(state, dict) else {}

    def _remove_run_files(self) -> None:
        self.layout.pid_file.unlink(missing_ok=True)
        self.layout.state_file.unlink(missing_ok=True)

    def _check_ports_free(self) -> None:
        layout = self.layout
        for name, port in (("client", layout.port), ("controller", layout.controller_port)):
            if port_in_use(port):
                raise BrokerError(
                    f"port {port} on 127.0.0.1 is already in use by another process, so the "
                    f"broker cannot open its {name} listener there; stop that process or "
                    "choose another port (--port, --controller-port)"
                )

    def _write_config(self) -> None:
        layout = self.layout
        layout.logs_dir.mkdir(parents=True, exist_ok=True)
        layout.data_dir.mkdir(parents=True, exist_ok=True)
        layout.properties_file.write_text(render_server_properties(layout))
        layout.log4j_file.write_text(render_log4j_config(layout))

    def _java_command(self, java: str, libs_dir: Path, main_class: str) -> list[str]:
        """Return the java command line for ``main_class``; only the broker gets ``heap_max``."""
        heap_options = [f"-Xmx{self.heap_max}"] if main_class == "kafka.Kafka" else []
        return [
            java,
            *heap_options,
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.layout.log4j_file}",
            f"-Dkafka.logs.dir={self.layout.logs_dir}",
            "-cp",
            str(libs_dir / "*"),
            main_class,
        ]

    def _format_storage(self, java: str, libs_dir: Path) -> None:
        """Format the KRaft data folder unless an earlier start already did."""
        layout = self.layout
        if (layout.data_dir / "meta.properties").exists():
            return
        cluster_id = random_cluster_id()
        command = self._java_command(java, libs_dir, "kafka.tools.StorageTool")
        command += ["format", "-t", cluster_id, "-c", str(layout.properties_file)]
        logger.info("formatting KRaft storage in %s (cluster id %s)", layout.data_dir, cluster_id)
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=120, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"formatting KRaft storage in {layout.data_dir} timed out after 120 s"
            ) from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            last_lines = "\n".join(output[-LOG_TAIL_LINES:]) or "(no output)"
            raise BrokerError(
                f"formatting KRaft storage in {layout.data_dir} failed (exit code "
                f"{result.returncode}); delete that folder if it is left over from another "
                f"Kafka version. Last lines of the output:\n{last_lines}"
            )

    def _launch(self, java: str, libs_dir: Path) -> int:
        """Start Java in its own session, detached from this process, and record its pid."""
        layout = self.layout
        command = self._java_command(java, libs_dir, "kafka.Kafka") + [str(layout.properties_file)]
        self._server_log_offset = file_size(layout.server_log)
        try:
            result = subprocess.run(
                ["sh", "-c", _LAUNCH_SCRIPT, "sh", str(layout.console_log), *command],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
                start_new_session=True,
            )
            pid = int(result.stdout.strip())
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            raise BrokerError(f"failed to launch the Kafka broker with {command}: {exc}") from exc

        layout.pid_file.write_text(f"{pid}\n")
        state = {
            "pid": pid,
            "port": layout.port,
            "controller_port": layout.controller_port,
            "kafka_version": layout.kafka_version,
        }
        layout.state_file.write_text(json.dumps(state, indent=2) + "\n")
        logger.info("launched Kafka broker (pid %d), waiting for %s", pid, layout.bootstrap_servers)
        return pid

    def _wait_until_ready(self, pid: int, deadline: float) -> None:
        layout = self.layout
        started_at = time.monotonic()
        while True:
            if not is_alive(pid):
                raise BrokerError(
                    f"Kafka broker (pid {pid}) exited during start; read the logs in "
                    f"{layout.logs_dir}.\n{self._log_tails()}"
                )
            if port_accepts(layout.port) and asyncio.run(probe_broker(layout.bootstrap_servers)):
                return
            if time.monotonic() >= deadline:
                waited_seconds = time.monotonic() - started_at
                raise BrokerError(
                    f"Kafka broker (pid {pid}) did not respond on {layout.bootstrap_servers} "
                    f"within {waited_seconds:.0f} s; raise the timeout (--timeout) or read the "
                    f"logs in {layout.logs_dir}.\n{self._log_tails()}"
                )
            time.sleep(POLL_INTERVAL_SECONDS)

    def _log_tails(self) -> str:
        server_log = self.layout.server_log
        console_log = self.layout.console_log
        server_tail = tail(server_log, LOG_TAIL_LINES, start_offset=self._server_log_offset)
        console_tail = tail(console_log, LOG_TAIL_LINES)
        return (
            f"Last lines of {server_log}:\n{server_tail}\n"
            f"Last lines of {console_log}:\n{console_tail}"
        )

    def _terminate(self, pid: int, timeout_seconds: float) -> None:
        """Send SIGTERM, then SIGKILL if the process outlives ``timeout_seconds``."""
        if _signal_and_wait(pid, signal.SIGTERM, timeout_seconds):
            return
        logger.warning(
            "Kafka broker (pid %d) still running %.0f s after SIGTERM; sending SIGKILL",
            pid,
            timeout_seconds,
        )
        if _signal_and_wait(pid, signal.SIGKILL, KILL_WAIT_SECONDS):
            return
        raise BrokerError(
            f"Kafka broker (pid {pid}) still running {KILL_WAIT_SECONDS:.0f} s after SIGKILL; "
            f"check it with 'ps -p {pid}'"
        )


def _signal_and_wait(pid: int, sig: signal.Signals, wait_seconds: float) -> bool:
    """Send ``sig`` to ``pid`` and return whether the process is gone within ``wait_seconds``."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.2)
    return not is_alive(pid)
