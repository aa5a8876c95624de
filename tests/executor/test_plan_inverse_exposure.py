"""An order plan maps a target USD exposure of an inverse contract to contracts at the mark: the
held position's exposure is face x mark / entry, so a target equal to it is no trade; a traded
position is re-struck at the mark (PnL realised into cash, as ``Book.with_futures`` books it), so
its exposure after the trade is q1 x size (see tests/optimizer/test_inverse_exposure.py for the
book: 1 BTC spot, short 500 x 100 USD struck at 50,000, flat at every price)."""

from __future__ import annotations

import pandas as pd
import pytest

from executor.plan import book_instruments, plan_orders
from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, Settlement, SpotAsset
from models.market import MarketSnapshot

SYM = "BTCUSD-PERP"


def _book() -> Book:
    inv = FuturesContract(SYM, "BTC", settlement=Settlement.INVERSE, contract_size=100.0)
    return Book((SpotAsset("BTC"),), (inv,), spot={"BTC": 1.0}, targets={"BTC": 0.0},
                cash=30_000.0, futures={SYM: FuturesPosition(-500.0, 50_000.0)})


def _market(price: float) -> MarketSnapshot:
    return MarketSnapshot(time=pd.Timestamp("2025-01-01", tz="UTC"), spot={"BTC": price},
                          mark={SYM: price})


def test_plan_maps_a_target_exposure_to_contracts_at_the_mark() -> None:
    book, m = _book(), _market(55_000.0)
    inst = book_instruments(book)
    # the held exposure (-55,000) is no trade; the face (-50,000) is not what is held
    assert plan_orders({SYM: -55_000.0}, book, m, inst).legs == ()
    assert plan_orders({}, book, m, inst).legs == ()  # a contract left out is held
    # -60,000 USD of exposure: 600 contracts of 100 USD, re-struck at the mark (q1 = x / size)
    plan = plan_orders({SYM: -60_000.0}, book, m, inst)
    assert plan.target[SYM] == pytest.approx(-600.0)
    (leg,) = plan.legs
    assert leg.side == "sell" and leg.contracts == pytest.approx(100.0)
    # the engine's book after those fills holds exactly the target exposure
    after = book.with_futures(plan.target, m)
    assert after.futures_exposure(m)[0] == pytest.approx(-60_000.0)
    assert after.nav(m) == pytest.approx(book.nav(m))


def test_a_target_half_a_dollar_off_the_held_exposure_is_traded() -> None:
    """Only a target within QTY_RTOL (1e-9) of the held exposure q0 npc + delta0 = -55,000 is held
    at q0 = -500: -55,000 x (1 + 1e-10) is. -55,000.5 USD is traded: re-struck at the mark, the
    position becomes -55,000.5 / 100 = -550.005 contracts (on the 0.001 lot step)."""
    book, m = _book(), _market(55_000.0)
    inst = book_instruments(book)
    assert plan_orders({SYM: -55_000.0 * (1 + 1e-10)}, book, m, inst).target[SYM] == -500.0
    plan = plan_orders({SYM: -55_000.5}, book, m, inst)
    assert plan.target[SYM] == pytest.approx(-550.005, abs=1e-9)
