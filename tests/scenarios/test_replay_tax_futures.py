"""The futures tax in the replay at its edges (``scenarios.replay_tax``): an add to an inverse
position realises nothing (its tax entry is the harmonic average), and a loss the exchange's
insurance fund bore in a liquidation is not credited as the holder's. Hand cases, each stated in
its test."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.fill_rule import average_entry
from models.instruments import FuturesContract, Settlement, SpotAsset
from models.market import MarketSnapshot
from models.tax import TaxLot, TaxRates
from optimizer.policies import Policy, TargetHoldings
from optimizer.settings import SpotLegSettings
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

OLD_LOT = {"BTC": (TaxLot(1.0, 100.0, datetime(2024, 1, 1, tzinfo=UTC)),)}
TAX = SpotLegSettings(enabled=False, rates=TaxRates(0.3, 0.15, futures=0.3), lots=OLD_LOT)


class Scripted(Policy):
    """Futures targets (USD notional by contract) per step; spot held."""

    name = "scripted"

    def __init__(self, futures: list[dict[str, float] | None]) -> None:
        self.futures, self.k = futures, 0

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        plan = self.futures[self.k]
        self.k += 1
        return TargetHoldings(spot=dict(book.spot), futures=dict(plan or {}))


def _days(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2025-01-01", periods=n, freq="D", tz="UTC")


def test_adding_to_an_inverse_position_realises_nothing() -> None:
    """Inverse BTC-USD, 100 USD a contract, long 1 from 100; BTC 100 -> 200 (held exposure
    1 x 100 x 200 / 100 = 200 USD); the policy asks for 400 USD, filled by the exchange's rule as
    an add of 2 contracts at 200 (200 USD of exposure). The PnL before the add,
    1 x 100 x (1/100 - 1/200) x 200 = 100 USD, stays unrealised: at the harmonic entry
    3 / (1/100 + 2/200) = 150, 3 x 100 x (1/150 - 1/200) x 200 = 100. Futures tax 0 (the
    contract-weighted entry 166.67 'realised' 40 and taxed 12)."""
    inv = FuturesContract("BTC-USD", "BTC", settlement=Settlement.INVERSE, contract_size=100.0,
                          taker_fee=0.0)
    book = Book((SpotAsset("BTC"),), (inv,), spot={"BTC": 1.0}, targets={"BTC": 1.0},
                cash=1000.0, futures={"BTC-USD": FuturesPosition(1.0, 100.0)})
    path = MarketPath(spot=pd.DataFrame({"BTC": [100.0, 200.0, 200.0]}, index=_days(3)),
                      half_spread=pd.Series({"BTC-USD": 0.0}))
    res = run_backtest(book, path, Scripted([None, {"BTC-USD": 400.0}, None]),
                       collateral=NO_SWEEPS, tax=TAX)
    assert list(res.trades["quantity"]) == [pytest.approx(2.0)]
    assert res.steps["tax_futures"].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    # the harmonic entry by hand; a reduction keeps it; a linear add weights by contracts
    assert average_entry(1.0, 100.0, 3.0, 200.0, inverse=True) == pytest.approx(150.0)
    assert average_entry(3.0, 150.0, 1.0, 300.0, inverse=True) == 150.0
    assert average_entry(1.0, 100.0, 3.0, 200.0) == pytest.approx(500.0 / 3)


def test_a_liquidation_credits_only_the_loss_the_holder_bore() -> None:
    """1 BTC spot, short 1 linear BTC-PERP from 100, wallet 10 USD, no fees; BTC 100 -> 150: the
    short loses 50, the wallet (-40) is liquidated, the 1% penalty (1.5) takes it to -41.5 and the
    insurance fund pays 41.5. The holder lost the wallet's 10 USD: of the 50 USD loss the fund bore
    41.5 - 1.5 = 40 (it absorbs the penalty first, as ``scenarios.metrics``). Futures tax at 30%:
    a credit of 0.3 x 10 = 3 USD (was 15 on the whole 50, leaving the wiped-out wallet at +15)."""
    perp = FuturesContract("BTC-PERP", "BTC", taker_fee=0.0)
    book = Book((SpotAsset("BTC"),), (perp,), spot={"BTC": 1.0}, targets={"BTC": 1.0}, cash=10.0,
                futures={"BTC-PERP": FuturesPosition(-1.0, 100.0)})
    path = MarketPath(spot=pd.DataFrame({"BTC": [100.0, 150.0]}, index=_days(2)),
                      half_spread=pd.Series({"BTC-PERP": 0.0}))
    res = run_backtest(book, path, Scripted([None, None]), collateral=NO_SWEEPS,
                       liquidation_penalty=0.01, tax=TAX)
    s = res.steps.iloc[1]
    assert bool(s["liquidated"]) and s["insurance_fund"] == pytest.approx(41.5)
    assert s["tax_futures"] == pytest.approx(-3.0, abs=1e-9)
    assert s["cash"] == pytest.approx(3.0, abs=1e-9)  # the wallet at 0, plus the 3 USD credit
