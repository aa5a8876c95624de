"""The USD exposure of an inverse (coin-margined, USD-face) position is face x mark / entry.

Hand example: 1 BTC spot, short 500 contracts x 100 USD face struck at 50,000, cash 30,000,
target BTC weight 0. The position's USD PnL is q x size x (mark/entry - 1) = -50,000 (S/50,000 - 1)
= 50,000 - S, so NAV = S + 30,000 + 50,000 - S = 80,000 at every price: the book is flat. Its
exposure is -500 x 100 x S / 50,000 = -S, cancelling the spot's S: effective weight 0. The old code
took the face value -50,000 as the exposure (weight +0.0909 at 55k, -0.1111 at 45k) and the
optimiser shorted ~49.5 more contracts at 55k.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, Settlement, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.rebalance import Rebalancer
from optimizer.settings import CostSettings, OptimizerSettings

T0 = pd.Timestamp("2025-01-01", tz="UTC")
SYM = "BTCUSD-PERP"


def _book() -> Book:
    inv = FuturesContract(SYM, "BTC", settlement=Settlement.INVERSE, contract_size=100.0)
    return Book((SpotAsset("BTC"),), (inv,), spot={"BTC": 1.0}, targets={"BTC": 0.0},
                cash=30_000.0, futures={SYM: FuturesPosition(-500.0, 50_000.0)})


def _market(price: float) -> MarketSnapshot:
    return MarketSnapshot(time=T0, spot={"BTC": price}, mark={SYM: price})


@pytest.mark.parametrize("price", [45_000.0, 50_000.0, 55_000.0])
def test_flat_inverse_hedge_has_zero_effective_weight(price: float) -> None:
    book, m = _book(), _market(price)
    v = book.valuation(m)
    assert v.nav == pytest.approx(80_000.0, abs=1e-6)
    # exposure -500 x 100 x S / 50,000 = -S; the exchange's notional stays the face -50,000
    assert v.exposure[0] == pytest.approx(-price)
    assert book.futures_exposure(m)[0] == pytest.approx(-price)
    assert v.notional[0] == -50_000.0 and book.futures_notional(m)[0] == -50_000.0
    # offset = exposure - face = the position's USD PnL 50,000 - S
    assert book.exposure_offset(m)[0] == pytest.approx(50_000.0 - price)
    assert book.effective_weights(m)[0] == pytest.approx(0.0, abs=1e-12)


def test_optimiser_with_costs_off_does_not_trade_a_flat_inverse_hedge() -> None:
    book, m = _book(), _market(55_000.0)
    risk = RiskModel.from_covariance(["BTC"], np.array([[0.36]]))
    settings = OptimizerSettings(costs=CostSettings(trading=False, carry=False))
    sol = Rebalancer().solve(book, m, risk, settings)
    (pos,) = sol.target_positions
    assert pos.contracts == pytest.approx(-500.0, abs=1e-6)  # the old code: about -549.5
    assert pos.notional == pytest.approx(-55_000.0, rel=1e-6)  # the exposure held
    assert sum(abs(t.contracts) for t in sol.trades) == pytest.approx(0.0, abs=1e-6)
    assert sol.tracking_error_before == pytest.approx(0.0, abs=1e-9)


def test_linear_exposure_is_the_notional() -> None:
    lin = FuturesContract("BTC-PERP", "BTC")
    book = Book((SpotAsset("BTC"),), (lin,), spot={"BTC": 1.0}, targets={"BTC": 0.0},
                cash=30_000.0, futures={"BTC-PERP": FuturesPosition(-1.0, 50_000.0)})
    m = MarketSnapshot(time=T0, spot={"BTC": 55_000.0}, mark={"BTC-PERP": 55_000.0})
    v = book.valuation(m)
    assert v.exposure[0] == v.notional[0] == -55_000.0
    assert book.exposure_offset(m)[0] == 0.0
    assert book.effective_weights(m)[0] == 0.0
