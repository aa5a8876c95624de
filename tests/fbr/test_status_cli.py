"""``fbr status``: ``--exchange dry-run`` describes the book file alone, as solve and whatif do
(it had read the journal's paper account: after a paper execute it showed the target weights
and a tracking error near 0 while solve showed the book file's); ``--exit-code`` exits 3 on a book
no plan is possible for (liquidatable now), where it had said 0, "not due". Figures by hand from
examples/seed_example_1.toml: spot weights 60/25/15, targets 50/30/20, vols 55/70/95%, every
correlation 0.7."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fbr.cli import app

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
runner = CliRunner()


def _json(*args: str, code: int = 0) -> dict[str, Any]:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == code, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_dry_run_status_reads_the_book_file_after_a_paper_execute(tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    _json("execute", str(SEED), "--exchange", "paper", "--journal", journal)
    vols = np.array([0.55, 0.70, 0.95])
    corr = np.full((3, 3), 0.7) + 0.3 * np.eye(3)
    d = np.array([0.60, 0.25, 0.15]) - np.array([0.50, 0.30, 0.20])
    te_book = math.sqrt(d @ (np.outer(vols, vols) * corr) @ d)  # 0.04981
    dry = _json("status", str(SEED), "--exchange", "dry-run", "--journal", journal)
    assert dry["venue"] == "dry-run" and dry["alerts"] == []
    assert dry["weights_before"] == pytest.approx({"BTC": 0.60, "ETH": 0.25, "SOL": 0.15})
    assert dry["tracking_error"] == pytest.approx(te_book, rel=1e-9)
    paper = _json("status", str(SEED), "--exchange", "paper", "--journal", journal)
    assert paper["tracking_error"] < 0.2 * te_book  # the paper account holds the hedge


def test_exit_code_is_3_on_a_book_liquidatable_now(tmp_path: Path) -> None:
    """No cash and 0.01 BTC short at its entry 60,000: margin balance 0 < maintenance 0.5% x 600
    = 3 USD, liquidatable now (solve exits 3); status --exit-code exits 3 and says why."""
    text = SEED.read_text().replace("cash = 3000.0", "cash = 0.0").replace(
        "[market]", '[[futures]]\nsymbol = "BTC-PERP"\ncontracts = -0.01\nentry_price = 60000.0\n\n'
        "[market]")
    book = tmp_path / "liq.toml"
    book.write_text(text)
    assert runner.invoke(app, ["solve", str(book)]).exit_code == 3
    args = ["status", str(book), "--exchange", "dry-run", "--journal", str(tmp_path / "j.sqlite")]
    doc = _json(*args, "--exit-code", code=3)
    assert doc["infeasible"] is True and doc["rebalance_due"] is False and doc["alerts"]
    printed = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert printed.exit_code == 0  # without --exit-code: printed, exit 0
    text = " ".join(printed.stdout.split())
    assert "rebalance not possible: the solution may not be traded (the alert above says why)" in text
    assert "rebalance not due" not in text  # not "0.00 USD of trading cost ... 0 vs 0"
    ok = _json("status", str(SEED), "--exchange", "dry-run", "--journal", str(tmp_path / "k.sqlite"),
               "--exit-code", code=7)  # the seed book: drifted, a rebalance is due
    assert ok["infeasible"] is False
