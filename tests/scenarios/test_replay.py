"""The replay loop by hand on a 3-step path (two assets, one perpetual, a short of 50 USD opened at
the first close): mark to market, funding, fees, the margin ratio, a liquidation with its
penalty, the default collateral band, the option checks and the result frames (USD)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.policies import Policy, TargetHoldings, current_holdings
from scenarios.collateral import NO_SWEEPS, CollateralPolicy
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

IDX = pd.date_range("2024-01-01", periods=3, freq="1D", tz="UTC")


class Once(Policy):
    """Trade to ``futures`` (USD) and ``spot`` (units, optional) at the first step, then hold."""

    name = "once"

    def __init__(self, futures: dict[str, float], spot: dict[str, float] | None = None,
                 at: int = 0) -> None:
        self.futures, self.spot, self.at, self.calls = futures, spot, at, 0

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        self.calls += 1
        if self.calls != self.at + 1:
            return held
        return TargetHoldings(spot=self.spot or held.spot, futures=self.futures)


def _book(cash: float = 1000.0) -> Book:
    return Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(FuturesContract("BTC-PERP", "BTC"),),
                spot={"BTC": 1.0, "ETH": 10.0}, targets={"BTC": 0.25, "ETH": 0.75}, cash=cash)


def _path(btc: tuple[float, float, float] = (100.0, 110.0, 99.0), **kw: object) -> MarketPath:
    spot = pd.DataFrame({"BTC": list(btc), "ETH": [10.0, 10.0, 10.0]}, index=IDX)
    funding = pd.DataFrame({"BTC-PERP": [0.001]}, index=[IDX[2]])
    return MarketPath(spot=spot, funding=funding, half_spread=pd.Series({"BTC-PERP": 0.0}), **kw)  # type: ignore[arg-type]


def test_three_steps_by_hand() -> None:
    r = run_backtest(_book(), _path(), Once({"BTC-PERP": -50.0}), collateral=NO_SWEEPS)
    s = r.steps
    # step 0: sell 0.5 BTC-PERP at 100, taker fee 0.0005 x 50 = 0.025
    assert s["fee_futures"].tolist() == pytest.approx([0.025, 0.0, 0.0])
    assert s["traded_futures"].tolist() == pytest.approx([50.0, 0.0, 0.0])
    # futures PnL: -0.5 x (110 - 100) = -5, then -0.5 x (99 - 110) = +5.5; spot: +10, -11
    assert s["futures_pnl"].tolist() == pytest.approx([0.0, -5.0, 5.5])
    assert s["spot_pnl"].tolist() == pytest.approx([0.0, 10.0, -11.0])
    # funding at step 2: rate 0.001 x notional (-0.5 x 99): the short receives 0.0495
    assert s["funding"].tolist() == pytest.approx([0.0, 0.0, -0.0495])
    assert s["cash"].tolist() == pytest.approx([999.975, 999.975, 1000.0245])
    assert s["wallet"].tolist() == pytest.approx([999.975, 994.975, 1000.0245 + 0.5])
    # NAV = spot + wallet: 200 + 999.975; 210 + 994.975; 199 + 1,000.5245
    assert s["nav"].tolist() == pytest.approx([1199.975, 1204.975, 1199.5245])
    assert s["base"].tolist() == pytest.approx([200.0, 210.0, 199.0])
    # margin ratio MM / collateral with MM = 0.005 x |notional|
    assert s["margin_ratio"].iloc[1] == pytest.approx(0.005 * 55 / 994.975)
    assert s["margin_ratio_end"].iloc[0] == pytest.approx(0.005 * 50 / 999.975)
    assert not s["liquidated"].any() and s["liquidated"].dtype == bool
    assert s["sweep_in"].sum() == 0.0 and s["liquidation_penalty"].sum() == 0.0
    assert r.futures_notional["BTC-PERP"].tolist() == pytest.approx([-50.0, -55.0, -49.5])
    assert r.spot_value["BTC"].tolist() == pytest.approx([100.0, 110.0, 99.0])
    # effective weights (spot + futures) / base: BTC (100 - 50) / 200 at step 0
    assert r.weights["BTC"].iloc[0] == pytest.approx(0.25)
    assert r.weights["ETH"].iloc[1] == pytest.approx(100.0 / 210.0)
    assert math.isnan(r.spot_returns["BTC"].iloc[0])
    assert r.spot_returns["BTC"].iloc[1:].tolist() == pytest.approx([0.1, -0.1])
    assert r.targets.to_dict() == {"BTC": 0.25, "ETH": 0.75}
    assert r.policy == "once"
    (tr,) = r.trades.to_dict("records")
    assert (tr["kind"], tr["symbol"], tr["quantity"], tr["price"], tr["notional"], tr["fee"]) == (
        "futures", "BTC-PERP", -0.5, 100.0, -50.0, pytest.approx(0.025))
    assert r.liquidations.empty and r.rolls.empty
    assert list(s.columns)[:3] == ["nav", "base", "cash"]


def test_a_liquidation_takes_the_penalty() -> None:
    # short 100 USD with 10 USD of cash: at 110 the wallet is 9.95 - 10 < MM -> closed at mark
    r = run_backtest(_book(cash=10.0), _path(), Once({"BTC-PERP": -100.0}), collateral=NO_SWEEPS,
                     liquidation_penalty=0.02)
    s = r.steps
    assert s["liquidated"].tolist() == [False, True, False]
    assert s["liquidation_penalty"].iloc[1] == pytest.approx(0.02 * 110.0)
    # the wallet 10 - 0.05 - 10 - 2.2 = -2.25 is the insurance fund's: back at 0
    assert s["insurance_fund"].iloc[1] == pytest.approx(2.25)
    assert s["cash"].iloc[1] == 0.0
    assert r.futures_notional["BTC-PERP"].iloc[1:].tolist() == [0.0, 0.0]
    assert len(r.liquidations) == 1
    assert s["margin_ratio"].iloc[1] == math.inf  # the collateral was below 0 at the check


def test_spot_fee_and_default_asset_fee() -> None:
    policy = Once({"BTC-PERP": 0.0}, spot={"BTC": 2.0, "ETH": 10.0})  # buy 1 BTC at 100
    r = run_backtest(_book(), _path(), policy, collateral=NO_SWEEPS, spot_fee=0.01)
    assert r.steps["fee_spot"].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert r.steps["traded_spot"].iloc[0] == pytest.approx(100.0)
    r = run_backtest(_book(), _path(), Once({"BTC-PERP": 0.0}, spot={"BTC": 2.0, "ETH": 10.0}),
                     collateral=NO_SWEEPS)
    assert r.steps["fee_spot"].iloc[0] == pytest.approx(0.1)  # SpotAsset's 0.001
    assert r.steps["slippage_spot"].iloc[0] == pytest.approx(0.01)  # the 1 bp default half spread
    assert r.steps["cash"].iloc[0] == pytest.approx(1000.0 - 100.0 - 0.1 - 0.01)


def test_impact_k_scales_the_futures_impact() -> None:
    adv = pd.Series({"BTC-PERP": 1e6})

    def slip(k: float) -> float:
        r = run_backtest(_book(), _path(adv=adv), Once({"BTC-PERP": -50.0}, at=2), collateral=NO_SWEEPS,
                         impact_k=k)
        return float(r.steps["slippage_futures"].iloc[2])

    # the trailing daily vol at step 2: std (n - 1) of log(1.1), log(0.9); the impact
    # k sigma |t|^{3/2} / sqrt(ADV) of a 50 USD trade
    sigma = float(np.std([math.log(1.1), math.log(0.9)], ddof=1))
    assert slip(1.0) == pytest.approx(sigma * 50.0 ** 1.5 / 1000.0)
    assert slip(0.0) == 0.0
    assert slip(2.0) == pytest.approx(2.0 * slip(1.0))


def test_default_collateral_band_tops_up_from_the_initial_reserve() -> None:
    # tau = 10 / 210 from the first step; at step 1 the wallet (4.975) is below tau (1 - 0.5) NAV
    policy = Once({"BTC-PERP": -50.0})
    r = run_backtest(_book(cash=10.0), _path(), policy)
    assert r.steps["sweep_in"].iloc[0] == 0.0 and r.steps["sweep_in"].iloc[1] > 0.0
    s1 = r.steps.iloc[1]
    assert s1["wallet"] == pytest.approx(10.0 / 210.0 * s1["nav"])  # back on the target
    assert (r.trades["kind"] == "sweep_in").sum() == 2
    off = run_backtest(_book(cash=10.0), _path(), Once({"BTC-PERP": -50.0}), collateral=NO_SWEEPS)
    assert off.steps["sweep_in"].sum() == 0.0
    # a given target: 0.2 of NAV from the start -> step 0 already tops up
    given = run_backtest(_book(cash=10.0), _path(), Once({"BTC-PERP": -50.0}),
                         collateral=CollateralPolicy(target_fraction=0.2))
    s0 = given.steps.iloc[0]
    assert s0["sweep_in"] > 0.0 and s0["wallet"] == pytest.approx(0.2 * s0["nav"])


def test_spot_only_book_never_sweeps() -> None:
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(), spot={"BTC": 1.0, "ETH": 10.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=0.0)
    r = run_backtest(book, _path(), Once({}))
    assert r.steps["sweep_in"].sum() == 0.0 and r.steps["sweep_out"].sum() == 0.0
    assert r.futures_notional.shape == (3, 0)
    assert r.steps["nav"].tolist() == pytest.approx([200.0, 210.0, 199.0])


@pytest.mark.parametrize(("kw", "field"), [
    ({"liquidation_penalty": 1.0}, "liquidation_penalty"),
    ({"liquidation_penalty": -0.01}, "liquidation_penalty"),
    ({"liquidation_penalty": float("nan")}, "liquidation_penalty"),
    ({"spot_fee": 1.0}, "spot_fee"), ({"spot_fee": -0.001}, "spot_fee"),
    ({"spot_fee": float("inf")}, "spot_fee"),
    ({"impact_k": -1.0}, "impact_k"), ({"impact_k": float("inf")}, "impact_k"),
])
def test_bad_options_are_refused(kw: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        run_backtest(_book(), _path(), Once({}), **kw)  # type: ignore[arg-type]
    assert err.value.field == field


def test_edge_options_are_accepted_and_a_missing_asset_refused() -> None:
    r = run_backtest(_book(), _path(), Once({"BTC-PERP": -50.0}), liquidation_penalty=0.0, spot_fee=0.0,
                     impact_k=0.0, collateral=NO_SWEEPS)
    assert r.steps["fee_futures"].iloc[0] == pytest.approx(0.025)
    spot = pd.DataFrame({"BTC": [100.0, 110.0, 99.0]}, index=IDX)
    with pytest.raises(ValidationError) as err:
        run_backtest(_book(), MarketPath(spot=spot), Once({}))
    assert err.value.field == "market_path.spot" and "ETH" in str(err.value)


def test_replay_is_deterministic() -> None:
    a = run_backtest(_book(), _path(), Once({"BTC-PERP": -50.0}))
    b = run_backtest(_book(), _path(), Once({"BTC-PERP": -50.0}))
    pd.testing.assert_frame_equal(a.steps, b.steps)
    assert np.array_equal(a.futures_notional.to_numpy(), b.futures_notional.to_numpy())


def test_an_asset_missing_from_the_spot_holdings_starts_at_zero() -> None:
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(FuturesContract("BTC-PERP", "BTC"),),
                spot={"BTC": 1.0}, targets={"BTC": 0.5, "ETH": 0.5}, cash=100.0)
    r = run_backtest(book, _path(), Once({}), collateral=NO_SWEEPS)
    assert r.steps["nav"].iloc[0] == pytest.approx(200.0)  # 100 of BTC + 100 cash, no ETH
    assert r.spot_value["ETH"].tolist() == [0.0, 0.0, 0.0]


def test_a_dated_contract_expired_before_the_first_step_settles_there() -> None:
    from datetime import datetime

    from models.book import FuturesPosition
    from models.instruments import ContractKind

    dated = FuturesContract("BTC-0101", "BTC", kind=ContractKind.DATED, expiry=datetime(2023, 12, 31))
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(dated,),
                spot={"BTC": 1.0, "ETH": 10.0}, targets={"BTC": 0.25, "ETH": 0.75}, cash=1000.0,
                futures={"BTC-0101": FuturesPosition(-0.5, 100.0)})
    r = run_backtest(book, _path(), Once({}), collateral=NO_SWEEPS)
    (tr,) = r.trades.to_dict("records")
    assert (tr["kind"], tr["time"], tr["quantity"], tr["price"]) == ("settle", IDX[0], 0.5, 100.0)
    assert r.steps["fee_futures"].iloc[0] == pytest.approx(0.0005 * 50.0)


def test_a_non_finite_futures_target_is_refused_with_its_time() -> None:
    with pytest.raises(ValidationError) as err:
        run_backtest(_book(), _path(), Once({"BTC-PERP": float("nan")}, at=1), collateral=NO_SWEEPS)
    assert err.value.field == "policy.futures.BTC-PERP" and "2024-01-02" in str(err.value)


def test_taxes_start_from_the_books_futures_entries() -> None:
    from datetime import UTC, datetime

    from models.book import FuturesPosition
    from models.tax import TaxLot, TaxRates
    from optimizer.settings import SpotLegSettings

    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(FuturesContract("BTC-PERP", "BTC"),),
                spot={"BTC": 1.0, "ETH": 10.0}, targets={"BTC": 0.25, "ETH": 0.75}, cash=1000.0,
                futures={"BTC-PERP": FuturesPosition(-0.5, 90.0)})
    bought = datetime(2023, 6, 1, tzinfo=UTC)
    tax = SpotLegSettings(rates=TaxRates(0.3, 0.15, futures=0.2),
                          lots={"BTC": (TaxLot(1.0, 100.0, bought),), "ETH": (TaxLot(10.0, 10.0, bought),)})
    r = run_backtest(book, _path(), Once({"BTC-PERP": 0.0}, at=1), collateral=NO_SWEEPS, tax=tax)
    # closing the short at 110 realises -0.5 x (110 - 90) = -10 against the book's entry (90, not
    # the first mark 100): a loss credited at the futures rate, 0.2 x -10
    assert r.steps["tax_futures"].tolist() == pytest.approx([0.0, -2.0, 0.0])
    assert "tax_cumulative" in r.steps.columns


def test_option_errors_in_full() -> None:
    cases = [({"liquidation_penalty": 1.0}, "liquidation_penalty: is 1.0. Fix: give a fraction of notional "
              "in [0, 1)"),
             ({"spot_fee": 2.0}, "spot_fee: is 2.0. Fix: give a fraction of notional in [0, 1)"),
             ({"impact_k": -1.0}, "impact_k: is -1.0. Fix: give the impact coefficient k >= 0")]
    for kw, text in cases:
        with pytest.raises(ValidationError) as err:
            run_backtest(_book(), _path(), Once({}), **kw)  # type: ignore[arg-type]
        assert str(err.value) == text
    spot = pd.DataFrame({"BTC": [100.0, 110.0, 99.0]}, index=IDX)
    with pytest.raises(ValidationError) as err:
        run_backtest(_book(), MarketPath(spot=spot), Once({}))
    assert str(err.value) == ("market_path.spot: has no prices for ['ETH']. Fix: give a spot column for "
                              "every asset of the book")


def test_the_books_positions_start_the_replay() -> None:
    from models.book import FuturesPosition

    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(FuturesContract("BTC-PERP", "BTC"),),
                spot={"BTC": 1.0, "ETH": 10.0}, targets={"BTC": 0.25, "ETH": 0.75}, cash=1000.0,
                futures={"BTC-PERP": FuturesPosition(1.0, 100.0)})
    r = run_backtest(book, _path(), Once({}), collateral=NO_SWEEPS)
    assert r.futures_notional["BTC-PERP"].tolist() == pytest.approx([100.0, 110.0, 99.0])
    assert r.steps["futures_pnl"].tolist() == pytest.approx([0.0, 10.0, -11.0])
