"""Start-up errors of ``adoption-rate worker``: one clear line and an exit status, no traceback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stream.broker.process import free_ports
from stream.cli.main import main


@pytest.fixture(autouse=True)
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADOPTION_DATA_DIR", str(tmp_path / "data"))


def test_worker_unreachable_broker_exits_69(capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing listens on a port that was just free.
    address = f"127.0.0.1:{free_ports(1)[0]}"

    status = main(["worker", "--bootstrap-servers", address])

    error = capsys.readouterr().err
    assert status == 69
    assert f"cannot reach Kafka at {address}" in error
    assert "Traceback" not in error


def test_worker_unreachable_broker_one_line(tmp_path: Path) -> None:
    # In its own process, where the Kafka client's log reaches stderr too.
    address = f"127.0.0.1:{free_ports(1)[0]}"
    environment = {
        **os.environ,
        "ADOPTION_DATA_DIR": str(tmp_path / "data"),
        "ADOPTION_WEB_PORT": str(free_ports(1)[0]),
    }

    finished = subprocess.run(
        [sys.executable, "-m", "stream", "worker", "--bootstrap-servers", address],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    lines = finished.stderr.strip().splitlines()
    assert finished.returncode == 69
    assert len(lines) == 1, finished.stderr
    assert "cannot reach Kafka" in lines[0]


def test_worker_channels_folder_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADOPTION_CHANNELS_FILE", str(tmp_path))

    status = main(["worker"])

    error = capsys.readouterr().err
    assert status == 2
    assert f"channel table {tmp_path} cannot be read" in error


def test_worker_missing_config_file_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADOPTION_CONFIG_FILE", str(tmp_path / "missing.toml"))

    status = main(["worker"])

    assert status == 2
    assert "missing.toml" in capsys.readouterr().err


def test_worker_web_port_in_use_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]

        status = main(["worker", "--web-port", str(port)])

    error = capsys.readouterr().err
    assert status == 2
    assert f"cannot listen on 127.0.0.1:{port}" in error
    assert "Traceback" not in error


def test_worker_data_dir_under_file_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ADOPTION_DATA_DIR", str(blocker / "data"))

    status = main(["worker"])

    error = capsys.readouterr().err
    assert status == 2
    assert f"cannot create data_dir {blocker / 'data'}" in error
    assert "Traceback" not in error


def test_worker_creates_data_dir_parents(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "missing" / "parent" / "data"
    monkeypatch.setenv("ADOPTION_DATA_DIR", str(data_dir))

    # No broker listens there, so the worker stops after preparing the folder.
    main(["worker", "--bootstrap-servers", f"127.0.0.1:{free_ports(1)[0]}"])

    assert data_dir.is_dir()
