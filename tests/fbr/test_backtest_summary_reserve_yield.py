"""fbr backtest's metrics price the reserve at the book's ``[costs] reserve_yield``, not a fixed 4%.

By hand: 1 BTC at a flat 1,000 USD and a 1,000 USD wallet, no futures, no trades, two days. NAV is
2,000 throughout, so reserve_opportunity_cost_bps = y x sum_t W_{t-1} dt / (mean NAV x years) x 1e4
= y x 1,000 / 2,000 x 1e4 = 5,000 y bp: 500 at y = 10%, 200 at the 4% default, 0 at y = 0.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fbr import backtest_summary
from fbr.backtest_config import load_backtest_file
from models.book import Book
from models.instruments import SpotAsset
from optimizer.policies import NoRebalance
from scenarios.backtest_result import BacktestResult
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

ROOT = Path(__file__).resolve().parents[2]


def _flat_wallet() -> BacktestResult:
    idx = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    path = MarketPath(spot=pd.DataFrame({"BTC": [1000.0] * 3}, index=idx))
    book = Book((SpotAsset("BTC"),), (), spot={"BTC": 1.0}, targets={"BTC": 1.0}, cash=1000.0)
    res = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS)
    assert res.steps["nav"].tolist() == pytest.approx([2000.0] * 3)
    assert res.steps["wallet"].tolist() == pytest.approx([1000.0] * 3)
    return res


def test_metrics_dict_prices_the_reserve_at_the_yield_given() -> None:
    res = _flat_wallet()
    metrics = backtest_summary.metrics_dict
    key = "reserve_opportunity_cost_bps"
    assert metrics(res, reserve_yield=0.10)[key] == pytest.approx(500.0)
    assert metrics(res, reserve_yield=0.0)[key] == pytest.approx(0.0)
    assert metrics(res)[key] == pytest.approx(200.0)  # the 4% default


def _config(tmp_path: Path, extra: str) -> Path:
    book = (ROOT / "examples" / "backtest_book.toml").read_text()
    assert "horizon_days = 7.0" in book
    (tmp_path / "book.toml").write_text(book.replace("horizon_days = 7.0", f"horizon_days = 7.0{extra}", 1))
    (tmp_path / "bt.toml").write_text(
        'book = "book.toml"\n[data]\nsource = "synthetic"\nseed = 12\ndays = 30\n'
        'start = "2024-01-01"\n[[policies]]\nkind = "naive_futures"\nperiod = "7D"\n')
    return tmp_path / "bt.toml"


@pytest.mark.parametrize(("extra", "expected"), [("\nreserve_yield = 0.0", 0.0),
                                                 ('\nreserve_yield = "2.5%"', 0.025), ("", 0.04)])
def test_book_reserve_yield_is_the_books_costs_reserve_yield(tmp_path: Path, extra: str,
                                                             expected: float) -> None:
    """The backtest file's book sets [costs] reserve_yield (or not: the 4% default)."""
    cfg = load_backtest_file(_config(tmp_path, extra))
    assert backtest_summary.book_reserve_yield(cfg) == pytest.approx(expected)
