"""The replay's small steps (``scenarios.replay_steps``) by hand, one call at a time.

``test_replay_steps.py`` holds the chained steps to the frozen one-function replay frame for frame;
these pin what each step passes on and records: the policy's arguments (the state's book, the
market and its time, the live tax lots, each position's unrealised PnL against its tax entry),
the solver figures, the default reserve target, the events of a liquidation, the spot at expiry
between two steps and the first step's settlement.

Book: BTC spot; BTC-PERP (linear, size 1) and BTC-Q (dated, expiring 2025-01-02 12:00 UTC, between
the second and the third daily step). Daily steps from 2025-01-01, BTC 50,000 / 40,000 / 60,000.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.tax import TaxLot, TaxRates
from optimizer.policies import OptimizedFutures, TargetHoldings, current_holdings
from optimizer.settings import OptimizerSettings, SpotLegSettings
from scenarios.market_path import MarketPath
from scenarios.replay_inputs import ReplayInputs, market_at, read_inputs
from scenarios.replay_state import FuturesTaxBasis, ReplayState, StepValuation, value_state
from scenarios.replay_steps import (
    expiry_prices,
    first_step,
    initial_reserve,
    liquidate,
    new_row,
    policy_step,
)

D0 = pd.Timestamp("2025-01-01", tz="UTC")
PERP = FuturesContract("BTC-PERP", "BTC")
Q = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED,
                    expiry=datetime(2025, 1, 2, 12, tzinfo=UTC))
BOOK = Book((SpotAsset("BTC"),), (PERP, Q), spot={"BTC": 1.0}, targets={"BTC": 0.5}, cash=20_000.0)
LOT = TaxLot(1.0, 30_000.0, datetime(2024, 6, 1, tzinfo=UTC))
RISK = RiskModel.from_covariance(["BTC"], np.array([[0.36]]))


def inputs(prices: tuple[float, ...] = (50_000.0, 40_000.0, 60_000.0)) -> ReplayInputs:
    idx = pd.date_range(D0, periods=len(prices), freq="D")
    path = MarketPath(spot=pd.DataFrame({"BTC": list(prices)}, index=idx))
    return read_inputs(BOOK, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01)


class Recording(OptimizedFutures):
    """An optimiser that trades spot (and, with ``futures_tax``, prices the futures tax) and records
    what it is called with; it holds."""

    def __init__(self, futures_tax: bool) -> None:
        spot = SpotLegSettings(enabled=True, rates=TaxRates(0.3, 0.15), lots={"BTC": (LOT,)},
                               futures_tax=futures_tax)
        super().__init__(RISK, OptimizerSettings(spot=spot))
        self.calls: list[dict[str, Any]] = []

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp, *,
                 lots: Any = None, futures_gains: Any = None) -> TargetHoldings:
        self.calls.append({"book": book, "market": market, "t": t, "lots": lots,
                           "futures_gains": futures_gains})
        return TargetHoldings(spot=current_holdings(book, market).spot,
                              futures=current_holdings(book, market).futures, solve_time_ms=12.5,
                              solver_fallbacks=2)


def taxed_state() -> ReplayState:
    st = ReplayState(spot={"BTC": 1.0}, futures={"BTC-PERP": FuturesPosition(0.1, 45_000.0)},
                     cash=20_000.0)
    st.lots = {"BTC": (LOT,), "ETH": ()}
    st.futures_basis = FuturesTaxBasis(entries={"BTC-PERP": (0.1, 45_000.0)}, u=0.0)
    return st


@pytest.mark.parametrize("futures_tax", [True, False])
def test_an_optimiser_trading_spot_gets_the_state_the_lots_and_the_futures_gains(
        futures_tax: bool) -> None:
    """At step 2 (BTC 60,000) the long 0.1 BTC-PERP taxed from 45,000 has gained
    0.1 x 15,000 = 1,500 USD: handed over only when the optimiser prices the futures tax. The
    empty ETH lot list is left out; the solver figures land in the row."""
    inp = inputs()
    m = market_at(inp, 2)
    pol, row = Recording(futures_tax), new_row()
    policy_step(pol, BOOK, taxed_state(), m, row)
    (call,) = pol.calls
    assert call["t"] == m.time and call["market"] is m
    assert call["book"].futures == {"BTC-PERP": FuturesPosition(0.1, 45_000.0)}
    assert call["book"].cash == 20_000.0 and call["book"].spot == {"BTC": 1.0}
    assert call["lots"] == {"BTC": (LOT,)}
    if futures_tax:
        assert call["futures_gains"] == {"BTC-PERP": pytest.approx(1_500.0)}
    else:
        assert call["futures_gains"] is None
    assert (row["solve_time_ms"], row["solver_fallbacks"]) == (12.5, 2.0)


def test_a_plain_policy_gets_the_book_the_market_and_its_time() -> None:
    seen: list[tuple[Book, MarketSnapshot, pd.Timestamp]] = []

    class Plain(OptimizedFutures):
        def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp, *,
                     lots: Any = None, futures_gains: Any = None) -> TargetHoldings:
            assert lots is None and futures_gains is None
            seen.append((book, market, t))
            return current_holdings(book, market)

    inp = inputs()
    m = market_at(inp, 1)
    row = new_row()
    policy_step(Plain(RISK), BOOK, taxed_state(), m, row)
    assert seen[0][1] is m and seen[0][2] == m.time
    assert seen[0][0].futures == {"BTC-PERP": FuturesPosition(0.1, 45_000.0)}
    assert np.isnan(float(row["solve_time_ms"]))  # no solver figures given: left unset
    assert row["liquidated"] is False


@pytest.mark.parametrize(("wallet", "nav", "tau"), [
    (20.0, 100.0, 0.2), (150.0, 100.0, 1.0), (-5.0, 100.0, 0.0), (0.25, 0.5, 0.5), (5.0, 0.0, 0.0),
    (5.0, -10.0, 0.0)])
def test_the_default_reserve_target_by_hand(wallet: float, nav: float, tau: float) -> None:
    """tau = wallet / NAV clipped to [0, 1]; 0 when NAV <= 0."""
    val = StepValuation(spot_values=np.zeros(1), notional=np.zeros(2), weights=np.zeros(1), upnl=0.0,
                        wallet=wallet, nav=nav, collateral=wallet, base=nav)
    assert initial_reserve(val) == tau


def test_a_liquidation_closes_every_open_position_with_one_event_each() -> None:
    """1 BTC-PERP long and BTC-Q flat at 40,000, penalty 1%: one event (BTC-PERP, 400 USD)."""
    inp = inputs()
    m = market_at(inp, 1)
    st = ReplayState(spot={"BTC": 1.0}, futures={"BTC-PERP": FuturesPosition(1.0, 40_000.0),
                                                 "BTC-Q": FuturesPosition(0.0, 40_000.0)},
                     cash=1_000.0)
    val = value_state(BOOK, st, m)
    penalty, events = liquidate(BOOK, st, m, val, 0.01)
    assert penalty == pytest.approx(400.0)
    assert events == [{"time": m.time, "contract": "BTC-PERP", "contracts": 1.0, "mark": 40_000.0,
                       "notional": 40_000.0, "penalty": 400.0}]
    assert st.cash == pytest.approx(600.0)
    assert all(p.contracts == 0 for p in st.futures.values())


def test_the_spot_at_an_expiry_between_two_steps_interpolates_those_two() -> None:
    """BTC-Q expires at 12:00 between step 1 (40,000) and step 2 (60,000): 50,000, whatever
    step 0's close."""
    assert expiry_prices(BOOK, inputs(), 2) == {"BTC-Q": pytest.approx(50_000.0)}
    assert expiry_prices(BOOK, inputs((10_000.0, 40_000.0, 60_000.0)), 2) == {
        "BTC-Q": pytest.approx(50_000.0)}


