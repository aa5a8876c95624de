"""benchmarks/vs_naive.py's windowed metrics (also total_cost.py's and instruments.py's) on a
liquidation the insurance fund covers, by hand.

The path: BTC spot 10 units at 100, short 10 BTC-PERP (entry 100), wallet 50 USD, no sweeps. BTC
doubles to 200 on day 2: the short loses 1,000 USD, the wallet is -950 with the position open, so
the position is liquidated. The exchange's fee (2% x 2,000 = 40 USD) cannot be collected from an
account 990 USD under water: the insurance fund covers the deficit (990 USD).

- NAV goes 1,050 -> 2,000: spot +1,000 and the holder loses only the 50 USD wallet, so the holder
  paid 0 USD of liquidation penalty (``scenarios.metrics.penalty_paid``: max(penalty - insurance
  fund, 0));
- the margin check of day 2 has collateral -950 < 0 with a position open: an unbounded
  utilisation (inf), as ``compute_metrics`` reports it.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, SpotAsset
from optimizer.policies import NoRebalance
from scenarios.backtest_result import BacktestResult
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.metrics import compute_metrics
from scenarios.replay import run_backtest

VN = importlib.import_module("vs_naive")
TC = importlib.import_module("total_cost")

IDX = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")


@pytest.fixture(scope="module")
def liquidated() -> BacktestResult:
    path = MarketPath(spot=pd.DataFrame({"BTC": [100.0, 200.0, 200.0, 200.0]}, index=IDX))
    book = Book((SpotAsset("BTC"),), (FuturesContract("BTC-PERP", "BTC"),), spot={"BTC": 10.0},
                targets={"BTC": 1.0}, cash=50.0,
                futures={"BTC-PERP": FuturesPosition(-10.0, 100.0)})
    res = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS, liquidation_penalty=0.02)
    # the scenario is the docstring's
    s = res.steps
    assert bool(s["liquidated"].iloc[1])
    assert s["liquidation_penalty"].iloc[1] == pytest.approx(40.0)
    assert s["insurance_fund"].iloc[1] == pytest.approx(990.0)
    assert s["nav"].iloc[1] == pytest.approx(2000.0)
    return res


def _all(n: int) -> np.ndarray:
    return np.ones(n, dtype=bool)


def test_masked_metrics_counts_the_penalty_the_holder_paid(liquidated: BacktestResult) -> None:
    """0 USD paid (the fund absorbed the 40 USD fee): penalty 0 bp, and the total cost is
    compute_metrics' (the raw fee column would give 40 USD, about 27,600 bp/yr)."""
    m = compute_metrics(liquidated)
    assert m.penalty_bps == pytest.approx(0.0)
    d = VN.masked_metrics(liquidated, _all(len(IDX)))
    assert d["penalty_bps"] == pytest.approx(0.0)
    assert d["total_cost_bps"] == pytest.approx(m.total_cost_bps)
    assert d["liquidations"] == 1


def test_masked_metrics_peak_margin_use_keeps_the_liquidation_step(liquidated: BacktestResult) -> None:
    """The collateral is gone with the position open: utilisation inf (compute_metrics' peak),
    not the 10% of day 1 that dropping it left."""
    assert compute_metrics(liquidated).peak_margin_ratio == math.inf
    d = VN.masked_metrics(liquidated, _all(len(IDX)))
    assert d["peak_margin_use"] == math.inf


def test_check_against_compute_metrics_agrees_and_sees_each_gap(
        liquidated: BacktestResult, monkeypatch: pytest.MonkeyPatch) -> None:
    """No gap on the fixed figures (inf equals inf); each of penalty, total cost, liquidations
    and a finite peak against compute_metrics' inf is a gap above the script's 1e-6 warning."""
    assert VN.check_against_compute_metrics(liquidated) < 1e-9
    real = VN.masked_metrics
    for key, value in (("penalty_bps", 27_612.0), ("total_cost_bps", 27_612.0),
                       ("liquidations", 0), ("peak_margin_use", 0.1)):
        def off(res: BacktestResult, mask: np.ndarray, key: str = key, value: Any = value
                ) -> dict[str, float]:
            d: dict[str, float] = real(res, mask)
            d[key] = value
            return d
        monkeypatch.setattr(VN, "masked_metrics", off)
        assert VN.check_against_compute_metrics(liquidated) > 1e-6, key
    monkeypatch.setattr(VN, "masked_metrics", real)


def test_relative_gap_by_hand() -> None:
    assert VN.relative_gap(math.inf, math.inf) == 0.0
    assert VN.relative_gap(math.nan, math.nan) == 0.0
    assert VN.relative_gap(math.inf, 0.1) == math.inf
    assert VN.relative_gap(0.1, math.inf) == math.inf
    assert VN.relative_gap(2.0, 1.0) == pytest.approx(0.5)
    assert VN.relative_gap(0.0, 0.0) == 0.0


def test_total_cost_window_charges_no_penalty_the_holder_did_not_pay(
        liquidated: BacktestResult, monkeypatch: pytest.MonkeyPatch) -> None:
    """total_cost.windows(): total_realised = trading + funding + penalty + financing + reserve +
    tax. Here all but financing are 0: the wallet (50 USD over day 1, then 0) costs
    0.04 x 50 x 1/365 USD, in bp of the mean invested base (1,000, 2,000, 2,000, 2,000 -> 1,750)
    x 3/365 years. The penalty is 0 (the fund absorbed it), not the 40 USD fee."""
    monkeypatch.setattr(VN, "WINDOWS", {"full": ("2024-01-01", "2024-01-05")})
    out = TC.windows(liquidated, 0.0)["full"]
    years = 3 / 365
    base = (1000 + 2000 * 3) / 4
    financing = 0.04 * 50 * (1 / 365) / (base * years) * 1e4
    assert out["financing_bps"] == pytest.approx(financing)
    assert out["penalty_bps"] == pytest.approx(0.0)
    assert out["total_realised_bps"] == pytest.approx(financing)
