"""benchmarks/dashboard_speed.py's fixture and page list on a small book: every path answers 200
(timing is measured by the script, never asserted here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from dashboard_speed import APIS, PAGES, PATHS, book_toml, build, client_for, measure


def test_book_has_targets_summing_to_one_and_spot_off_target() -> None:
    """The generated 20-asset book: 20 distinct assets, targets > 0 summing to 1, spot (USD)
    off target, and the same text for the same seeds."""
    doc = tomllib.loads(book_toml(20))
    targets, spot = doc["targets"], doc["spot_usd"]
    assert len(targets) == 20 == len({a["symbol"] for a in doc["assets"]})
    assert sum(targets.values()) == pytest.approx(1.0, abs=1e-9)
    assert min(targets.values()) > 0
    total = sum(spot.values())
    assert max(abs(spot[a] / total - targets[a]) for a in targets) > 0.002
    assert book_toml(20) == book_toml(20) != book_toml(20, spot_seed=1)


def test_every_path_answers_on_a_small_book(tmp_path: Path) -> None:
    """On a 4-asset book: the list covers every page and JSON endpoint of the dashboard, each
    answers 200 (``measure`` raises otherwise), the paper execution sent legs, and the plan page
    has legs again after the spot drift."""
    assert set(PATHS) == set(PAGES) | set(APIS)
    assert {p.split("?")[0] for p in PAGES} >= {"/", "/history", "/plan", "/whatif", "/reports",
                                                "/orders", "/run"}
    fixture = build(tmp_path, 4, cycles=5)
    assert fixture.executed_legs > 0
    with client_for(fixture) as client:
        rows = measure(client, PATHS, repeats=1)
        assert [r["path"] for r in rows] == list(PATHS)
        assert len(client.get("/api/history").json()["cycles"]) == 5
        assert client.get("/api/plan").json()["plan"]["legs"]
