"""Fixtures for every test: account locks live in a per-session temporary folder, never in the
user's home; solver engines are strict (a crash is re-raised, never silently answered by a retry or
the next solver) unless a test is marked ``solver_fallback``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Terminal size comes from each test's own environment (CliRunner's env={"COLUMNS": ...}): rich's
# consoles, made when fbr.console is imported, fix their width for good when COLUMNS is set then
# (pytest-xdist's workers start with COLUMNS=80, LINES=24), so the harness's values go first.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

#: optimizer.engines.STRICT_ENV (spelled out so that collecting a test imports no solver stack)
STRICT_ENV = "FBR_STRICT_SOLVERS"


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """FBR_LOCK_DIR -> a temporary folder (shared by the session, as one user's would be)."""
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path_factory.getbasetemp() / "locks"))
    yield


@pytest.fixture(autouse=True)
def _strict_solvers(request: pytest.FixtureRequest,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """FBR_STRICT_SOLVERS=1: an exception inside a solver engine fails the test instead of being
    answered by a retry or the next solver in the chain; tests whose point is that fallback opt
    out with ``@pytest.mark.solver_fallback``."""
    if request.node.get_closest_marker("solver_fallback") is None:
        monkeypatch.setenv(STRICT_ENV, "1")
    else:
        monkeypatch.delenv(STRICT_ENV, raising=False)
    yield


# --- the shared market data (../shared/data) ------------------------------------------------------

def _shared_data() -> Path | None:
    """The shared data folder when it holds the layout's 4 h spot files, else None."""
    from models.data_layout import spot_folder
    from models.io import default_data_dir

    d = default_data_dir()
    return d if d is not None and (d / spot_folder("4h")).is_dir() else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ../shared/data (or $FBR_DATA_DIR), every test marked ``shared_data`` is skipped with
    the reason; those are exactly the tests that read it (``shared_data_dir`` fails elsewhere)."""
    if _shared_data() is not None:
        return
    skip = pytest.mark.skip(reason="needs ../shared/data: set FBR_DATA_DIR or put the data beside "
                                   "the repository")
    for item in items:
        if item.get_closest_marker("shared_data") is not None:
            item.add_marker(skip)


@pytest.fixture
def shared_data_dir(request: pytest.FixtureRequest) -> Path:
    """The shared data folder, for tests marked ``shared_data`` only (an unmarked test that reads it
    fails here, so the marker selects exactly the tests that need the data)."""
    if request.node.get_closest_marker("shared_data") is None:
        pytest.fail(f"{request.node.nodeid} reads ../shared/data: mark it @pytest.mark.shared_data")
    data = _shared_data()
    assert data is not None, "shared_data tests are skipped without the data (pytest_collection_modifyitems)"
    return data
