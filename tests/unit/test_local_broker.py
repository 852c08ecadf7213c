"""Tests of the local Kafka broker that need neither Java nor a running broker.

Where ``start()`` must reach a later step, small shell scripts named ``java``
and ``mvn`` stand in for the real programs on PATH.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from stream.broker.config import (
    LOG4J_VERSION,
    BrokerLayout,
    render_log4j_config,
    render_pom,
    render_server_properties,
)
from stream.broker.fetch import parse_java_major
from stream.broker.local import HOME_ENV, LocalBroker, default_home, random_cluster_id
from stream.broker.process import free_ports, tail
from stream.cli.broker import EXIT_NOT_RUNNING, add_broker_commands
from stream.errors import BrokerError, ConfigError
from stream.settings import PROJECT_ROOT

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
JAVA_17_VERSION = 'openjdk version "17.0.15" 2025-04-15'


def parse_properties(text: str) -> dict[str, str]:
    properties = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            properties[key] = value
    return properties


def make_layout(tmp_path: Path, port: int = 19092, controller_port: int = 19093) -> BrokerLayout:
    return BrokerLayout(
        home=tmp_path / "home",
        cache_dir=tmp_path / "cache",
        port=port,
        controller_port=controller_port,
    )


def write_script(bin_dir: Path, name: str, body: str) -> None:
    script = bin_dir / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Folder that is the whole PATH and contains only ``sh``, so java and mvn are missing."""
    sh = shutil.which("sh")
    assert sh is not None
    path = tmp_path / "bin"
    path.mkdir()
    (path / "sh").symlink_to(sh)
    monkeypatch.setenv("PATH", str(path))
    return path


@pytest.fixture
def fake_java_17(bin_dir: Path) -> Path:
    """A ``java`` that reports version 17, formats storage, and fails as a broker."""
    write_script(
        bin_dir,
        "java",
        f"""case "$*" in
  *-version*) echo '{JAVA_17_VERSION}' >&2 ;;
  *kafka.tools.StorageTool*) echo "Formatting metadata directory" ;;
  *kafka.Kafka*) echo "fake broker: could not bind listener" >&2; exit 1 ;;
esac
""",
    )
    return bin_dir


def local_broker(tmp_path: Path) -> LocalBroker:
    port, controller_port = free_ports(2)
    return LocalBroker(
        tmp_path / "home", port=port, controller_port=controller_port, cache_dir=tmp_path / "cache"
    )


def test_server_properties_listeners_on_loopback(tmp_path: Path) -> None:
    properties = parse_properties(render_server_properties(make_layout(tmp_path)))

    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert properties["process.roles"] == "broker,controller"
    assert properties["controller.listener.names"] == "CONTROLLER"
    assert properties["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:19092")


def test_server_properties_single_node_settings(tmp_path: Path) -> None:
    properties = parse_properties(render_server_properties(make_layout(tmp_path)))

    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["transaction.state.log.replication.factor"] == "1"
    assert properties["transaction.state.log.min.isr"] == "1"
    assert properties["group.initial.rebalance.delay.ms"] == "0"
    assert properties["auto.create.topics.enable"] == "true"
    assert properties["num.partitions"] == "1"


def test_server_properties_log_dirs_in_home(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    properties = parse_properties(render_server_properties(layout))

    assert properties["log.dirs"] == str(tmp_path / "home" / "data")


def test_server_properties_escape_backslash(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "back\\slash")
    properties = parse_properties(render_server_properties(layout))

    assert properties["log.dirs"].endswith("back\\\\slash/home/data")


def test_pom_dependencies() -> None:
    pom = ElementTree.fromstring(render_pom("4.0.2"))
    dependencies = {
        dependency.findtext("m:artifactId", namespaces=POM_NS): dependency.findtext(
            "m:version", namespaces=POM_NS
        )
        for dependency in pom.iterfind("m:dependencies/m:dependency", POM_NS)
    }

    assert dependencies == {"kafka_2.13": "4.0.2", "log4j-slf4j-impl": LOG4J_VERSION}


def test_log4j_config_writes_server_log(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "a&b")
    config = ElementTree.fromstring(render_log4j_config(layout))
    appender = config.find("Appenders/RollingFile")

    assert appender is not None
    assert appender.get("fileName") == str(layout.server_log)


def test_layout_rejects_invalid_version(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid Kafka version '4.1'"):
        LocalBroker(tmp_path, kafka_version="4.1")


def test_layout_rejects_same_ports(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid controller port 9092"):
        LocalBroker(tmp_path, port=9092, controller_port=9092)


def test_layout_rejects_port_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid port 70000"):
        LocalBroker(tmp_path, port=70000)


def test_default_ports(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)

    assert broker.layout.port == 9092
    assert broker.layout.controller_port == 9093
    assert broker.bootstrap_servers == "127.0.0.1:9092"


def test_cache_dir_defaults_to_home(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)

    assert broker.layout.libs_dir == tmp_path / "libs-4.1.1"


def test_default_home_in_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)

    assert default_home() == PROJECT_ROOT / ".kafka"
    assert LocalBroker().layout.home == PROJECT_ROOT / ".kafka"


def test_default_home_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "elsewhere"))

    assert default_home() == tmp_path / "elsewhere"
    assert LocalBroker().layout.home == tmp_path / "elsewhere"


