"""A replay of an inverse hedge: its effective weights and exposure tracking error count the
position's USD exposure face x mark / entry, not its face value.

Book: 1 BTC spot, short 500 contracts x 100 USD struck at 50,000, cash 30,000, target BTC 0; BTC
(mark = spot) 50,000 -> 55,000 -> 45,000 -> 50,000, no funding, no sweeps. By hand: the position's
USD PnL is 50,000 - S, so NAV = 80,000 at every step and the exposure -S cancels the spot: weight 0,
exposure TE 0, and a naive hedger (short w* V - spot = -S each day) has nothing to trade. The old
code weighted the face -50,000: weights +0.0909 / -0.1111, a non-zero TE, and the naive policy
re-struck the position every day.
"""

from __future__ import annotations

import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, Settlement, SpotAsset
from optimizer.policies import NaiveFutures, NoRebalance
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.metrics import exposure_tracking_error
from scenarios.replay import run_backtest

SYM = "BTCUSD-PERP"
PRICES = [50_000.0, 55_000.0, 45_000.0, 50_000.0]
IDX = pd.date_range("2024-01-01", periods=len(PRICES), freq="1D", tz="UTC")


def _book(target: float = 0.0) -> Book:
    inv = FuturesContract(SYM, "BTC", settlement=Settlement.INVERSE, contract_size=100.0)
    return Book((SpotAsset("BTC"),), (inv,), spot={"BTC": 1.0}, targets={"BTC": target},
                cash=30_000.0, futures={SYM: FuturesPosition(-500.0, 50_000.0)})


def _path() -> MarketPath:
    return MarketPath(spot=pd.DataFrame({"BTC": PRICES}, index=IDX),
                      half_spread=pd.Series({SYM: 0.0}))


def test_held_inverse_hedge_has_zero_weight_and_tracking_error() -> None:
    r = run_backtest(_book(), _path(), NoRebalance(), collateral=NO_SWEEPS)
    assert r.steps["nav"].tolist() == pytest.approx([80_000.0] * len(PRICES))
    assert r.weights["BTC"].abs().max() == pytest.approx(0.0, abs=1e-12)  # old: 0.0909, -0.1111
    assert exposure_tracking_error(r) == pytest.approx(0.0, abs=1e-12)
    # the exchange's notional (margin, funding) stays the face value
    assert r.futures_notional[SYM].tolist() == pytest.approx([-50_000.0] * len(PRICES))


def test_naive_hedger_does_not_re_strike_a_flat_inverse_hedge() -> None:
    r = run_backtest(_book(), _path(), NaiveFutures(period="1D"), collateral=NO_SWEEPS)
    assert r.trades.empty  # old: a re-strike every day after the first
    assert r.steps["fee_futures"].sum() == 0.0
    assert r.steps["nav"].tolist() == pytest.approx([80_000.0] * len(PRICES))
    assert exposure_tracking_error(r) == pytest.approx(0.0, abs=1e-12)


def test_a_trade_reaches_the_target_exposure() -> None:
    """Target BTC 0.5 of the invested base (spot value S): the naive target is -S / 2. At 50,000 the
    held exposure is -50,000: the hedge is cut to 250 contracts (the exchange's fill rule: the
    entry is kept, exposure -25,000 = face at the entry's price); after that the weight stays 0.5
    at every price with no further trade."""
    r = run_backtest(_book(0.5), _path(), NaiveFutures(period="1D"), collateral=NO_SWEEPS)
    (tr,) = r.trades.to_dict("records")
    assert tr["quantity"] == pytest.approx(250.0) and tr["time"] == IDX[0]
    assert r.weights["BTC"].tolist() == pytest.approx([0.5] * len(PRICES), abs=1e-12)
    assert exposure_tracking_error(r) == pytest.approx(0.0, abs=1e-12)
