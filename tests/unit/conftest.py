"""Fixtures shared by the unit tests."""

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the caller's ADOPTION_* variables and config file out of every unit test."""
    for name in list(os.environ):
        if name.startswith("ADOPTION_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    empty = tmp_path / "empty-config.toml"
    empty.write_text("")
    monkeypatch.setenv("ADOPTION_CONFIG_FILE", str(empty))
