"""Metrics against hand computations on a small recorded frame, and solver stats from a run."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import cast

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.policies import Policy, TargetHoldings, current_holdings
from optimizer.solution import Solution
from scenarios.backtest_result import LIQUIDATION_COLUMNS, TRADE_COLUMNS, BacktestResult
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.metrics import MARGIN_CALL_THRESHOLD, compute_metrics
from scenarios.replay import run_backtest

D0 = pd.Timestamp("2025-01-01", tz="UTC")
IDX = pd.date_range(D0, periods=5, freq="D")
YEARS = 4 / 365
MEAN_NAV = 102.0  # mean of the NAV column below


def small_result() -> BacktestResult:
    """Five daily steps of one asset (BTC, target 1.0) with every cost column filled by hand."""
    steps = pd.DataFrame({
        "nav": [100.0, 102.0, 101.0, 103.0, 104.0],
        "base": [100.0, 100.0, 100.0, 100.0, 100.0],
        "cash": [20.0, 20.0, 19.0, 21.0, 20.0],
        "wallet": [20.0, 20.0, 19.0, 21.0, 20.0],
        "collateral": [20.0, 20.0, 19.0, 21.0, 20.0],
        "spot_pnl": 0.0, "futures_pnl": 0.0,
        "fee_spot": [0.0, 0.3, 0.0, 0.0, 0.0],
        "slippage_spot": [0.0, 0.01, 0.0, 0.0, 0.0],
        "fee_futures": [0.1, 0.0, 0.1, 0.0, 0.0],
        "slippage_futures": [0.05, 0.0, 0.05, 0.0, 0.0],
        "funding": [0.0, 0.02, 0.03, 0.0, 0.0],
        "liquidation_penalty": [0.0, 0.0, 0.02, 0.0, 0.0],
        "margin_ratio": [0.0, 0.5, 0.9, 0.2, 0.3],
        "margin_ratio_end": [0.1, 0.4, 0.85, 0.2, 0.81],
        "liquidated": [False, False, True, False, False],
        "traded_spot": [0.0, 10.0, 0.0, 0.0, 0.0],
        "traded_futures": [50.0, 0.0, 20.0, 0.0, 0.0],
        "sweep_in": [0.0, 0.0, 5.0, 0.0, 0.0],
        "sweep_out": [0.0, 0.0, 0.0, 0.0, 3.0],
        "sweep_fees": [0.0, 0.0, 0.005, 0.0, 0.003],
        "solve_time_ms": [math.nan, 12.0, 10.0, math.nan, 30.0],
        "solver_fallbacks": [0.0, 1.0, 0.0, 0.0, 2.0],
    }, index=IDX)
    btc = pd.DataFrame({"BTC": [100.0, 101.0, 101.0, 102.01, 102.01]}, index=IDX)
    return BacktestResult(
        steps=steps, spot_value=btc, futures_notional=pd.DataFrame(index=IDX),
        weights=pd.DataFrame({"BTC": 1.0}, index=IDX),
        trades=pd.DataFrame(columns=TRADE_COLUMNS),
        liquidations=pd.DataFrame(columns=LIQUIDATION_COLUMNS),
        targets=pd.Series({"BTC": 1.0}), spot_returns=btc / btc.shift(1) - 1.0, policy="hand")


def test_costs_turnover_and_reserve_by_hand() -> None:
    m = compute_metrics(small_result())
    assert m.years == pytest.approx(YEARS)
    per_year_bps = 1e4 / (MEAN_NAV * YEARS)       # bps per USD of total cost: 365e4 / 408
    # exchange fees 0.3 + 0.2 = 0.5 USD -> 0.5 x 365 / 408 x 1e4 = 4,473.04 bps/yr
    assert m.exchange_fee_bps == pytest.approx(4_473.039, abs=1e-3)
    # slippage: futures 0.05 + 0.05, spot half spread 0.01
    assert m.slippage_bps == pytest.approx(0.11 * per_year_bps)            # spread + impact
    assert m.fees_bps == pytest.approx(0.61 * per_year_bps)                # fees incl. slippage
    assert m.funding_bps == pytest.approx(0.05 * per_year_bps)
    assert m.penalty_bps == pytest.approx(0.02 * per_year_bps)
    assert m.sweep_cost_bps == pytest.approx(0.008 * per_year_bps)          # 71.57 bps/yr
    assert m.total_cost_bps == pytest.approx((0.61 + 0.05 + 0.02 + 0.008) * per_year_bps)
    # reserve: time-weighted wallet (20 + 20 + 19 + 21) / 4 = 20 USD, 4 %/yr, mean NAV 102:
    #   20 x 0.04 / 102 = 78.43 bps/yr
    assert m.reserve_opportunity_cost_bps == pytest.approx(20 * 0.04 / 102 * 1e4)
    assert m.reserve_opportunity_cost_bps == pytest.approx(78.431, abs=1e-3)
    assert compute_metrics(small_result(), stablecoin_yield=0.0).reserve_opportunity_cost_bps == 0.0
    # turnover: spot 10 + sweeps 5 + 3 = 18 USD, futures 70 USD, over 102 USD x 4/365 years
    assert m.spot_turnover == pytest.approx(18 * 365 / 408)                # 16.10 /yr
    assert m.futures_turnover == pytest.approx(70 * 365 / 408)             # 62.62 /yr
    assert m.turnover == pytest.approx(88 * 365 / 408)


def test_active_return_by_hand() -> None:
    m = compute_metrics(small_result())
    # book returns (nav diff / base 100): 0.02, -0.01, 0.02, 0.01
    # ideal (BTC):                        0.01, 0.00,  0.01, 0.00
    # active: 0.01, -0.01, 0.01, 0.01 -> mean 0.005 per day x 365 = 1.825
    assert m.active_return == pytest.approx(1.825, rel=1e-9)
    # the tracking error is the std of the same series: 0.01 x sqrt(365)
    assert m.tracking_error == pytest.approx(0.01 * math.sqrt(365), rel=1e-9)


def test_margin_and_solver_stats_by_hand() -> None:
    m = compute_metrics(small_result())
    # utilisation per step = max(check, end): 0.1, 0.5, 0.9, 0.2, 0.81
    assert m.peak_margin_ratio == pytest.approx(0.9)
    # sorted 0.1, 0.2, 0.5, 0.81, 0.9: p99 at rank 0.99 x 4 = 3.96 -> 0.81 + 0.96 x 0.09 = 0.8964
    assert m.margin_ratio_p99 == pytest.approx(0.8964)
    assert MARGIN_CALL_THRESHOLD == 0.8
    assert m.margin_calls == 2          # 0.9 and 0.81 exceed 0.8
    assert m.liquidations == 1
    # solves at 12, 10, 30 ms: median 12; p99 at rank 1.98 -> 12 + 0.98 x 18 = 29.64
    assert m.solves == 3
    assert m.solve_time_median_ms == pytest.approx(12.0)
    assert m.solve_time_p99_ms == pytest.approx(29.64)
    assert m.solver_fallbacks == 3


class FakeSolved(Policy):
    """Holds, and returns a stand-in solution with a scripted solve time and solver list."""

    name = "fake_solved"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        self.calls += 1
        tried = [("PIQP", "failed")] * (self.calls % 2) + [("CLARABEL", "optimal")]
        sol = SimpleNamespace(solve_time_ms=float(self.calls), fallbacks=len(tried) - 1)
        held = current_holdings(book, market)
        return TargetHoldings(spot=held.spot, futures=held.futures, solution=cast(Solution, sol))


def test_backtest_records_solver_stats_per_step() -> None:
    perp = FuturesContract("BTC-PERP", "BTC")
    book = Book((SpotAsset("BTC"),), (perp,), spot={"BTC": 1.0}, targets={"BTC": 1.0}, cash=10.0)
    spot = pd.DataFrame({"BTC": [100.0, 101.0, 102.0, 103.0]},
                        index=pd.date_range(D0, periods=4, freq="D"))
    res = run_backtest(book, MarketPath(spot=spot), FakeSolved(), collateral=NO_SWEEPS)
    np.testing.assert_array_equal(res.steps["solve_time_ms"].to_numpy(), [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(res.steps["solver_fallbacks"].to_numpy(), [1.0, 0.0, 1.0, 0.0])
    m = compute_metrics(res)
    assert (m.solves, m.solver_fallbacks) == (4, 2)
    assert m.solve_time_median_ms == pytest.approx(2.5)
    assert m.solve_time_p99_ms == pytest.approx(3.97)
    # a policy without solutions: no solve stats
    hold = compute_metrics(run_backtest(book, MarketPath(spot=spot), _Hold()))
    assert hold.solves == 0 and math.isnan(hold.solve_time_median_ms)
    assert hold.margin_calls == 0 and hold.sweep_cost_bps == 0.0


class _Hold(Policy):
    name = "hold"

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        return current_holdings(book, market)


class _OpenLong(Policy):
    """Opens a long perpetual of ``usd`` at the first step, then holds."""

    name = "open_long"

    def __init__(self, usd: float) -> None:
        self.usd, self.done = usd, False

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        if self.done:
            return held
        self.done = True
        return TargetHoldings(spot=held.spot, futures={"BTC-PERP": self.usd})


def test_a_book_whose_collateral_is_gone_counts_as_a_margin_call() -> None:
    """1,000 of cash behind a 10,000 long at 100: at 80 the position has lost 2,000, so the
    collateral is -1,000 with the position open: MM / collateral is unbounded, the book is
    liquidated, and that step is a margin call with an infinite peak (the old metrics dropped the
    step: peak 7%, no margin call). The account owes no more than it holds: the insurance fund
    takes the wallet's deficit, 1,000 - 1 (the 1 bp half spread on the 10,000 opened) - 2,000 - 80
    (the penalty, 1% of 8,000) = -1,081, and the wallet is back at 0."""
    perp = FuturesContract("BTC-PERP", "BTC", taker_fee=0.0, min_notional=0.0)
    book = Book((SpotAsset("BTC"),), (perp,), spot={"BTC": 1.0}, targets={"BTC": 1.0}, cash=1000.0)
    spot = pd.DataFrame({"BTC": [100.0, 97.0, 80.0, 80.0]},
                        index=pd.date_range(D0, periods=4, freq="D"))
    res = run_backtest(book, MarketPath(spot=spot), _OpenLong(10_000.0), collateral=NO_SWEEPS,
                       spot_fee=0.0)
    s = res.steps
    assert math.isinf(float(s["margin_ratio"].iloc[2])) and bool(s["liquidated"].iloc[2])
    assert float(s["liquidation_penalty"].iloc[2]) == pytest.approx(80.0, abs=1e-9)
    assert float(s["insurance_fund"].iloc[2]) == pytest.approx(1_081.0, abs=1e-9)
    assert float(s["cash"].iloc[2]) >= 0.0
    m = compute_metrics(res)
    assert m.liquidations == 1 and m.margin_calls >= 1
    assert math.isinf(m.peak_margin_ratio)
    # the fund took the whole penalty: the holder paid none of it (the 1,001 beyond offsets a
    # trading loss, not a cost)
    assert m.penalty_bps == 0.0
