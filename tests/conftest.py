"""Fixtures for every test: account locks live in a per-session temporary folder, never in the
user's home."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """FBR_LOCK_DIR -> a temporary folder (shared by the session, as one user's would be)."""
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path_factory.getbasetemp() / "locks"))
    yield
