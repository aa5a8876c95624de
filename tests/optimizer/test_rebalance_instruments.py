"""Funding-aware instruments (issue 11, build 5): the min_days_to_expiry row of the optimiser and
the cheapest instrument per exposure (perpetual, dated future or spot).

Hand-made one-asset books: $6,000 of BTC at $60,000 and $4,000 of cash, target 100% BTC of NAV
(``targets_base = "nav"``), so the naive hedge is a $4,000 long. No rounding, margin row off unless
said, basis risk off.

- **Expiry row** (``ConstraintSettings.expiry_row``, off by default): a dated contract 1 day from
  expiry with ``min_days_to_expiry = 2`` may only be reduced or closed: 0 <= x_j / x0_j <= 1.
  Without the row the optimiser adds the whole $3,000 gap to the dated contract (its fee, 2 bp,
  is below the perp's 5 bp); with it, the dated contract stays at its $1,000 and the perp takes the
  $3,000. The row is re-checked on the returned positions with numpy.
- **Cheapest instrument**: carry per horizon c_j (perp: H x forecast rate; dated: the basis decay
  b x h / max(days to expiry, h)) plus the linear fee f_j: the exposure goes through the contract
  with the lowest f_j + c_j (when the carry spread is below the fee of a long/short pair, so no
  carry trade pays); spot (spot leg on) carries nothing and pays its fee + half spread.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition, TargetsBase
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.constraints import ExpiryGuard
from optimizer.prepare import near_expiry_mask, prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer, solve_rebalance
from optimizer.settings import (
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    SpotLegSettings,
)

T0 = datetime(2024, 6, 1, tzinfo=UTC)
SPOT = 60_000.0
SIGMA = 0.55


def perp(fee: float = 0.0005) -> FuturesContract:
    return FuturesContract("BTC-PERP", "BTC", taker_fee=fee, lot_step=1e-8, min_notional=0.0)


def dated(days: float, fee: float = 0.0002, symbol: str = "BTC-Q") -> FuturesContract:
    return FuturesContract(symbol, "BTC", kind=ContractKind.DATED, taker_fee=fee, lot_step=1e-8,
                           min_notional=0.0, expiry=T0 + timedelta(days=days))


def book(contracts: tuple[FuturesContract, ...], held: dict[str, float] | None = None,
         mark: dict[str, float] | None = None) -> Book:
    """The one-asset book; ``held`` USD notional per contract at its mark (entry = mark)."""
    futures = {}
    for sym, usd in (held or {}).items():
        px = (mark or {}).get(sym, SPOT)
        futures[sym] = FuturesPosition(usd / px, px)
    return Book((SpotAsset("BTC"),), contracts, spot={"BTC": 0.1}, targets={"BTC": 1.0},
                cash=4_000.0, futures=futures, targets_base=TargetsBase.NAV)


def market(contracts: tuple[FuturesContract, ...], *, mark: dict[str, float] | None = None,
           funding: dict[str, float] | None = None,
           forecast: dict[str, float] | None = None) -> MarketSnapshot:
    marks = {c.symbol: SPOT for c in contracts} | (mark or {})
    return MarketSnapshot(time=pd.Timestamp(T0), spot={"BTC": SPOT}, mark=marks,
                          funding=funding or {}, half_spread=dict.fromkeys(marks, 0.0),
                          funding_forecast=forecast or {})


RISK = RiskModel(("BTC",), np.array([[SIGMA]]), np.zeros(1))
V = 10_000.0


def short_of(fee: float) -> float:
    """USD the optimum stops short of the gap when the last dollar pays ``fee``: TE^2 = sigma^2
    (gap - z)^2 has slope 2 sigma^2 (gap - z) = fee, so gap - z = fee / (2 sigma^2) (of V)."""
    return V * fee / (2 * SIGMA**2)


def settings(*, row: bool, carry: bool = False, horizon: float = 1.0, margin: bool = False,
             spot: bool = False, min_days: float = 2.0) -> OptimizerSettings:
    return OptimizerSettings(
        costs=CostSettings(trading=True, impact=False, carry=carry, horizon_days=horizon),
        constraints=ConstraintSettings(margin=margin, expiry_row=row, min_days_to_expiry=min_days),
        basis_risk=False, round_lots=False,
        spot=SpotLegSettings(enabled=spot, cash_usd=4_000.0 if spot else 0.0))


def positions(b: Book, m: MarketSnapshot, s: OptimizerSettings) -> dict[str, float]:
    sol = solve_rebalance(b, m, RISK, s)
    assert sol.status == "optimal"
    return {p.symbol: p.notional for p in sol.target_positions}


def check_row(x: dict[str, float], x0: dict[str, float], near: list[str]) -> None:
    """The row with numpy: |x_j| <= |x0_j| and x_j x0_j >= 0 (x_j = 0 when x0_j = 0)."""
    tol = 1e-6
    for sym in near:
        xj, x0j = x.get(sym, 0.0), x0.get(sym, 0.0)
        assert abs(xj) <= abs(x0j) + tol, (sym, xj, x0j)
        assert xj * np.sign(x0j) >= -tol if x0j != 0 else abs(xj) <= tol, (sym, xj, x0j)


# --- 1. min_days_to_expiry as a row -----------------------------------------------------------------

def test_near_expiry_mask_follows_the_planners_rule() -> None:
    cons = (perp(), dated(1.0), dated(2.0, symbol="BTC-Q2"), dated(-1.0, symbol="BTC-QX"))
    b = book(cons)
    np.testing.assert_array_equal(near_expiry_mask(b, market(cons), 2.0), [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(near_expiry_mask(b, market(cons), 0.0), [0.0, 0.0, 0.0, 1.0])


def test_row_is_off_by_default_and_on_by_itself_inside_the_window() -> None:
    """Off by default, the row changes nothing while no dated contract is inside the window (3 days
    out): the dated contract (2 bp) takes the whole gap. One day out it is on by itself, whatever
    the setting (the order planner would not send the increase, and the answer's other legs would
    go without it): the dated contract stays at its $1,000 and the perp takes the rest."""
    assert ConstraintSettings().expiry_row is False
    far = (perp(), dated(3.0))
    b, m = book(far, {"BTC-Q": 1000.0}), market(far)
    d = prepare(b, m, RISK, settings(row=False))
    assert d.near_expiry is None and d.structure.expiry_guarded == ()
    x = positions(b, m, settings(row=False))
    assert x["BTC-Q"] == pytest.approx(4000.0 - short_of(0.0002), abs=1e-3)
    assert x["BTC-PERP"] == pytest.approx(0.0, abs=1e-3)
    near = (perp(), dated(1.0))
    b, m = book(near, {"BTC-Q": 1000.0}), market(near)
    d = prepare(b, m, RISK, settings(row=False))
    assert d.near_expiry is not None and list(d.near_expiry) == [0.0, 1.0]
    x = positions(b, m, settings(row=False))
    assert x["BTC-Q"] == pytest.approx(1000.0, abs=1e-3)
    assert x["BTC-PERP"] == pytest.approx(3000.0 - short_of(0.0005), abs=1e-3)


def test_near_expiry_dated_exposure_moves_to_the_perp() -> None:
    cons = (perp(), dated(1.0))
    x0 = {"BTC-Q": 1000.0}
    b, m = book(cons, x0), market(cons)
    x = positions(b, m, settings(row=True))
    check_row(x, x0, ["BTC-Q"])
    assert x["BTC-Q"] == pytest.approx(1000.0, abs=1e-3)  # kept (not increased), not closed
    assert x["BTC-PERP"] == pytest.approx(3000.0 - short_of(0.0005), abs=1e-3)  # the rest
    # 3 days from expiry (>= min_days) the row is slack: the dated contract takes the gap again
    far = (perp(), dated(3.0))
    x_far = positions(book(far, x0), market(far), settings(row=True))
    assert x_far["BTC-Q"] == pytest.approx(4000.0 - short_of(0.0002), abs=1e-3)


@pytest.mark.parametrize("x0q", [-1500.0, 2500.0, 6000.0, 0.0])
def test_row_holds_for_any_sign_and_size(x0q: float) -> None:
    """Short, small long, over-hedged long and flat near-expiry positions: only reduced/closed."""
    cons = (perp(), dated(1.0))
    x0 = {"BTC-Q": x0q}
    b, m = book(cons, x0), market(cons)
    s = settings(row=True)
    dec = Rebalancer().decide(b, m, RISK, s)
    z = dec.rounded.z
    x = dict(zip(b.contract_symbols, z * dec.data.V, strict=True))
    check_row(x, x0, ["BTC-Q"])
    guard = [c for c in dec.problem.constraints if isinstance(c, ExpiryGuard)]
    assert len(guard) == 1 and guard[0].violation(z, dec.data).max() <= 1e-9
    # the hedge is still complete through the perp (TE ~ 0 with only 2-5 bp fees)
    assert sum(x.values()) == pytest.approx(4000.0, abs=10.0)
    if x0q == 6000.0:
        assert x["BTC-Q"] == pytest.approx(4000.0 + short_of(0.0002), abs=1e-2)  # reduced


def test_row_is_dpp_and_compiled_once() -> None:
    """Moving in and out of the window only changes Parameter values."""
    reb = Rebalancer()
    cons = (perp(), dated(1.0))
    b = book(cons, {"BTC-Q": 1000.0})
    s = settings(row=True)
    d_near = prepare(b, market(cons), RISK, s)
    _, hp, _, _ = reb.solve_z(d_near)
    assert hp.problem.is_dpp()
    builds = HedgeProblem.builds
    later = replace(market(cons), time=pd.Timestamp(T0 - timedelta(days=5)))
    d_far = prepare(b, later, RISK, s)
    assert d_far.structure == d_near.structure
    assert d_far.near_expiry is not None and d_far.near_expiry.sum() == 0
    z, hp2, _, _ = reb.solve_z(d_far)
    assert hp2 is hp and HedgeProblem.builds == builds
    assert z[1] * d_far.V == pytest.approx(4000.0 - short_of(0.0002), abs=1e-3)


# --- 3. the cheapest instrument ------------------------------------------------------------------

def test_carry_picks_the_dated_contract_when_perp_funding_is_high() -> None:
    """Equal 5 bp fees; horizon 1 day. Perp forecast 3e-4 per 8 h: c = 9 bp a day; dated 30 days
    out at +0.9% basis: c = 0.9% / 30 = 3 bp a day. The long goes through the dated contract. The
    spread (6 bp) is below a pair's fees (10 bp), so no carry trade pays."""
    cons = (perp(0.0005), dated(30.0, fee=0.0005))
    mk = market(cons, mark={"BTC-Q": SPOT * 1.009}, funding={"BTC-PERP": 1e-4},
                forecast={"BTC-PERP": 3e-4})
    s = settings(row=False, carry=True)
    d = prepare(book(cons), mk, RISK, s)
    np.testing.assert_allclose(d.carry, [9e-4, 3e-4], rtol=1e-12)
    x = positions(book(cons), mk, s)
    assert x["BTC-Q"] > 3900.0 and abs(x["BTC-PERP"]) < 1.0
    # vice versa: the perp's forecast falls to 0.5e-4 per 8 h (1.5 bp a day): the perp is cheaper
    mk_low = replace(mk, funding_forecast={"BTC-PERP": 0.5e-4})
    x_low = positions(book(cons), mk_low, s)
    assert x_low["BTC-PERP"] > 3900.0 and abs(x_low["BTC-Q"]) < 1.0
    # and a short exposure (target 20% BTC: -$4,000) goes through the contract a short earns most on
    short = replace(book(cons), targets={"BTC": 0.2})
    xs = positions(short, mk, s)
    assert xs["BTC-PERP"] < -3900.0 and abs(xs["BTC-Q"]) < 1.0


