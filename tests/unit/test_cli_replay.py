"""Exit status of ``adoption-rate replay`` when no row of a file maps to an event."""

import json
from pathlib import Path

import pytest

from stream.broker.process import free_ports
from stream.cli.main import main

MAPPINGS = Path(__file__).resolve().parents[2] / "config" / "mappings"


def replay(path: Path, *extra: str) -> int:
    # No event reaches the producer, so nothing listens on the port.
    address = f"127.0.0.1:{free_ports(1)[0]}"
    return main(["replay", str(path), "--no-progress", "--bootstrap-servers", address, *extra])


def test_replay_no_mappable_row_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"case": number}) + "\n" for number in range(3)))

    status = replay(rows, "--mapping", str(MAPPINGS / "sf311.toml"))

    error = capsys.readouterr().err
    assert status == 1
    assert f"none of the 3 rows of {rows}" in error
    assert "missing_event_id (3)" in error


def test_replay_empty_file_succeeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")

    status = replay(empty)

    assert status == 0
    assert "events produced:  0" in capsys.readouterr().out


def test_replay_non_object_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("[1, 2]\n")

    status = replay(rows)

    assert status == 1
    assert "not_an_object: 1" in capsys.readouterr().out
