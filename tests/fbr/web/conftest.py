"""Fixtures for the dashboard tests (``fbr serve``): one "world" per session, built through the real
command line (``fbr execute --exchange paper`` fills a paper journal; ``fbr status``, ``fbr solve``,
``fbr whatif`` and a dry-run ``fbr execute`` give the reference documents the pages are checked
against), plus the loop's tables in the same journal (cycles, alerts), a health file and a reports
folder; and clients of the app over it (``starlette.testclient.TestClient``).

The world is read-only for the tests: a test that executes from the page uses its own journal.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # web_world for the test modules
    sys.path.insert(0, _HERE)

from web_world import (  # noqa: E402
    ALERTS,
    CYCLES,
    HEALTH,
    OTHER_ALERTS,
    OTHER_CYCLES,
    REPORT_HTML,
    SECRET_HTML,
    SHOCK,
    TEN,
    World,
    cli_json,
)

from executor.run_store import RunStore, write_health  # noqa: E402
from fbr.config import load_book_file  # noqa: E402
from fbr.web.app import create_app  # noqa: E402
from fbr.web.state import DashboardState, ServeConfig  # noqa: E402


def _parallel(*calls: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run CLI calls two at a time (the machine has 2 cores)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda f: f(), calls))


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The ten-asset synthetic book, executed once on paper, with the loop's tables, a health file
    and two files in the reports folder (a report and a text file), and one HTML file beside the
    folder (what a path traversal would reach)."""
    root = tmp_path_factory.mktemp("dashboard")
    base = tmp_path_factory.getbasetemp()
    env = {"FBR_LOCK_DIR": str(base / "locks"), "FBR_DATA_HOME": str(base / "fbr-data")}
    book, journal = root / "book.toml", root / "journal.sqlite"
    shutil.copy(TEN, book)
    b, j = str(book), str(journal)
    executed, dry_plan = _parallel(
        lambda: cli_json("execute", b, "--exchange", "paper", "--journal", j, env=env),
        lambda: cli_json("execute", b, env=env))
    status, solve = _parallel(
        lambda: cli_json("status", b, "--exchange", "paper", "--journal", j, env=env),
        lambda: cli_json("solve", b, "--exchange", "paper", "--journal", j, env=env))
    missing = root / "never.sqlite"
    whatif, dry_status = _parallel(
        lambda: cli_json("whatif", b, "-s", SHOCK, "--exchange", "paper", "--journal", j, env=env),
        lambda: cli_json("status", b, "--exchange", "dry-run", "--journal", str(missing), env=env))
    assert not missing.exists()

    # the loop of this book on paper (its account key), and another account's run in the same
    # journal, which the dashboard must not show
    name = load_book_file(book).book.name
    for account, cycles, alerts in ((f"paper:{name}", CYCLES, ALERTS),
                                    ("paper:another book", OTHER_CYCLES, OTHER_ALERTS)):
        store = RunStore(journal, account)
        try:
            for c in cycles:
                store.record(c)
            for a in alerts:
                store.record_alert(a)
        finally:
            store.close()
    state_dir = root / "state"
    write_health(state_dir / "health.json", HEALTH)
    reports = root / "reports"
    reports.mkdir()
    (reports / "backtest.html").write_text(REPORT_HTML)
    (reports / "notes.txt").write_text("not a report")
    (root / "secret.html").write_text(SECRET_HTML)
    return World(root, book, journal, state_dir, reports, env, executed, status, solve, whatif,
                 dry_plan, dry_status)


@pytest.fixture(scope="session")
def shared_state(world: World) -> DashboardState:
    """One dashboard state over the world (the book loaded and the problem compiled once)."""
    return DashboardState(world.config())


@pytest.fixture
def client(shared_state: DashboardState) -> Iterator[TestClient]:
    """A client of the read-only dashboard on loopback without a token."""
    with TestClient(create_app(shared_state, None), base_url="http://127.0.0.1:8765") as c:
        yield c


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """``make_client(config, token=None)``: a client of a fresh dashboard over ``config``."""
    made: list[TestClient] = []

    def make(config: ServeConfig, token: str | None = None) -> TestClient:
        c = TestClient(create_app(DashboardState(config), token), base_url="http://127.0.0.1:8765")
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