def test_carry_reaches_the_cheapest_instrument_over_the_horizon() -> None:
    """The horizon matters: a dated contract 10 days out at +0.3% basis carries 0.3% x h / max(10,
    h). Over 1 day: 3 bp vs the perp's 9 bp; over 30 days the whole 0.3% (30 bp) vs the perp's
    270 bp (the spread then exceeds a pair's 10 bp of fees: a long/short carry trade would pay, and
    only a bound such as the margin row or basis risk limits it). Solved over 1 day: the long goes
    through the dated contract."""
    cons = (perp(0.0005), dated(10.0, fee=0.0005))
    mk = market(cons, mark={"BTC-Q": SPOT * 1.003}, forecast={"BTC-PERP": 3e-4})
    d1 = prepare(book(cons), mk, RISK, settings(row=False, carry=True, horizon=1.0))
    np.testing.assert_allclose(d1.carry, [9e-4, 3e-4], rtol=1e-12)
    d30 = prepare(book(cons), mk, RISK, settings(row=False, carry=True, horizon=30.0))
    np.testing.assert_allclose(d30.carry, [270e-4, 30e-4], rtol=1e-12)
    x = positions(book(cons), mk, settings(row=False, carry=True, horizon=1.0))
    assert x["BTC-Q"] > 3900.0 and abs(x["BTC-PERP"]) < 1.0