def test_random_cluster_id_format() -> None:
    for _ in range(200):
        cluster_id = random_cluster_id()
        assert len(cluster_id) == 22
        assert "-" not in cluster_id
        assert set(cluster_id) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
        )


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("no version here", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def test_tail_after_offset(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("old line\n")
    offset = log.stat().st_size
    with log.open("a") as handle:
        handle.write("new line\n" + "x" * 600 + "\n")

    text = tail(log, lines=5, start_offset=offset, max_line_chars=100)

    assert "old line" not in text
    assert text.splitlines()[0] == "new line"
    assert text.splitlines()[1] == "x" * 100 + " [...]"


def test_status_not_running(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "home", port=19092)
    status = broker.status()

    assert status.running is False
    assert status.pid is None
    assert status.port == 19092
    assert status.controller_port == 19093
    assert status.kafka_version == "4.1.1"
    assert status.home == tmp_path / "home"


def test_status_ignores_pid_of_exited_process(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    process = subprocess.Popen(["true"])
    process.wait()
    broker.layout.pid_file.write_text(f"{process.pid}\n")

    assert broker.status().running is False


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_status_ignores_pid_of_other_program(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    broker.layout.pid_file.write_text(f"{os.getpid()}\n")

    assert broker.status().running is False


def test_stop_not_running_removes_pid_file(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    broker.layout.pid_file.write_text("not a pid\n")

    assert broker.stop() is False
    assert not broker.layout.pid_file.exists()


def test_start_removes_stale_pid_file(tmp_path: Path, bin_dir: Path) -> None:
    broker = local_broker(tmp_path)
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    broker.layout.home.mkdir(parents=True)
    broker.layout.pid_file.write_text(f"{exited.pid}\n")
    broker.layout.state_file.write_text("{}\n")

    with pytest.raises(BrokerError, match="java not found on PATH"):
        broker.start(timeout_seconds=5)

    assert not broker.layout.pid_file.exists()
    assert not broker.layout.state_file.exists()


def test_start_without_java(tmp_path: Path, bin_dir: Path) -> None:
    broker = local_broker(tmp_path)

    with pytest.raises(BrokerError, match="java not found on PATH") as error:
        broker.start(timeout_seconds=5)

    assert "openjdk-17-jre-headless" in str(error.value)


def test_start_with_old_java(tmp_path: Path, bin_dir: Path) -> None:
    write_script(bin_dir, "java", """echo 'java version "1.8.0_392"' >&2\n""")
    broker = local_broker(tmp_path)

    with pytest.raises(BrokerError, match=r"is not Java 17 or newer \(java version"):
        broker.start(timeout_seconds=5)


def test_start_without_maven(tmp_path: Path, fake_java_17: Path) -> None:
    broker = local_broker(tmp_path)

    with pytest.raises(BrokerError, match="mvn not found on PATH") as error:
        broker.start(timeout_seconds=5)

    assert "apt-get install maven" in str(error.value)


def test_start_quotes_maven_failure(tmp_path: Path, fake_java_17: Path) -> None:
    write_script(
        fake_java_17,
        "mvn",
        'i=1; while [ $i -le 30 ]; do echo "maven line $i"; i=$((i + 1)); done\n'
        'echo "[ERROR] Could not resolve org.apache.kafka:kafka_2.13" >&2\nexit 1\n',
    )
    broker = local_broker(tmp_path)

    with pytest.raises(BrokerError, match=r"Maven failed \(exit code 1\)") as error:
        broker.start(timeout_seconds=5)

    lines = str(error.value).splitlines()
    assert lines[-1] == "[ERROR] Could not resolve org.apache.kafka:kafka_2.13"
    assert "maven line 30" in lines
    assert "maven line 12" in lines
    assert "maven line 11" not in lines
    assert not broker.layout.libs_dir.exists()
    assert list(broker.layout.cache_dir.glob("libs-*")) == []


def test_start_reports_maven_without_jars(tmp_path: Path, fake_java_17: Path) -> None:
    write_script(fake_java_17, "mvn", "exit 0\n")
    broker = local_broker(tmp_path)

    with pytest.raises(BrokerError, match="Maven exited 0 but wrote no jars"):
        broker.start(timeout_seconds=5)


def test_start_quotes_broker_exit(tmp_path: Path, fake_java_17: Path) -> None:
    broker = local_broker(tmp_path)
    broker.layout.libs_dir.mkdir(parents=True)

    with pytest.raises(BrokerError, match=r"exited during start") as error:
        broker.start(timeout_seconds=30)

    assert "fake broker: could not bind listener" in str(error.value)
    assert not broker.layout.pid_file.exists()
    assert broker.status().running is False


def test_start_rejects_port_in_use(tmp_path: Path) -> None:
    broker = local_broker(tmp_path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", broker.layout.port))
        listener.listen()

        with pytest.raises(BrokerError, match=f"port {broker.layout.port} on 127.0.0.1 is already"):
            broker.start(timeout_seconds=5)

    assert not broker.layout.home.exists()


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="adoption-rate")
    add_broker_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    exit_code: int = args.handler(args)
    return exit_code


def test_cli_status_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = run_cli(["broker", "status", "--home", str(tmp_path)])

    assert exit_code == EXIT_NOT_RUNNING
    assert "running: no" in capsys.readouterr().out


def test_cli_start_error_exit_code(
    tmp_path: Path, bin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, controller_port = free_ports(2)
    argv = ["broker", "start", "--home", str(tmp_path), "--port", str(port)]
    exit_code = run_cli(argv + ["--controller-port", str(controller_port)])

    assert exit_code == 1
    assert "error: java not found on PATH" in capsys.readouterr().err


def test_cli_stop_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = run_cli(["broker", "stop", "--home", str(tmp_path)])

    assert exit_code == 0
    assert "was not running" in capsys.readouterr().out
