"""Start-up errors of ``adoption-rate demo`` that need no broker."""

import socket
from collections.abc import Iterator

import pytest

from stream.broker.process import free_ports
from stream.cli.main import main


@pytest.fixture
def busy_port() -> Iterator[int]:
    """Yield a loopback port that another socket listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.fixture(autouse=True)
def unreachable_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    # A configured broker keeps the demo from starting the local one.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_ports(1)[0]}")


def test_demo_web_port_in_use_exits_2(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["demo", "--web-port", str(busy_port)])

    error = capsys.readouterr().err
    assert status == 2
    assert f"web port {busy_port} is in use" in error
    assert "Traceback" not in error


def test_demo_takes_web_port_setting(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADOPTION_WEB_PORT", str(busy_port))

    status = main(["demo"])

    assert status == 2
    assert f"web port {busy_port} is in use" in capsys.readouterr().err