def test_spot_carries_nothing_with_the_spot_leg_on() -> None:
    """Spot leg on, $4,000 of cash to spend: buying spot costs its fee (10 bp) + half spread (1 bp
    by default) and carries nothing; the perp costs 5 bp + carry. A perp forecast of 5e-4 per 8 h
    (15 bp a day) makes spot the cheapest; a negative forecast (-2e-4: longs are paid 6 bp a day)
    makes the perp cheapest."""
    cons = (perp(0.0005),)
    s = settings(row=False, carry=True, spot=True)
    dear = market(cons, forecast={"BTC-PERP": 5e-4})
    sol = solve_rebalance(book(cons), dear, RISK, s)
    bought = sum(t.units for t in sol.spot_trades if t.asset == "BTC") * SPOT
    assert bought > 3900.0
    assert abs(sol.target_positions[0].notional) < 1.0
    assert sol.costs.funding_carry == pytest.approx(0.0, abs=1e-3)
    cheap = market(cons, forecast={"BTC-PERP": -2e-4})
    sol2 = solve_rebalance(book(cons), cheap, RISK, s)
    assert sum(abs(t.units) for t in sol2.spot_trades) * SPOT < 1.0
    assert sol2.target_positions[0].notional > 3900.0


def test_expiry_row_and_carry_together() -> None:
    """The dated contract is the cheapest carry but 1 day from expiry: within a window of half a
    day it takes the exposure; within the 2 days (the row on, or by itself) it cannot be
    increased, so the perp takes the rest of the exposure despite its funding."""
    cons = (perp(0.0005), dated(1.0, fee=0.0005))
    mk = market(cons, mark={"BTC-Q": SPOT * 1.0001}, forecast={"BTC-PERP": 3e-4})
    x0 = {"BTC-Q": 500.0}
    b = book(cons, x0, mark={"BTC-Q": SPOT * 1.0001})
    free = positions(b, mk, settings(row=False, carry=True, min_days=0.5))
    assert free["BTC-Q"] > 3900.0
    for row in (True, False):
        x = positions(b, mk, settings(row=row, carry=True))
        check_row(x, x0, ["BTC-Q"])
        assert x["BTC-PERP"] > 3400.0
