"""An order plan maps a target USD exposure of an inverse contract to contracts by the exchange's
fill rule: the held position's exposure is face x mark / entry, so a target equal to it is no
trade; a growth adds size of exposure a contract (the entry averages harmonically), a cut keeps the
entry, a flip re-opens at the mark (see tests/optimizer/test_inverse_exposure.py for the book:
1 BTC spot, short 500 x 100 USD struck at 50,000, flat at every price)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from executor.paper import apply_fill
from executor.plan import OrderLeg, book_instruments, plan_orders
from executor.run_cycle import notional_after
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


def _on_paper(book: Book, legs: tuple[OrderLeg, ...], mark: float) -> tuple[float, float]:
    """(exposure, realised PnL) of the book's position after ``legs`` fill at ``mark`` on the
    paper exchange (``executor.paper.apply_fill``: Binance's rule, written apart from the plan)."""
    c = book.contracts[0]
    pos, realised = book.futures.get(SYM), 0.0
    for leg in legs:
        pos, r = apply_fill(pos, leg.signed_contracts, mark, c)
        realised += r
    if pos is None:
        return 0.0, realised
    return pos.contracts * c.contract_size * mark / pos.entry_price, realised


@pytest.mark.parametrize(("target", "contracts", "legs"), [
    (-60_000.0, -550.0, 1),   # grows: -500 - 5,000 / 100 (re-striking all of it would say -600)
    (-30_000.0, -272.727, 1),  # shrinks, the entry kept: -500 x 30,000 / 55,000 on the lot
    (20_000.0, 200.0, 2),     # flips: closes 500, opens 20,000 / 100 at the mark
])
def test_plan_maps_a_target_exposure_to_contracts_by_the_fill_rule(target: float, contracts: float,
                                                                   legs: int) -> None:
    """Short 500 x 100 USD struck at 50,000, mark 55,000: held exposure -55,000 USD. The plan's
    contracts for each target, by hand, and the paper exchange holding exactly the target exposure
    after the plan's legs fill; the engine's book (``Book.with_futures``) agrees with it on the
    position, its entry and the PnL realised, and its NAV is unchanged."""
    book, m = _book(), _market(55_000.0)
    inst = book_instruments(book)
    assert plan_orders({SYM: -55_000.0}, book, m, inst).legs == ()  # the held exposure: no trade
    assert plan_orders({}, book, m, inst).legs == ()  # a contract left out is held
    plan = plan_orders({SYM: target}, book, m, inst)
    assert plan.target[SYM] == pytest.approx(contracts, abs=1e-9)
    assert len(plan.legs) == legs
    paper_x, paper_realised = _on_paper(book, plan.legs, 55_000.0)
    assert paper_x == pytest.approx(target, abs=0.1)  # within a lot (0.001 x 100 USD)
    after = book.with_futures(plan.target, m)
    assert after.futures_exposure(m)[0] == pytest.approx(paper_x, rel=1e-12)
    assert after.cash - book.cash == pytest.approx(paper_realised, rel=1e-12, abs=1e-9)
    assert after.nav(m) == pytest.approx(book.nav(m), rel=1e-12)


def test_a_target_half_a_dollar_off_the_held_exposure_is_traded() -> None:
    """Only a target within QTY_RTOL (1e-9) of the held exposure q0 npc + delta0 = -55,000 is held
    at q0 = -500: -55,000 x (1 + 1e-10) is. -55,000.5 USD is traded: a growth of 0.5 USD, the
    position becomes -500 - 0.5 / 100 = -500.005 contracts (on the 0.001 lot step)."""
    book, m = _book(), _market(55_000.0)
    inst = book_instruments(book)
    assert plan_orders({SYM: -55_000.0 * (1 + 1e-10)}, book, m, inst).target[SYM] == -500.0
    plan = plan_orders({SYM: -55_000.5}, book, m, inst)
    assert plan.target[SYM] == pytest.approx(-500.005, abs=1e-9)


def test_the_margin_of_target_exposures_is_on_the_notional_the_fill_rule_leaves() -> None:
    """The loop's de-risk margins its targets on the exchange's notional after the trade
    (``executor.run_cycle.notional_after``), by hand: a growth to -60,000 leaves -550 contracts,
    face -55,000; a cut to -30,000 leaves -272.73 contracts (the entry kept), face -27,272.73 (the
    old x - delta0 said -25,000); a flip to +20,000 leaves face +20,000."""
    book, m = _book(), _market(55_000.0)
    for x, face in ((-60_000.0, -55_000.0), (-30_000.0, -50_000.0 * 30_000.0 / 55_000.0),
                    (20_000.0, 20_000.0)):
        assert notional_after(book, m, np.array([x]))[0] == pytest.approx(face, rel=1e-12)
