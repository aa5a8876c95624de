"""The exchange's order minimums in the lot rounding (``optimizer.placeable``,
``optimizer.rounding``): the rounded and repaired positions are moves the order planner sends
whole, so the solution never reports a trade or a tracking error that ``fbr execute`` cannot
reach. Hand cases; the planner's own split (``executor.plan_parts``) is the independent check."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from executor.plan import PlanOptions
from executor.plan_parts import drop_reason, trade_parts
from models.instruments import FuturesContract
from optimizer.constraint_base import Constraint
from optimizer.placeable import TOL_QTY, TOL_USD, fallback, placeable_move
from optimizer.rounding import round_positions


@dataclass
class Row:
    """lo <= sum_j a_j z_j <= hi (one row, 'row'); violation the distance outside."""

    a: tuple[float, ...]
    lo: float = -np.inf
    hi: float = np.inf

    def violation(self, z: np.ndarray, d: Any) -> np.ndarray:
        v = float(np.array(self.a) @ z)
        return np.array([max(self.lo - v, v - self.hi, 0.0)])

    def rows(self, d: Any) -> list[str]:
        return ["row"]


def _data(prices: list[float], V: float) -> Any:
    return SimpleNamespace(prices=np.array(prices), V=V, exposure_offset=None,
                           z0=np.zeros(len(prices)))


def _contract(lot: float, min_notional: float, min_qty: float = 0.0) -> FuturesContract:
    return FuturesContract("XUSDT", "X", lot_step=lot, min_notional=min_notional, min_qty=min_qty)


@pytest.mark.parametrize(("q0", "q", "ok"), [
    (0.0, 1.0, False),    # opens 1 x 4 USD < 5
    (0.0, 2.0, True),     # opens 8 USD
    (3.0, 0.0, True),     # closes to flat: always allowed
    (3.0, 2.0, False),    # shrinks by 4 USD, leaving a position
    (3.0, 1.0, True),     # shrinks by 8 USD
    (3.0, -1.0, False),   # flips: the close is fine, the opening 4 USD is not
    (3.0, -2.0, True),    # flips: opens 8 USD
    (1.0, -2.0, True),    # flips: the close of 4 USD is exempt, the opening 8 USD is not small
    (3.0, 3.0, True),     # no move
])
def test_placeable_moves_by_hand(q0: float, q: float, ok: bool) -> None:
    """4 USD a contract, min notional 5 USD."""
    assert placeable_move(q0, q, 4.0, 5.0, 0.0) is ok
    # the planner's own split agrees: every part of a placeable move is sent, a venue exempting
    # a close to flat from the min notional (as Binance does every reduce-only order), and no
    # other part (the rounding does not count on that exemption)
    c = _contract(1.0, 5.0)
    sent = [drop_reason(p, c, 4.0, PlanOptions(reduce_only_exempt=p.contracts == -q0), None)
            is None for p in trade_parts("XUSDT", q0, q, 1.0)]
    assert all(sent) is ok


def test_min_qty_holds_for_every_part() -> None:
    assert not placeable_move(0.0, 0.005, 60_000.0, 5.0, 0.01)   # 300 USD but 0.005 < 0.01
    assert placeable_move(0.0, 0.01, 60_000.0, 5.0, 0.01)
    assert not placeable_move(0.02, 0.015, 60_000.0, 5.0, 0.01)  # a reduction of 0.005
    assert not placeable_move(0.005, 0.0, 60_000.0, 5.0, 0.01)   # even a close: 0.005 < minQty


def test_min_qty_holds_for_the_close_of_a_flip() -> None:
    """min quantity 2.5: the flip 1 -> -2 closes 1 contract (under it) before it opens 2: not
    placeable, though a single order of 3 would be."""
    assert not placeable_move(1.0, -2.0, 4.0, 5.0, 2.5)
    assert placeable_move(3.0, -3.0, 4.0, 5.0, 2.5)


def test_a_part_at_the_minimum_within_its_tolerance_is_placeable() -> None:
    """The minimums are met within TOL_QTY (contracts) and TOL_USD (USD): a part of exactly
    min_qty - TOL_QTY, or min_notional - TOL_USD, passes."""
    assert placeable_move(0.0, 1.0 - TOL_QTY, 1.0, 0.0, 1.0)
    assert placeable_move(0.0, 5.0 - TOL_USD, 1.0, 5.0, 0.0)
    assert not placeable_move(0.0, 5.0 - 2 * TOL_USD, 1.0, 5.0, 0.0)


def test_fallback_closes_a_flip_and_holds_anything_else() -> None:
    assert fallback(3.0, -1.0, 0.0) == 0.0
    assert fallback(2.0, -1.0, 0.0) == 0.0  # a flip closes to flat
    assert fallback(1.0, -1.0, 0.0) == 0.0
    assert fallback(-3.0, 1.0, 0.0) == 0.0
    assert fallback(0.0, 1.0, 0.0) == 0.0
    assert fallback(3.0, 2.0, 0.0) == 3.0
    assert fallback(1.0, -2.0, 2.5) == 1.0  # the close itself is under min quantity


def test_the_repair_never_lands_on_a_trade_below_the_min_notional() -> None:
    """X at 4 USD, lot 1, min notional 5, V = 1,000, target 8 USD rounds to 2 lots; a cap of
    7 USD: one lot (4 USD opened) is not an order; the placeable answer is no trade."""
    d = _data([4.0], 1000.0)
    cons = cast(list[Constraint], [Row((1.0,), hi=0.007)])
    r = round_positions(np.array([0.008]), d, (_contract(1.0, 5.0),), np.zeros(1), cons)
    assert r.contracts[0] == 0.0 and r.broken == ()


def test_a_flip_whose_opening_part_is_too_small_closes_to_flat() -> None:
    """Held +0.01 at 60,000 (600 USD), target -0.001 (-60 USD), min notional 100: the close is
    sent, the 60 USD opening sell is not: the position is flat."""
    d = _data([60_000.0], 10_000.0)
    r = round_positions(np.array([-0.006]), d, (_contract(0.001, 100.0),), np.array([0.01]), [])
    assert r.contracts[0] == 0.0 and r.z[0] == 0.0


def test_a_trade_under_the_min_qty_is_not_made() -> None:
    d = _data([60_000.0], 10_000.0)
    r = round_positions(np.array([0.03]), d, (_contract(0.001, 5.0, 0.01),), np.zeros(1), [])
    assert r.contracts[0] == 0.0  # 0.005 contracts wanted, 0.01 the least the exchange takes


def test_a_band_the_rounding_misses_is_met_one_lot_further_from_the_start() -> None:
    """V = 10,000, one lot = 100 USD (0.01 of V); a band -0.106 <= z <= -0.094 (the continuous
    answer at its edge, -0.094, rounds to -0.09, outside); -0.10 (one lot further from q0 = 0)
    is inside. The old repair only moved toward q0 or flat and left it broken."""
    d = _data([100.0], 10_000.0)
    cons = cast(list[Constraint], [Row((1.0,), lo=-0.106, hi=-0.094)])
    r = round_positions(np.array([-0.094]), d, (_contract(1.0, 5.0),), np.zeros(1), cons)
    assert r.contracts[0] == -10.0 and r.broken == () and r.repairs == 1


def test_the_repair_tries_the_other_way_when_one_way_is_not_an_order() -> None:
    """Short 1 lot held (4 USD at 4 USD a lot, min notional 5), target the held -1, a floor z >= 0:
    one lot further short is not an order (its fallback is the held -1: no move), one lot up
    closes to flat (always an order) and meets the floor: one repair, flat."""
    d = _data([4.0], 1000.0)
    cons = cast(list[Constraint], [Row((1.0,), lo=0.0)])
    r = round_positions(np.array([-0.004]), d, (_contract(1.0, 5.0),), np.array([-1.0]), cons)
    assert r.contracts[0] == 0.0 and r.repairs == 1 and r.broken == ()
