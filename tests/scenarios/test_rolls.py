"""Dated futures in the replay: basis marks, settlement at expiry, rolling a chain (hand-computed).

Conventions of the hand examples: daily steps from 2025-01-01 UTC, BTC spot S_k = 10,000 + 100 k at
step k, basis b = 3.65% a year (so b / 365 = 1e-4 per day: P = S (1 + 1e-4 x days to expiry)),
taker fee 5 bp, half spread 0 (fees are then exactly 5 bp of |notional|), no ADV (no impact).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition, TargetsBase
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.synthetic import generate_history
from models.tax import TaxLot, TaxRates
from optimizer.policies import NaiveFutures, OptimizedFutures, Policy, TargetHoldings, current_holdings
from optimizer.settings import CostSettings, FundingForecastRule, OptimizerSettings, SpotLegSettings
from scenarios.backtest_result import BacktestResult
from scenarios.collateral import NO_SWEEPS, CollateralPolicy
from scenarios.dated_basis import DEFAULT_BASIS, BasisModel, with_dated_marks
from scenarios.market_path import MarketPath
from scenarios.replay import own_cash, policy_costs, run_backtest
from scenarios.rolls import RollingPolicy

D0 = pd.Timestamp("2025-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
B_ANN = 0.0365
FEE = 0.0005


def dated(symbol: str, expiry_day: int, underlying: str = "BTC") -> FuturesContract:
    return FuturesContract(symbol, underlying, kind=ContractKind.DATED, taker_fee=FEE,
                           expiry=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=expiry_day))


Q1 = dated("BTC-Q1", 10)
Q2 = dated("BTC-Q2", 40)


def spot_at(k: int) -> float:
    return 10_000.0 + 100.0 * k


def hand_path(n: int, contracts: tuple[FuturesContract, ...] = (Q1, Q2),
              flat: bool = False) -> MarketPath:
    idx = pd.date_range(D0, periods=n, freq="D")
    spot = pd.DataFrame({"BTC": [10_000.0 if flat else spot_at(k) for k in range(n)]}, index=idx)
    path = MarketPath(spot=spot, half_spread=pd.Series(dict.fromkeys(
        [c.symbol for c in contracts], 0.0)))
    return with_dated_marks(path, contracts, BasisModel.constant({"BTC": B_ANN}))


def hand_book(contracts: tuple[FuturesContract, ...] = (Q1, Q2)) -> Book:
    return Book((SpotAsset("BTC"),), contracts, spot={"BTC": 1.0}, targets={"BTC": 1.0},
                cash=5_000.0)


class OpenThenHold(Policy):
    """Holds, except at the listed times, where it sets futures notional (USD)."""

    name = "open_then_hold"

    def __init__(self, futures: Mapping[pd.Timestamp, Mapping[str, float]]) -> None:
        self.futures = dict(futures)

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        return TargetHoldings(spot=held.spot, futures={**held.futures, **self.futures.get(t, {})})


def identity_gap(result: BacktestResult) -> pd.Series:
    s = result.steps
    explained = (s["spot_pnl"] + s["futures_pnl"] - s["fee_spot"] - s["slippage_spot"]
                 - s["fee_futures"] - s["slippage_futures"] - s["funding"] - s["liquidation_penalty"]
                 + s["insurance_fund"] - s["sweep_fees"])
    return (s["nav"].diff() - explained).iloc[1:]


# --- basis model and dated marks --------------------------------------------------------------

def test_dated_price_converges_to_spot_at_expiry() -> None:
    path = hand_path(13)
    mark = path.mark
    assert mark is not None
    for k in (0, 3, 9):
        assert mark["BTC-Q1"].iloc[k] == pytest.approx(spot_at(k) * (1 + 1e-4 * (10 - k)), rel=1e-14)
        assert mark["BTC-Q2"].iloc[k] == pytest.approx(spot_at(k) * (1 + 1e-4 * (40 - k)), rel=1e-14)
    assert mark["BTC-Q1"].iloc[10] == spot_at(10)          # at expiry: exactly spot
    assert mark["BTC-Q1"].iloc[12] == spot_at(12)          # after expiry: spot
    assert mark["BTC-Q1"].iloc[0] == pytest.approx(10_010.0)


def test_basis_fit_funding_premium_and_default() -> None:
    idx = pd.date_range(D0, periods=5, freq="D")
    spot = pd.DataFrame({"BTC": 100.0, "ETH": 10.0, "SOL": 1.0}, index=idx)
    settle = pd.date_range(D0 + pd.Timedelta(hours=8), periods=12, freq="8h")
    funding = pd.DataFrame({"BTC-PERP": [1e-4, 3e-4] * 6}, index=settle)
    mark = pd.DataFrame({"ETH-PERP": 10.0 * 1.0002}, index=idx)
    path = MarketPath(spot=spot, mark=mark, funding=funding)
    perps = [FuturesContract("BTC-PERP", "BTC"), FuturesContract("ETH-PERP", "ETH")]
    model = BasisModel.fit(path, perps)
    btc = model.annual("BTC", idx)
    assert btc[0] == DEFAULT_BASIS                       # no settlement yet at t0
    assert btc[1] == pytest.approx(np.mean([1e-4, 3e-4, 1e-4]) * 3 * 365)  # 08h, 16h, 00h
    assert btc[4] == pytest.approx(2e-4 * 3 * 365)       # 12 settlements, mean 2e-4 per 8 h
    assert model.annual("ETH", idx) == pytest.approx(np.full(5, 0.0002 * 1095))
    assert np.all(model.annual("SOL", idx) == DEFAULT_BASIS)


def test_with_dated_marks_replaces_perp_marks_and_drops_funding() -> None:
    hist = generate_history(("BTC",), days=20, seed=3)
    perp = FuturesContract("BTC-PERP", "BTC")
    q = FuturesContract("BTC-Q1", "BTC", kind=ContractKind.DATED,
                        expiry=hist.spot.index[0].to_pydatetime() + timedelta(days=15))
    base = MarketPath.from_synthetic(hist, (perp, q))
    out = with_dated_marks(base, (perp, q), BasisModel.fit(base, (perp, q)))
    assert out.mark is not None and base.mark is not None
    pd.testing.assert_series_equal(out.mark["BTC-PERP"], base.mark["BTC-PERP"])
    assert out.mark["BTC-Q1"].iloc[-1] == hist.spot["BTC"].iloc[-1]  # past expiry: spot
    assert out.funding is not None and "BTC-Q1" not in out.funding.columns


# --- settlement at expiry ---------------------------------------------------------------------

def test_held_dated_position_settles_at_expiry() -> None:
    policy = OpenThenHold({D0: {"BTC-Q1": 5_000.0}, D0 + 11 * DAY: {"BTC-Q1": 5_000.0}})
    res = run_backtest(hand_book((Q1,)), hand_path(13, (Q1,)), policy, collateral=NO_SWEEPS)
    q = 5_000.0 / 10_010.0                                # bought at P_0 = 10,000 x 1.001
    settle_fee = FEE * q * 11_000.0                       # at S_10 = 11,000
    s = res.steps
    settle = res.trades[res.trades["kind"] == "settle"]
    assert len(settle) == 1
    row = settle.iloc[0]
    assert row["time"] == D0 + 10 * DAY and row["symbol"] == "BTC-Q1"
    assert row["quantity"] == pytest.approx(-q) and row["price"] == 11_000.0
    assert row["fee"] == pytest.approx(settle_fee)
    assert s["fee_futures"].iloc[0] == pytest.approx(2.5)
    assert s["fee_futures"].iloc[10] == pytest.approx(settle_fee)
    assert s["futures_pnl"].sum() == pytest.approx(q * (11_000.0 - 10_010.0))
    assert s["cash"].iloc[10] == pytest.approx(5_000.0 - 2.5 + q * 990.0 - settle_fee)
    assert res.futures_notional["BTC-Q1"].iloc[10:].eq(0.0).all()
    assert s["fee_futures"].iloc[11] == 0.0               # an expired contract is not reopened
    assert (res.trades["kind"] == "futures").sum() == 1
    assert np.abs(identity_gap(res)).max() < 1e-9


def test_position_already_expired_at_the_start_settles_on_the_first_step() -> None:
    book = Book((SpotAsset("BTC"),), (Q1,), spot={"BTC": 1.0}, targets={"BTC": 1.0},
                cash=5_000.0, futures={"BTC-Q1": FuturesPosition(-0.5, 10_500.0)})
    idx = pd.date_range(D0 + 12 * DAY, periods=2, freq="D")
    path = MarketPath(spot=pd.DataFrame({"BTC": [11_000.0, 11_100.0]}, index=idx))
    res = run_backtest(book, path, OpenThenHold({}), collateral=NO_SWEEPS)
    fee = FEE * 0.5 * 11_000.0
    assert res.steps["fee_futures"].iloc[0] == pytest.approx(fee)
    assert res.steps["cash"].iloc[0] == pytest.approx(5_000.0 - 0.5 * 500.0 - fee)
    assert list(res.trades["kind"]) == ["settle"]
    assert res.futures_notional["BTC-Q1"].eq(0.0).all()


def test_settlement_at_spot_when_mark_has_not_converged() -> None:
    idx = pd.date_range(D0, periods=12, freq="D")
    spot = pd.DataFrame({"BTC": [spot_at(k) for k in range(12)]}, index=idx)
    path = MarketPath(spot=spot, mark=pd.DataFrame({"BTC-Q1": spot["BTC"] * 1.01}),
                      half_spread=pd.Series({"BTC-Q1": 0.0}))
    res = run_backtest(hand_book((Q1,)), path, OpenThenHold({D0: {"BTC-Q1": -5_000.0}}),
                       collateral=NO_SWEEPS)
    q = -5_000.0 / 10_100.0
    s = res.steps
    # step 10: marked 11,009 -> 11,110, then re-marked from 11,110 to the spot 11,000
    assert s["futures_pnl"].iloc[10] == pytest.approx(q * (11_110.0 - 11_009.0)
                                                      + q * (11_000.0 - 11_110.0))
    assert s["futures_pnl"].sum() == pytest.approx(q * (11_000.0 - 10_100.0))
    assert s["fee_futures"].iloc[10] == pytest.approx(FEE * abs(q) * 11_000.0)
    assert np.abs(identity_gap(res)).max() < 1e-9


# --- rolling a chain --------------------------------------------------------------------------

def rolled(n: int, days_before: float = 3.0, flat: bool = False) -> BacktestResult:
    inner = OpenThenHold({D0: {"BTC-Q1": 5_000.0}})
    return run_backtest(hand_book(), hand_path(n, flat=flat), RollingPolicy(inner, (Q1, Q2),
                        roll_days_before=days_before), collateral=NO_SWEEPS)


def test_roll_exactly_roll_days_before_expiry() -> None:
    res = rolled(13)
    q1 = 5_000.0 / 10_010.0
    p_from = 10_700.0 * (1 + 3e-4)                       # Q1 at step 7, 3 days left
    p_to = 10_700.0 * (1 + 33e-4)                        # Q2 at step 7, 33 days left
    n = q1 * p_from
    assert len(res.rolls) == 1
    r = res.rolls.iloc[0]
    assert r["time"] == D0 + 7 * DAY and r["step"] == 7
    assert (r["from"], r["to"]) == ("BTC-Q1", "BTC-Q2")
    assert r["from_price"] == pytest.approx(p_from) and r["to_price"] == pytest.approx(p_to)
    assert r["notional"] == pytest.approx(n) and r["opened"] == pytest.approx(n)
    assert r["fee"] == pytest.approx(2 * FEE * n) and r["slippage"] == 0.0
    assert r["basis"] == pytest.approx(n * (p_to - p_from) / p_to)
    s = res.steps
    assert s["fee_futures"].iloc[7] == pytest.approx(2 * FEE * n)
    assert s["fee_futures"].drop(s.index[[0, 7]]).eq(0.0).all()
    legs = res.trades[res.trades["time"] == D0 + 7 * DAY]
    assert list(legs["symbol"]) == ["BTC-Q1", "BTC-Q2"]
    assert legs["notional"].to_numpy() == pytest.approx([-n, n])
    fn = res.futures_notional
    assert fn["BTC-Q1"].iloc[:7].gt(0).all() and fn["BTC-Q1"].iloc[7:].eq(0).all()
    assert fn["BTC-Q2"].iloc[:7].eq(0).all()
    assert fn["BTC-Q2"].iloc[7] == pytest.approx(n)
    assert (res.trades["kind"] == "settle").sum() == 0   # Q1 was flat at its expiry
    # Q1 PnL realised at the roll: q1 (P_from - P_0); then Q2 marked from p_to
    q2 = n / p_to
    p2_12 = 11_200.0 * (1 + 28e-4)
    assert s["futures_pnl"].sum() == pytest.approx(q1 * (p_from - 10_010.0) + q2 * (p2_12 - p_to))
    assert s["cash"].iloc[-1] == pytest.approx(5_000.0 - 2.5 - 2 * FEE * n
                                               + q1 * (p_from - 10_010.0))
    assert np.abs(identity_gap(res)).max() < 1e-9


def test_basis_of_the_roll_is_paid_as_the_new_leg_converges() -> None:
    res = rolled(37, flat=True)                          # spot flat at 10,000; to step 36
    n = (5_000.0 / 10_010.0) * 10_003.0
    p_to = 10_033.0
    assert res.rolls.iloc[0]["basis"] == pytest.approx(n * (p_to - 10_003.0) / p_to)
    # Q2 from step 7 (33 days left) to step 36 (4 days left): q2 x 10,000 x 1e-4 x (4 - 33)
    assert res.steps["futures_pnl"].iloc[8:].sum() == pytest.approx(n / p_to * 10_000.0 * -29e-4)
    assert np.abs(identity_gap(res)).max() < 1e-9


def test_no_roll_when_not_due() -> None:
    res = rolled(7)                                      # steps 0..6: Q1 has 4+ days left
    assert res.rolls.empty
    assert res.futures_notional["BTC-Q2"].eq(0.0).all()
    assert (res.trades["kind"] == "futures").sum() == 1
    late = rolled(13, days_before=2.0)                  # rolls at step 8 instead
    assert list(late.rolls["step"]) == [8]
    policy = RollingPolicy(OpenThenHold({}), (Q1, Q2), roll_days_before=3)
    assert policy.active(D0 + 7 * DAY - pd.Timedelta(seconds=1)) == Q1
    assert policy.active(D0 + 7 * DAY) == Q2
    assert policy.active(D0 + 37 * DAY) is None


def test_rolling_naive_overlay_rolls_each_contract_before_its_expiry() -> None:
    hist = generate_history(("BTC", "ETH"), days=60, seed=11)
    t0 = hist.spot.index[0].to_pydatetime()
    chain = tuple(FuturesContract(f"BTC-{i}", "BTC", kind=ContractKind.DATED,
                                  expiry=t0 + timedelta(days=d, hours=8))
                  for i, d in enumerate((20, 50, 110)))
    perp = FuturesContract("ETH-PERP", "ETH")
    cons = (*chain, perp)
    base = MarketPath.from_synthetic(hist, cons)
    path = with_dated_marks(base, cons, BasisModel.fit(base, (FuturesContract("BTC-PERP", "BTC"),
                                                                 perp)))
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), cons, spot={"BTC": 1.0, "ETH": 5.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=20_000.0)

    a = run_backtest(book, path, RollingPolicy(NaiveFutures(period="7D"), chain))
    assert list(a.rolls["from"]) == ["BTC-0", "BTC-1"] and list(a.rolls["to"]) == ["BTC-1", "BTC-2"]
    # each roll happens before the old contract's expiry, and nothing is held in it from then on
    for _, roll in a.rolls.iterrows():
        expiry_dt = next(c.expiry for c in chain if c.symbol == roll["from"])
        assert expiry_dt is not None  # a dated contract of the chain
        expiry = pd.Timestamp(expiry_dt)
        assert roll["time"] < expiry
        assert (a.futures_notional.loc[a.futures_notional.index >= roll["time"], roll["from"]] == 0).all()
    assert list(a.rolls["time"]) == [t0 + timedelta(days=18), t0 + timedelta(days=48)]
    assert not a.steps["liquidated"].any()
    assert np.abs(identity_gap(a)).max() < 1e-6 * float(a.steps["nav"].abs().max())
    assert math.isclose(float(a.futures_notional["BTC-0"].iloc[18:].abs().max()), 0.0)


# ---------------------------------------------------------------- the optimiser behind the wrapper


def _optimiser(spot: SpotLegSettings | None = None) -> OptimizedFutures:
    risk = RiskModel.from_covariance(["BTC"], np.array([[0.36]]))
    return OptimizedFutures(risk, OptimizerSettings(
        costs=CostSettings(funding_forecast=FundingForecastRule.EWMA),
        spot=spot or SpotLegSettings()))


def test_the_replay_reads_the_optimiser_behind_a_rolling_wrapper() -> None:
    """The replay's funding-forecast rule, and the wallet rule of a spot-trading optimiser on a
    NAV base, come from the optimiser the wrapper drives, as for the optimiser alone."""
    inner = _optimiser()
    rolling = RollingPolicy(inner, (Q1, Q2))
    assert rolling.optimiser() is inner and inner.optimiser() is inner
    assert policy_costs(rolling) is inner.settings.costs
    costs = policy_costs(rolling)
    assert costs is not None and costs.funding_forecast == FundingForecastRule.EWMA
    assert policy_costs(RollingPolicy(NaiveFutures(), (Q1, Q2))) is None
    nav_book = dataclasses.replace(hand_book(), targets_base=TargetsBase.NAV)
    hybrid = RollingPolicy(_optimiser(SpotLegSettings(enabled=True)), (Q1, Q2))
    assert own_cash(CollateralPolicy(0.1), nav_book, hybrid) is NO_SWEEPS
    assert own_cash(CollateralPolicy(0.1), nav_book, rolling).enabled


def test_a_wrapped_optimiser_that_prices_tax_is_refused_before_the_replay() -> None:
    """The replay hands tax lots only to the optimiser itself: a wrapper around one whose spot
    leg prices tax is one clear error, not a replay without the lots."""
    lots = {"BTC": (TaxLot(1.0, 9_000.0, datetime(2024, 1, 1, tzinfo=UTC)),)}
    taxed = _optimiser(SpotLegSettings(enabled=True, rates=TaxRates(0.3, 0.15), lots=lots))
    with pytest.raises(ValidationError, match="wraps an optimiser"):
        run_backtest(hand_book(), hand_path(5), RollingPolicy(taxed, (Q1, Q2)), collateral=NO_SWEEPS)
