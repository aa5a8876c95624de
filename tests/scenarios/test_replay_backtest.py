"""The backtester: a hand-computed example, the PnL identity, funding, liquidation, determinism.

No network; the long runs use the embedded seeded synthetic generator.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.io import default_data_dir, load_funding, load_mark_closes, load_spot_closes
from models.market import MarketSnapshot
from models.synthetic import generate_history
from optimizer.policies import (
    CalendarSpotRebalance,
    NaiveFutures,
    NoRebalance,
    Policy,
    TargetHoldings,
    current_holdings,
)
from scenarios.backtest_result import BacktestResult
from scenarios.collateral import NO_SWEEPS, CollateralPolicy
from scenarios.market_path import MarketPath
from scenarios.metrics import compute_metrics, max_drawdown
from scenarios.replay import run_backtest

D0 = pd.Timestamp("2025-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
HOUR = pd.Timedelta(hours=1)


class Scripted(Policy):
    """Holds, except at the listed times, where it sets spot quantities and/or futures notional."""

    name = "scripted"

    def __init__(self, futures: Mapping[pd.Timestamp, Mapping[str, float]] | None = None,
                 spot: Mapping[pd.Timestamp, Mapping[str, float]] | None = None) -> None:
        self.futures = dict(futures or {})
        self.spot = dict(spot or {})

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        return TargetHoldings(spot={**held.spot, **self.spot.get(t, {})},
                              futures={**held.futures, **self.futures.get(t, {})})


def days(n: int) -> pd.DatetimeIndex:
    return pd.date_range(D0, periods=n, freq="D")


def identity_gap(result: BacktestResult) -> pd.Series:
    """nav_t - nav_{t-1} minus the sum of the recorded components (should be ~0)."""
    s = result.steps
    explained = (s["spot_pnl"] + s["futures_pnl"] - s["fee_spot"] - s["slippage_spot"]
                 - s["fee_futures"] - s["slippage_futures"] - s["funding"] - s["liquidation_penalty"]
                 + s["insurance_fund"] - s["sweep_fees"])
    return (s["nav"].diff() - explained).iloc[1:]


# --- (a) a hand-computed 3-step example ------------------------------------------------------

def test_hand_computed_three_steps() -> None:
    perp = FuturesContract("BTC-PERP", "BTC", taker_fee=0.0005)
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), (perp,), spot={"BTC": 1.0, "ETH": 10.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=10_000.0)
    idx = days(3)
    spot = pd.DataFrame({"BTC": [60_000.0, 66_000.0, 63_000.0], "ETH": [3_000.0, 2_900.0, 3_100.0]},
                        index=idx)
    mark = pd.DataFrame({"BTC-PERP": [60_100.0, 66_100.0, 63_050.0]}, index=idx)
    funding = pd.DataFrame(
        {"BTC-PERP": [0.0002, 0.0001, 0.05]},
        index=pd.DatetimeIndex([D0 + 16 * HOUR,         # step 1, no position yet: pays nothing
                                D0 + DAY + 16 * HOUR,   # step 2: the one settlement that pays
                                D0 + 2 * DAY + 8 * HOUR]))  # after the last step: ignored
    path = MarketPath(spot=spot, mark=mark, funding=funding,
                      half_spread=pd.Series({"BTC-PERP": 0.0001}))
    policy = Scripted(futures={idx[1]: {"BTC-PERP": -33_050.0}})
    res = run_backtest(book, path, policy)
    s = res.steps

    # step 0: nothing to mark, the policy holds.
    #   NAV = 1 x 60,000 + 10 x 3,000 + 10,000 cash = 100,000.00
    assert s["nav"].iloc[0] == pytest.approx(100_000.00, abs=0.005)
    assert s["cash"].iloc[0] == pytest.approx(10_000.00, abs=0.005)

    # step 1: spot 66,000 + 29,000 = 95,000 (spot PnL +5,000); no position, so the settlement at
    # 16:00 of day 0 pays 0. Policy shorts 33,050 USD at mark 66,100 = -0.5 contracts.
    #   fee = 0.0005 x 33,050 = 16.525; half spread = 0.0001 x 33,050 = 3.305; total 19.83
    #   cash = 10,000 - 19.83 = 9,980.17; NAV = 95,000 + 9,980.17 + 0 (fresh position) = 104,980.17
    assert s["spot_pnl"].iloc[1] == pytest.approx(5_000.00, abs=0.005)
    assert s["fee_futures"].iloc[1] == pytest.approx(16.525, abs=1e-9)
    assert s["slippage_futures"].iloc[1] == pytest.approx(3.305, abs=1e-9)
    assert s["cash"].iloc[1] == pytest.approx(9_980.17, abs=0.005)
    assert s["nav"].iloc[1] == pytest.approx(104_980.17, abs=0.005)

    # step 2: spot 63,000 + 31,000 = 94,000 (spot PnL -1,000).
    #   futures PnL = -0.5 x (63,050 - 66,100) = +1,525.00 (unrealised, in the wallet)
    #   funding (settlement at 16:00 of day 1, rate 0.0001) on notional -0.5 x 63,050 = -31,525:
    #   paid = 0.0001 x -31,525 = -3.1525 (the short receives) -> cash = 9,980.17 + 3.1525 = 9,983.3225
    #   NAV = 94,000 + 9,983.3225 + 1,525 = 105,508.3225
    #   margin: MM = 0.005 x 31,525 = 157.625; collateral = 9,983.3225 + 1,525 = 11,508.3225
    assert s["spot_pnl"].iloc[2] == pytest.approx(-1_000.00, abs=0.005)
    assert s["futures_pnl"].iloc[2] == pytest.approx(1_525.00, abs=0.005)
    assert s["funding"].iloc[2] == pytest.approx(-3.1525, abs=1e-9)
    assert s["cash"].iloc[2] == pytest.approx(9_983.32, abs=0.005)
    assert s["nav"].iloc[2] == pytest.approx(105_508.32, abs=0.005)
    assert s["margin_ratio"].iloc[2] == pytest.approx(157.625 / 11_508.3225, rel=1e-12)
    assert s["wallet"].iloc[2] == pytest.approx(11_508.3225, abs=1e-6)

    assert list(res.trades["symbol"]) == ["BTC-PERP"]
    assert res.trades["quantity"].iloc[0] == pytest.approx(-0.5, rel=1e-12)
    assert res.futures_notional["BTC-PERP"].iloc[2] == pytest.approx(-31_525.0, rel=1e-12)
    # effective weights on the invested base (spot 94,000): BTC (63,000 - 31,525) / 94,000
    assert res.weights["BTC"].iloc[2] == pytest.approx(31_475.0 / 94_000.0, rel=1e-12)
    assert res.liquidations.empty
    assert float(identity_gap(res).abs().max()) < 1e-9


def test_spot_trade_moves_cash_and_pays_fee() -> None:
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), (), spot={"BTC": 1.0, "ETH": 10.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=1_000.0)
    idx = days(2)
    spot = pd.DataFrame({"BTC": [60_000.0, 66_000.0], "ETH": [3_000.0, 2_900.0]}, index=idx)
    policy = Scripted(spot={idx[1]: {"BTC": 0.9, "ETH": 12.0}})
    s = run_backtest(book, MarketPath(spot=spot), policy).steps
    # sell 0.1 BTC at 66,000 = 6,600 (fee 6.60); buy 2 ETH at 2,900 = 5,800 (fee 5.80); the
    # default spot half spread 1 bp of the 12,400 traded: 1.24
    # cash = 1,000 + 6,600 - 5,800 - 12.40 - 1.24 = 1,786.36; NAV = 0.9 x 66,000 + 12 x 2,900
    #      + 1,786.36 = 59,400 + 34,800 + 1,786.36 = 95,986.36
    assert s["fee_spot"].iloc[1] == pytest.approx(12.40, abs=1e-9)
    assert s["slippage_spot"].iloc[1] == pytest.approx(1.24, abs=1e-9)
    assert s["cash"].iloc[1] == pytest.approx(1_786.36, abs=0.005)
    assert s["nav"].iloc[1] == pytest.approx(95_986.36, abs=0.005)
    assert s["traded_spot"].iloc[1] == pytest.approx(12_400.0, abs=1e-9)


def test_total_return_counts_the_first_steps_costs() -> None:
    """A spot trade at the first step costs its fee in the total return (the return counted from
    the first row's NAV, after that trade, which left the fee out).

    1 BTC @ 60,000 + 10 ETH @ 3,000 + 1,000 cash: NAV 91,000 before any trade. At step 0 sell
    0.1 BTC (6,000, fee 6.00) and buy 2 ETH (6,000, fee 6.00), each paying the 1 bp default half
    spread (0.60 + 0.60): NAV 90,986.80 after. Step 1: BTC 66,000, ETH 2,900: NAV 0.9 x 66,000
    + 12 x 2,900 + 1,000 - 13.20 = 95,186.80. Total return 95,186.80 / 91,000 - 1 (was
    95,186.80 / 90,986.80 - 1)."""
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), (), spot={"BTC": 1.0, "ETH": 10.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=1_000.0)
    idx = days(2)
    spot = pd.DataFrame({"BTC": [60_000.0, 66_000.0], "ETH": [3_000.0, 2_900.0]}, index=idx)
    res = run_backtest(book, MarketPath(spot=spot), Scripted(spot={idx[0]: {"BTC": 0.9, "ETH": 12.0}}))
    assert res.nav_open == pytest.approx(91_000.0, abs=1e-9)
    assert res.steps["nav"].iloc[0] == pytest.approx(90_986.8, abs=1e-6)
    assert res.steps["nav"].iloc[1] == pytest.approx(95_186.8, abs=1e-6)
    assert compute_metrics(res).total_return == pytest.approx(95_186.8 / 91_000.0 - 1, abs=1e-12)


# --- (b) the PnL identity over a long synthetic run ---------------------------------------------

def synthetic_case(n_days: int = 730, seed: int = 7) -> tuple[Book, MarketPath]:
    hist = generate_history(("BTC", "ETH", "SOL"), days=n_days, seed=seed)
    cons = tuple(FuturesContract(f"{s}-PERP", s) for s in hist.symbols)
    p0 = hist.spot.iloc[0]
    book = Book(tuple(SpotAsset(s) for s in hist.symbols), cons,
                spot={"BTC": 50_000 / p0["BTC"], "ETH": 30_000 / p0["ETH"], "SOL": 20_000 / p0["SOL"]},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=20_000.0)
    return book, MarketPath.from_synthetic(hist, cons)


def test_nav_change_is_spot_plus_futures_pnl_less_costs_and_funding() -> None:
    book, path = synthetic_case()
    res = run_backtest(book, path, NaiveFutures(period="7D"))
    s = res.steps
    scale = float(s["nav"].abs().max())
    assert float(identity_gap(res).abs().max()) <= 1e-9 * scale
    total = (s["spot_pnl"].sum() + s["futures_pnl"].sum() - s["fee_spot"].sum()
             - s["slippage_spot"].sum() - s["fee_futures"].sum() - s["slippage_futures"].sum()
             - s["funding"].sum() - s["liquidation_penalty"].sum() + s["insurance_fund"].sum()
             - s["sweep_fees"].sum())
    assert s["nav"].iloc[-1] - s["nav"].iloc[0] == pytest.approx(total, rel=1e-9, abs=1e-9 * scale)
    # every component is really exercised
    assert s["liquidated"].sum() == 0
    assert abs(s["futures_pnl"].sum()) > 100.0
    assert abs(s["funding"].sum()) > 1.0
    assert s["fee_futures"].sum() > 1.0 and s["slippage_futures"].sum() > 0.0
    # recorded trades add up to the per-step totals
    fut = res.trades[res.trades["kind"] == "futures"]
    assert fut["fee"].sum() == pytest.approx(s["fee_futures"].sum(), rel=1e-12)
    assert fut["notional"].abs().sum() == pytest.approx(s["traded_futures"].sum(), rel=1e-12)
    # on a rebalance day the effective weights sit on target
    swept = set(res.trades.loc[res.trades["kind"] != "futures", "time"])
    rebal = pd.Timestamp([t for t in fut["time"] if t not in swept][-1])
    np.testing.assert_allclose(res.weights.loc[rebal].to_numpy(), [0.5, 0.3, 0.2], atol=1e-9)


def test_identity_holds_with_spot_trades_too() -> None:
    book, path = synthetic_case(n_days=200, seed=3)
    res = run_backtest(book, path, CalendarSpotRebalance("30D"))
    assert res.steps["fee_spot"].sum() > 0
    assert float(identity_gap(res).abs().max()) <= 1e-9 * float(res.steps["nav"].max())


# --- (c) funding sign ---------------------------------------------------------------------------

def one_perp_book(cash: float = 10_000.0) -> Book:
    perp = FuturesContract("BTC-PERP", "BTC", taker_fee=0.0005)
    return Book((SpotAsset("BTC"),), (perp,), spot={"BTC": 1.0}, targets={"BTC": 1.0}, cash=cash)


@pytest.mark.parametrize(("notional", "rate", "cash_change"), [
    (10_000.0, 0.001, -10.0),     # long pays when rate > 0
    (-10_000.0, 0.001, +10.0),    # short receives
    (10_000.0, -0.001, +10.0),    # long receives when rate < 0
    (-10_000.0, -0.001, -10.0),   # short pays
])
def test_funding_sign(notional: float, rate: float, cash_change: float) -> None:
    idx = days(2)
    spot = pd.DataFrame({"BTC": [100.0, 100.0]}, index=idx)
    funding = pd.DataFrame({"BTC-PERP": [rate]}, index=pd.DatetimeIndex([D0 + 8 * HOUR]))
    path = MarketPath(spot=spot, funding=funding, half_spread=pd.Series({"BTC-PERP": 0.0}))
    res = run_backtest(one_perp_book(), path, Scripted(futures={idx[0]: {"BTC-PERP": notional}}))
    s = res.steps
    assert s["funding"].iloc[1] == pytest.approx(-cash_change, abs=1e-12)
    assert s["cash"].iloc[1] - s["cash"].iloc[0] == pytest.approx(cash_change, abs=1e-9)


# --- (d) an irregular schedule: several settlements in one step are summed ---------------------

def test_irregular_settlements_are_summed_at_the_steps_mark() -> None:
    idx = days(3)
    spot = pd.DataFrame({"BTC": [100.0, 100.0, 100.0]}, index=idx)
    mark = pd.DataFrame({"BTC-PERP": [100.0, 110.0, 110.0]}, index=idx)
    times = [D0,                    # at t0: before the first interval, ignored
             D0 + 1 * HOUR, D0 + 3 * HOUR, D0 + 4 * HOUR, D0 + 13 * HOUR,
             D0 + DAY,              # on the step's own timestamp: included in (t0, t1]
             D0 + DAY + 2 * HOUR]   # next step
    rates = [0.5, 0.001, -0.002, 0.0005, 0.003, 0.0001, -0.01]
    funding = pd.DataFrame({"BTC-PERP": rates}, index=pd.DatetimeIndex(times))
    path = MarketPath(spot=spot, mark=mark, funding=funding, half_spread=pd.Series({"BTC-PERP": 0.0}))
    res = run_backtest(one_perp_book(), path, Scripted(futures={idx[0]: {"BTC-PERP": 10_000.0}}))
    s = res.steps
    # 100 contracts long; step 1 at mark 110: notional 11,000
    # (0.001 - 0.002 + 0.0005 + 0.003 + 0.0001) = 0.0026 -> paid 0.0026 x 11,000 = 28.60
    assert s["funding"].iloc[1] == pytest.approx(28.60, abs=1e-9)
    # step 2: one settlement, -0.01 x 11,000 = -110 (received)
    assert s["funding"].iloc[2] == pytest.approx(-110.0, abs=1e-9)
    assert s["funding"].iloc[0] == 0.0


# --- (e) liquidation ------------------------------------------------------------------------------

def liquidation_run(price_1: float) -> BacktestResult:
    idx = days(3)
    spot = pd.DataFrame({"BTC": [100.0, price_1, price_1]}, index=idx)
    path = MarketPath(spot=spot, half_spread=pd.Series({"BTC-PERP": 0.0001}))
    book = one_perp_book(cash=1_000.0)
    return run_backtest(book, path, Scripted(futures={idx[0]: {"BTC-PERP": 10_000.0}}),
                        liquidation_penalty=0.01)


def test_breach_of_maintenance_liquidates_at_the_penalty() -> None:
    res = liquidation_run(90.4)
    s = res.steps
    # t0: long 100 contracts at 100; cost 0.0006 x 10,000 = 6 -> cash 994
    # t1: PnL 100 x (90.4 - 100) = -960; collateral 994 - 960 = 34 < MM 0.005 x 9,040 = 45.20
    #     -> liquidate: realise -960 into cash (34), penalty 0.01 x 9,040 = 90.40 -> cash -56.40,
    #     which the insurance fund takes: cash 0
    assert s["cash"].iloc[0] == pytest.approx(994.0, abs=1e-9)
    assert s["margin_ratio"].iloc[1] == pytest.approx(45.2 / 34.0, rel=1e-9)
    assert bool(s["liquidated"].iloc[1])
    assert s["liquidation_penalty"].iloc[1] == pytest.approx(90.40, abs=1e-9)
    assert s["cash"].iloc[1] == 0.0
    assert s["insurance_fund"].iloc[1] == pytest.approx(56.40, abs=1e-9)
    assert s["nav"].iloc[1] == pytest.approx(90.4, abs=1e-9)
    assert res.futures_notional["BTC-PERP"].iloc[1] == 0.0
    assert len(res.liquidations) == 1
    assert res.liquidations["notional"].iloc[0] == pytest.approx(9_040.0, rel=1e-12)
    assert res.liquidations["penalty"].iloc[0] == pytest.approx(90.40, rel=1e-12)
    assert not bool(s["liquidated"].iloc[2])  # nothing left to liquidate
    m = compute_metrics(res)
    assert m.liquidations == 1
    # the holder paid 90.40 - 56.40 = 34.00 of the penalty (same scale as the exchange fees)
    fees_usd = float(s["fee_spot"].sum() + s["fee_futures"].sum())
    assert m.penalty_bps == pytest.approx(m.exchange_fee_bps * 34.00 / fees_usd, rel=1e-9)
    assert float(identity_gap(res).abs().max()) < 1e-9


def test_staying_above_maintenance_does_not_liquidate() -> None:
    res = liquidation_run(95.0)
    s = res.steps
    # t1: collateral 994 - 500 = 494 >= MM 0.005 x 9,500 = 47.50
    assert s["margin_ratio"].iloc[1] == pytest.approx(47.5 / 494.0, rel=1e-9)
    assert not s["liquidated"].any()
    assert res.liquidations.empty
    assert res.futures_notional["BTC-PERP"].iloc[2] == pytest.approx(9_500.0, rel=1e-12)
    assert compute_metrics(res).liquidations == 0


# --- (f) determinism ------------------------------------------------------------------------------

def test_two_runs_are_identical() -> None:
    book, path = synthetic_case(n_days=365, seed=11)
    for make in (lambda: NaiveFutures(period="7D"), lambda: CalendarSpotRebalance("30D")):
        a = run_backtest(book, path, make())
        b = run_backtest(book, path, make())
        for name, frame in a.frames().items():
            other = b.frames()[name]
            pd.testing.assert_frame_equal(frame, other, check_exact=True)
            assert frame.equals(other), name
        pd.testing.assert_series_equal(a.targets, b.targets, check_exact=True)
        assert compute_metrics(a) == compute_metrics(b)


# --- the path and the metrics -----------------------------------------------------------------------

def test_from_synthetic_aligns_contract_columns() -> None:
    _book, path = synthetic_case(n_days=30)
    assert path.synthetic
    assert path.mark is not None and path.funding is not None and path.adv is not None
    assert list(path.mark.columns) == ["BTC-PERP", "ETH-PERP", "SOL-PERP"]
    assert path.mark.index.equals(path.spot.index)
    assert len(path.funding.index) == 3 * 30


def test_market_path_rejects_naive_index() -> None:
    spot = pd.DataFrame({"BTC": [1.0, 2.0]}, index=pd.date_range("2025-01-01", periods=2, freq="D"))
    with pytest.raises(ValueError, match="tz-aware"):
        MarketPath(spot=spot)


def test_metrics() -> None:
    assert max_drawdown(pd.Series([100.0, 120.0, 90.0, 130.0, 117.0])) == pytest.approx(0.25)
    book, path = synthetic_case(n_days=365, seed=5)
    hold = compute_metrics(run_backtest(book, path, NoRebalance()))
    assert hold.fees_bps == 0.0 and hold.turnover == 0.0 and hold.funding_bps == 0.0
    assert hold.liquidations == 0 and hold.peak_margin_ratio == 0.0
    assert hold.years == pytest.approx(364 / 365)
    daily = compute_metrics(run_backtest(book, path, NaiveFutures(period="1D"), collateral=NO_SWEEPS))
    # rebalanced every step: effective weights on target at each close, so no exposure drift
    assert daily.exposure_tracking_error < 1e-10
    # sweeps after the policy's trades move spot, so the exposure drifts a little on sweep days
    swept = compute_metrics(run_backtest(book, path, NaiveFutures(period="1D")))
    assert 0 < swept.exposure_tracking_error < 1e-3
    assert daily.tracking_error < hold.tracking_error
    assert daily.fees_bps > 0 and daily.turnover > 0 and daily.peak_margin_ratio > 0
    assert 0.1 < daily.volatility < 2.0
    assert math.isfinite(daily.annual_return)


# --- (g) collateral management: sweeps between spot and the wallet --------------------------------

def sweep_case(btc_2: float, collateral: CollateralPolicy | None = None,
               spot_half: float = 0.0) -> BacktestResult:
    """BTC 10 @ 1,000 + ETH 100 @ 50 (flat) + 3,000 cash: NAV 18,000, reserve tau = 1/6.
    A short BTC hedge of 5,000 USD from t0 (no futures fee or spread; spot fee 10 bp, spot half
    spread ``spot_half``, none by default)."""
    perp = FuturesContract("BTC-PERP", "BTC", taker_fee=0.0)
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), (perp,), spot={"BTC": 10.0, "ETH": 100.0},
                targets={"BTC": 0.6, "ETH": 0.4}, cash=3_000.0)
    idx = days(3)
    spot = pd.DataFrame({"BTC": [1_000.0, 1_100.0, btc_2], "ETH": [50.0, 50.0, 50.0]}, index=idx)
    path = MarketPath(spot=spot, half_spread=pd.Series({"BTC-PERP": 0.0}),
                      spot_half_spread=pd.Series({"BTC": spot_half, "ETH": spot_half}))
    return run_backtest(book, path, Scripted(futures={idx[0]: {"BTC-PERP": -5_000.0}}),
                        collateral=collateral)


def test_losing_short_hedge_tops_up_the_wallet_from_spot() -> None:
    res = sweep_case(1_400.0)
    s = res.steps
    # t1: BTC 1,100: hedge PnL -5 x 100 = -500 -> wallet 2,500, NAV 18,500;
    #     band [1/12, 1/4] x 18,500 = [1,541.67, 4,625]: inside, no sweep
    assert s["wallet"].iloc[1] == pytest.approx(2_500.0, abs=1e-9)
    assert s[["sweep_in", "sweep_out", "sweep_fees"]].iloc[:2].to_numpy().sum() == 0.0
    # t2: BTC 1,400: spot 14,000 + 5,000 = 19,000, hedge PnL -2,000 -> wallet 1,000, NAV 20,000
    #     1,000 < 20,000 / 12 = 1,666.67: top up to tau V' (V' after the fee):
    #     G = (20,000 / 6 - 1,000) / (1 - 0.001 + 0.001 / 6) = 2,333.333 / 0.9991667 = 2,335.2794
    #     pro rata to spot values: BTC 14/19 G = 1,720.7322, ETH 5/19 G = 614.5472; fee 2.3352794
    gross = (20_000.0 / 6 - 1_000.0) / (1 - 0.001 + 0.001 / 6)
    assert gross == pytest.approx(2_335.2794, abs=1e-4)
    assert s["sweep_in"].iloc[2] == pytest.approx(gross, rel=1e-12)
    assert s["sweep_fees"].iloc[2] == pytest.approx(0.001 * gross, rel=1e-12)
    assert s["fee_spot"].iloc[2] == 0.0  # sweep fees are counted apart
    nav = 20_000.0 - 0.001 * gross                                    # 19,997.6647
    assert s["nav"].iloc[2] == pytest.approx(nav, rel=1e-12)
    assert s["wallet"].iloc[2] == pytest.approx(1_000.0 + 0.999 * gross, rel=1e-12)
    assert s["wallet"].iloc[2] == pytest.approx(nav / 6, rel=1e-12)   # back on target: 3,332.944
    sw = res.trades[res.trades["kind"] == "sweep_in"].set_index("symbol")
    assert sw.loc["BTC", "notional"] == pytest.approx(-gross * 14 / 19, rel=1e-12)  # -1,720.7322
    assert sw.loc["ETH", "quantity"] == pytest.approx(-gross * 5 / 19 / 50, rel=1e-12)  # -12.2909
    assert res.spot_value["ETH"].iloc[2] == pytest.approx(5_000.0 - gross * 5 / 19, rel=1e-12)
    assert float(identity_gap(res).abs().max()) < 1e-9
    # without sweeps the wallet is left at 1,000
    off = sweep_case(1_400.0, NO_SWEEPS).steps
    assert off["wallet"].iloc[2] == pytest.approx(1_000.0, abs=1e-9)
    assert off["sweep_in"].sum() == 0.0


def test_a_sweep_pays_the_spot_half_spread_with_the_fee() -> None:
    """The losing case with a 5 bp spot half spread: the sale pays fee + half spread, r = 15 bp,
    so G = (20,000 / 6 - 1,000) / (1 - r + r / 6) and sweep_fees = r G; the wallet is back on
    tau of the NAV after them."""
    s = sweep_case(1_400.0, spot_half=5e-4).steps
    r = 0.001 + 5e-4
    gross = (20_000.0 / 6 - 1_000.0) / (1 - r + r / 6)
    assert s["sweep_in"].iloc[2] == pytest.approx(gross, rel=1e-12)
    assert s["sweep_fees"].iloc[2] == pytest.approx(r * gross, rel=1e-12)
    assert s["nav"].iloc[2] == pytest.approx(20_000.0 - r * gross, rel=1e-12)
    assert s["wallet"].iloc[2] == pytest.approx(s["nav"].iloc[2] / 6, rel=1e-12)


def test_winning_short_hedge_sweeps_the_excess_into_target_weights() -> None:
    res = sweep_case(600.0)
    s = res.steps
    # t2: BTC 600: spot 6,000 + 5,000 = 11,000, hedge PnL +2,000 -> wallet 5,000, NAV 16,000
    #     5,000 > 16,000 / 4 = 4,000: buy spot with B = (5,000 - 16,000 / 6) / (1 + 0.001 - 0.001 / 6)
    #     = 2,333.333 / 1.00083333 = 2,331.3905, 60 % BTC / 40 % ETH (target weights)
    gross = (5_000.0 - 16_000.0 / 6) / (1 + 0.001 - 0.001 / 6)
    assert gross == pytest.approx(2_331.3905, abs=1e-4)
    assert s["sweep_out"].iloc[2] == pytest.approx(gross, rel=1e-12)
    assert s["sweep_in"].iloc[2] == 0.0
    assert s["wallet"].iloc[2] == pytest.approx(s["nav"].iloc[2] / 6, rel=1e-12)
    assert s["nav"].iloc[2] == pytest.approx(16_000.0 - 0.001 * gross, rel=1e-12)
    assert res.spot_value["BTC"].iloc[2] == pytest.approx(6_000.0 + 0.6 * gross, rel=1e-12)
    assert float(identity_gap(res).abs().max()) < 1e-9


def test_a_wider_band_or_explicit_target() -> None:
    # band 1.0: [0, 2 tau] -> the losing hedge at t2 (wallet 1,000 > 0) is left alone
    assert sweep_case(1_400.0, CollateralPolicy(band=1.0)).steps["sweep_in"].sum() == 0.0
    # an explicit target of 10 % with band 0.05: t0 (wallet 3,000 / 18,000 = 16.7 %) sweeps out
    s = sweep_case(1_400.0, CollateralPolicy(target_fraction=0.1, band=0.05)).steps
    assert s["sweep_out"].iloc[0] > 0
    assert s["wallet"].iloc[0] == pytest.approx(0.1 * s["nav"].iloc[0], rel=1e-12)
    with pytest.raises(ValueError, match="band"):
        CollateralPolicy(band=-0.1)


@pytest.mark.parametrize("policy", [lambda: NaiveFutures(period="7D"),
                                    lambda: NaiveFutures(band=0.05)])
def test_identity_holds_with_sweeps_over_a_long_run(policy: Callable[[], Policy]) -> None:
    book, path = synthetic_case()
    res = run_backtest(book, path, policy())
    s = res.steps
    assert (s["sweep_in"] + s["sweep_out"]).sum() > 0 and s["sweep_fees"].sum() > 0
    assert float(identity_gap(res).abs().max()) <= 1e-9 * float(s["nav"].abs().max())
    sweeps = res.trades[res.trades["kind"].isin(["sweep_in", "sweep_out"])]
    assert sweeps["slippage"].sum() > 0  # the path has spot ADV: sweeps pay their impact
    assert (sweeps["fee"] + sweeps["slippage"]).sum() == pytest.approx(s["sweep_fees"].sum(),
                                                                       rel=1e-12)


def test_sweeps_prevent_the_liquidations_of_a_drained_wallet() -> None:
    book, path = synthetic_case(n_days=365, seed=11)
    off = run_backtest(book, path, NaiveFutures(band=0.05), collateral=NO_SWEEPS)
    assert off.steps["liquidated"].sum() > 0
    on = run_backtest(book, path, NaiveFutures(band=0.05))
    assert on.steps["liquidated"].sum() == 0
    assert on.liquidations.empty
    assert on.steps["sweep_in"].sum() > 0
    # a spot-only book has no wallet to manage: default off
    spot_only = Book(book.assets, (), spot=book.spot, targets=book.targets, cash=book.cash)
    hold = run_backtest(spot_only, MarketPath(spot=path.spot), NoRebalance()).steps
    assert hold[["sweep_in", "sweep_out"]].to_numpy().sum() == 0.0


# --- (h) the real-data path ---------------------------------------------------------------------

DATA_DIR = default_data_dir()
#: tests/conftest.py skips these, with the reason, when ../shared/data is absent
needs_data = pytest.mark.shared_data


def write_table(path: Path, index: pd.DatetimeIndex, **columns: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(columns, index=index.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.index.name = "timestamp"
    frame.to_csv(path)


def test_from_data_resamples_aligns_and_lags_adv(tmp_path: Path) -> None:
    a_open = pd.date_range(D0, periods=18, freq="4h")           # AAA: bars 00:00 day 0 .. 20:00 day 2
    write_table(tmp_path / "spot_4h" / "AAA.csv", a_open, close=[100.0 + k for k in range(18)],
                quote_volume=[1_000.0 * (k + 1) for k in range(18)])
    b_open = pd.date_range(D0 + 8 * HOUR, periods=18, freq="4h")  # BBB starts 8 h later
    write_table(tmp_path / "spot_4h" / "BBB.csv", b_open, close=[50.0 + k for k in range(18)])
    write_table(tmp_path / "perp_mark_4h" / "AAA.csv", a_open[:6],  # marks on day 0 only
                close=[200.0 + k for k in range(6)])
    settle = pd.DatetimeIndex([D0 + h * HOUR for h in (0, 8, 16, 24, 32, 34, 40, 48, 56, 64)])
    write_table(tmp_path / "funding" / "AAA.csv", settle,
                funding_rate=[0.0001 * (k + 1) for k in range(10)])
    perp = FuturesContract("AAA-PERP", "AAA")
    with pytest.warns(UserWarning) as record:
        path = MarketPath.from_data(tmp_path, [perp], step="8h", assets=["BBB"])
    note = str(record[0].message)
    # the start is BBB's first 8 h close (16:00 day 0), the end AAA's last settlement (16:00 day 2)
    assert "['spot BBB']" in note and "['funding AAA']" in note
    assert "no mark bar" in note
    idx = path.spot.index
    assert list(idx) == [D0 + h * HOUR for h in (16, 24, 32, 40, 48, 56, 64)]
    # the step at 8m hours closes the bar that opened at 8m - 4: AAA bar k = 2m - 1 -> 100 + 2m - 1
    assert list(path.spot["AAA"]) == [103.0, 105.0, 107.0, 109.0, 111.0, 113.0, 115.0]
    assert path.spot["BBB"].iloc[0] == 51.0           # BBB's bar 08:00-12:00 ... 12:00-16:00: k'=1
    assert path.mark is not None and path.funding is not None and path.adv is not None
    # marks where a bar exists (16:00, 24:00 of day 0), the spot close after that
    assert list(path.mark["AAA-PERP"]) == [203.0, 205.0, 107.0, 109.0, 111.0, 113.0, 115.0]
    # settlements kept as they are (34 h irregular), inside [first step, last step]
    assert list(path.funding.index) == [D0 + h * HOUR for h in (16, 24, 32, 34, 40, 48, 56, 64)]
    # ADV at 16:00 uses bars closed by 08:00 (k = 0, 1): mean(1,000, 2,000) x 6 bars/day = 9,000
    assert isinstance(path.adv, pd.DataFrame)
    assert path.adv["AAA-PERP"].iloc[0] == pytest.approx(9_000.0)
    # at 64 h: bars closed by 56 h: k = 0..13 -> mean 7,500 x 6 = 45,000
    assert path.adv["AAA-PERP"].iloc[-1] == pytest.approx(45_000.0)
    # the asset's own column (its spot trades' impact) is the same volume; BBB's file has none
    assert list(path.adv.columns) == ["AAA-PERP", "AAA"]
    pd.testing.assert_series_equal(path.adv["AAA"], path.adv["AAA-PERP"], check_names=False)
    # the path runs: funding at 40 h sums the settlements at 34 h and 40 h
    book = Book((SpotAsset("AAA"), SpotAsset("BBB")), (perp,), spot={"AAA": 10.0, "BBB": 10.0},
                targets={"AAA": 0.5, "BBB": 0.5}, cash=1_000.0)
    res = run_backtest(book, path, Scripted(futures={idx[0]: {"AAA-PERP": 2_030.0}}),
                       collateral=NO_SWEEPS)
    # 10 contracts (2,030 / 203); at 40 h mark 109: (0.0006 + 0.0007) x 10 x 109 = 1.417
    assert res.steps["funding"].iloc[3] == pytest.approx(0.0013 * 1_090.0, rel=1e-12)


def test_from_data_rejects_an_unknown_step(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="step"):
        MarketPath.from_data(tmp_path, [FuturesContract("AAA-PERP", "AAA")], step="2h")


@needs_data
def test_sol_november_2022_funding_is_summed_per_step() -> None:
    assert DATA_DIR is not None
    perp = FuturesContract("SOL-PERP", "SOL", taker_fee=0.0)
    path = MarketPath.from_data(DATA_DIR, [perp], start="2022-11-08", end="2022-11-14", step="8h")
    assert path.funding is not None and path.mark is None  # no SOL mark file: marked at spot
    raw = load_funding(DATA_DIR, ["SOL"], start="2022-11-08", end="2022-11-14")["SOL"].dropna()
    idx = path.spot.index
    counts = [int(((raw.index > a) & (raw.index <= b)).sum()) for a, b in itertools.pairwise(idx)]
    assert max(counts) >= 4  # settlements every 2 h for part of November 2022
    p0 = float(path.spot["SOL"].iloc[0])
    book = Book((SpotAsset("SOL"),), (perp,), spot={"SOL": 100.0}, targets={"SOL": 1.0},
                cash=10_000.0)
    res = run_backtest(book, path, Scripted(futures={idx[0]: {"SOL-PERP": 10_000.0}}),
                       collateral=NO_SWEEPS)
    q = 10_000.0 / p0
    spot = path.spot["SOL"].to_numpy()
    expected = [float(raw[(raw.index > a) & (raw.index <= b)].sum()) * q * spot[k + 1]
                for k, (a, b) in enumerate(itertools.pairwise(idx))]
    np.testing.assert_allclose(res.steps["funding"].to_numpy()[1:], expected, rtol=1e-12, atol=1e-12)
    # e.g. 2022-11-10 16:00: four settlements (10:00 .. 16:00) summing to -5.74 %
    k = idx.get_loc(pd.Timestamp("2022-11-10 16:00", tz="UTC"))
    assert res.steps["funding"].iloc[k] == pytest.approx(-0.057393 * q * spot[k], rel=1e-4)


@needs_data
def test_from_data_on_the_shared_files_is_causal() -> None:
    assert DATA_DIR is not None
    cons = [FuturesContract("BTC-PERP", "BTC"), FuturesContract("ETH-PERP", "ETH")]
    path = MarketPath.from_data(DATA_DIR, cons, start="2023-03-01", end="2023-03-31", step="8h")
    raw = load_spot_closes(DATA_DIR, ["BTC"], interval="4h", start="2023-01-01", end="2023-04-01")
    marks = load_mark_closes(DATA_DIR, ["BTC"], start="2023-01-01", end="2023-04-01")
    t = pd.Timestamp("2023-03-10 08:00", tz="UTC")
    # the 08:00 step closes the 04:00 bar
    assert path.spot["BTC"].to_dict()[t] == raw["BTC"].to_dict()[t - 4 * HOUR]
    assert path.mark is not None
    assert path.mark["BTC-PERP"].to_dict()[t] == marks["BTC"].to_dict()[t - 4 * HOUR]
    # ADV: 30-day mean of daily quote volume from bars closed by the previous step (00:00)
    qv = pd.read_csv(DATA_DIR / "spot_4h" / "BTC.csv.gz", index_col="timestamp", parse_dates=True)
    closes = pd.DatetimeIndex(qv.index) + pd.Timedelta(hours=4)
    prev = t - 8 * HOUR
    window = qv.loc[(closes > prev - 30 * DAY) & (closes <= prev), "quote_volume"]
    assert path.adv is not None
    assert path.adv.loc[t, "BTC-PERP"] == pytest.approx(float(window.mean()) * 6, rel=1e-9)
    daily = MarketPath.from_data(DATA_DIR, cons, start="2023-03-01", end="2023-03-31", step="1d")
    raw_1d = load_spot_closes(DATA_DIR, ["ETH"], interval="1d", start="2023-02-27", end="2023-04-01")
    t1 = pd.Timestamp("2023-03-10", tz="UTC")
    assert daily.spot["ETH"].to_dict()[t1] == raw_1d["ETH"].to_dict()[t1 - DAY]
    assert daily.spot.index[0] == pd.Timestamp("2023-03-01", tz="UTC")


def test_impact_coefficient_scales_the_impact_part_of_slippage() -> None:
    """k = 0 leaves only the half spread on each futures fill; k > 0 adds k sigma |t|^1.5/sqrt(ADV)."""
    book, path = synthetic_case()
    assert path.adv is not None  # impact needs an ADV
    runs = {k: run_backtest(book, path, NaiveFutures(period="7D"), impact_k=k) for k in (0.0, 1.0)}
    fut = runs[0.0].trades[runs[0.0].trades["kind"] == "futures"]
    assert path.half_spread is not None
    spread = sum(abs(n) * float(path.half_spread[s]) for s, n in zip(fut["symbol"], fut["notional"],
                                                                       strict=True))
    assert fut["slippage"].sum() == pytest.approx(spread, rel=1e-12)
    assert runs[1.0].steps["slippage_futures"].sum() > runs[0.0].steps["slippage_futures"].sum()
    with pytest.raises(ValidationError, match="impact_k"):
        run_backtest(book, path, NaiveFutures(period="7D"), impact_k=-1.0)


def test_an_absolute_width_keeps_a_pnl_wallet_near_zero() -> None:
    """sweep_case's book (no spot half spread) with its spot pledged (ratio 0.9), target 0, width
    5% of NAV: t0 sweeps
    the 3,000 wallet out, B = 3,000 / 1.001; t1's -500 (hedge PnL) is inside [-5%, +5%] of NAV
    (the pledged spot carries the margin); t2's wallet of -2,000 (hedge PnL -1,500 more) is below
    -5% of NAV and is topped up from spot to exactly 0: G = 2,000 / (1 - 0.001)."""
    perp = FuturesContract("BTC-PERP", "BTC", taker_fee=0.0)
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), (perp,), spot={"BTC": 10.0, "ETH": 100.0},
                targets={"BTC": 0.6, "ETH": 0.4}, cash=3_000.0, pledged={"BTC": 0.9, "ETH": 0.9})
    idx = days(3)
    spot = pd.DataFrame({"BTC": [1_000.0, 1_100.0, 1_400.0], "ETH": [50.0, 50.0, 50.0]}, index=idx)
    path = MarketPath(spot=spot, half_spread=pd.Series({"BTC-PERP": 0.0}),
                      spot_half_spread=pd.Series({"BTC": 0.0, "ETH": 0.0}))
    res = run_backtest(book, path, Scripted(futures={idx[0]: {"BTC-PERP": -5_000.0}}),
                       collateral=CollateralPolicy(target_fraction=0.0, width=0.05))
    s = res.steps
    assert not s["liquidated"].any()
    assert s["sweep_out"].iloc[0] == pytest.approx(3_000.0 / 1.001, rel=1e-12)
    assert s["wallet"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert s["wallet"].iloc[1] == pytest.approx(-500.0, abs=1e-9)
    assert s[["sweep_in", "sweep_out"]].iloc[1].sum() == 0.0
    assert s["sweep_in"].iloc[2] == pytest.approx(2_000.0 / 0.999, rel=1e-12)
    assert s["wallet"].iloc[2] == pytest.approx(0.0, abs=1e-9)
    assert float(identity_gap(res).abs().max()) < 1e-9
