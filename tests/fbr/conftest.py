"""Fixtures for the CLI tests: fbr's per-user data directory (the default journal) lives in a
temporary folder, never in the real user's one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _data_home(tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """FBR_DATA_HOME -> a temporary folder shared by the session; FBR_JOURNAL unset."""
    monkeypatch.setenv("FBR_DATA_HOME", str(tmp_path_factory.getbasetemp() / "fbr-data"))
    monkeypatch.delenv("FBR_JOURNAL", raising=False)
    yield