def test_the_first_step_settles_only_what_expired_by_its_own_time() -> None:
    """A held BTC-Q at step 0 (expiry a day and a half later) is not settled at step 0; one that
    expired before step 0 is, at the spot 50,000 against its mark 49,000: 0.1 x 1,000 = 100 USD
    of PnL in the row, and its settlement fee."""
    inp = inputs()
    m = market_at(inp, 0)
    st = ReplayState(spot={"BTC": 1.0}, futures={"BTC-Q": FuturesPosition(0.1, 48_000.0)},
                     cash=20_000.0)
    trades: list[dict[str, object]] = []
    row = new_row()
    first_step(BOOK, inp, st, m, row, trades)
    assert trades == [] and st.futures["BTC-Q"].contracts == 0.1
    assert row["futures_pnl"] == 0.0
    # nor one expiring at 12:00 on day 0, between step 0 and step 1: it settles at step 1
    noon = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED,
                           expiry=datetime(2025, 1, 1, 12, tzinfo=UTC))
    book_noon = Book((SpotAsset("BTC"),), (PERP, noon), spot={"BTC": 1.0}, targets={"BTC": 0.5},
                     cash=20_000.0)
    idx3 = pd.date_range(D0, periods=3, freq="D")
    path3 = MarketPath(spot=pd.DataFrame({"BTC": [50_000.0, 40_000.0, 60_000.0]}, index=idx3))
    inp_noon = read_inputs(book_noon, path3, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01)
    st_noon = ReplayState(spot={"BTC": 1.0}, futures={"BTC-Q": FuturesPosition(0.1, 48_000.0)},
                          cash=20_000.0)
    first_step(book_noon, inp_noon, st_noon, market_at(inp_noon, 0), new_row(), trades)
    assert trades == [] and st_noon.futures["BTC-Q"].contracts == 0.1

    early = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED,
                            expiry=datetime(2024, 12, 31, 8, tzinfo=UTC))
    book = Book((SpotAsset("BTC"),), (PERP, early), spot={"BTC": 1.0}, targets={"BTC": 0.5},
                cash=20_000.0)
    idx = pd.date_range(D0, periods=2, freq="D")
    marks = pd.DataFrame({"BTC-PERP": [50_000.0] * 2, "BTC-Q": [49_000.0] * 2}, index=idx)
    inp2 = read_inputs(book, MarketPath(spot=pd.DataFrame({"BTC": [50_000.0] * 2}, index=idx),
                                        mark=marks),
                       spot_fee=None, impact_k=1.0, liquidation_penalty=0.01)
    st2 = ReplayState(spot={"BTC": 1.0}, futures={"BTC-Q": FuturesPosition(0.1, 48_000.0)},
                      cash=20_000.0)
    row2 = new_row()
    first_step(book, inp2, st2, market_at(inp2, 0), row2, trades)
    assert len(trades) == 1 and st2.futures.get("BTC-Q", FuturesPosition(0.0, 1.0)).contracts == 0
    assert row2["futures_pnl"] == pytest.approx(0.1 * (50_000.0 - 49_000.0))  # S against the mark
    assert row2["fee_futures"] == pytest.approx(trades[0]["fee"])
    assert float(row2["fee_futures"]) > 0
