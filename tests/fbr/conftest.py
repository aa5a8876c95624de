"""Fixtures for the CLI tests: fbr's per-user data directory (the default journal) lives in a
temporary folder, never in the real user's one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # cli_helpers (run_fbr) for the test modules
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _data_home(tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """FBR_DATA_HOME -> a temporary folder shared by the session; FBR_JOURNAL unset."""
    monkeypatch.setenv("FBR_DATA_HOME", str(tmp_path_factory.getbasetemp() / "fbr-data"))
    monkeypatch.delenv("FBR_JOURNAL", raising=False)
    yield
