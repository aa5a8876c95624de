"""Lot rounding, the min-notional rule and its closing exemption, the one-lot repair loop and the
solver-noise snap, by hand, with stub constraints and terms (numpy violations written here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from models.instruments import FuturesContract
from optimizer.constraint_base import Constraint
from optimizer.rounding import (
    NOISE_EXPOSURE,
    TOL,
    broken_rows,
    objective_value,
    round_positions,
    snap_small_trades,
    total_violation,
)
from optimizer.terms import Term


def _need(d: Any) -> None:
    """The stubs read the problem data, as real constraints and terms do."""
    assert d.V > 0


@dataclass
class Cap:
    """sum_j a_j |z_j| <= cap (one row); violation max(lhs - cap, 0)."""

    cap: float
    a: tuple[float, ...] | None = None
    label: str = "gross"

    def violation(self, z: np.ndarray, d: Any) -> np.ndarray:
        _need(d)
        a = np.ones(len(z)) if self.a is None else np.array(self.a)
        return np.array([max(float(a @ np.abs(z)) - self.cap, 0.0)])

    def rows(self, d: Any) -> list[str]:
        _need(d)
        return [self.label]


@dataclass
class Floor:
    """z_j >= lo_j, one row per contract."""

    lo: tuple[float, ...]

    def violation(self, z: np.ndarray, d: Any) -> np.ndarray:
        _need(d)
        out: np.ndarray = np.maximum(np.array(self.lo) - z, 0.0)
        return out

    def rows(self, d: Any) -> list[str]:
        _need(d)
        return [f"floor[{j}]" for j in range(len(self.lo))]


@dataclass
class Quad:
    """A stub objective term: sum_j c_j (z_j - t_j)^2."""

    c: tuple[float, ...]
    t: tuple[float, ...]

    def value(self, z: np.ndarray, d: Any) -> float:
        _need(d)
        return float(np.array(self.c) @ (z - np.array(self.t)) ** 2)


def _cons(*stubs: Cap | Floor) -> list[Constraint]:
    """The stub constraints as the Constraint list rounding takes: it calls only ``violation`` and
    ``rows``, which the stubs provide. They do not subclass Constraint, as a concrete subclass would
    join the census of every Constraint class in tests/optimizer/test_constraints.py."""
    return cast(list[Constraint], list(stubs))


def _terms(*stubs: Quad) -> list[Term]:
    """The stub terms as the Term list rounding takes (only ``value`` is called); not subclasses, for
    the census in tests/optimizer/test_terms.py."""
    return cast(list[Term], list(stubs))


def _data(prices: list[float], V: float, z0: list[float] | None = None) -> Any:
    return SimpleNamespace(prices=np.array(prices), V=V, exposure_offset=None,
                           z0=np.zeros(len(prices)) if z0 is None else np.array(z0))


def _contracts(*specs: tuple[float, float]) -> tuple[FuturesContract, ...]:
    """(lot step, min notional) per contract."""
    return tuple(FuturesContract(f"C{j}USDT", f"C{j}", lot_step=lot, min_notional=mn)
                 for j, (lot, mn) in enumerate(specs))


def test_helpers_sum_rows_and_terms() -> None:
    d = _data([100.0, 100.0], 1000.0)
    z = np.array([0.5, -0.7])
    cons = _cons(Cap(1.0), Floor((0.0, -0.5)))
    # gross 1.2 - 1.0 = 0.2; floor: 0 and -0.5 - (-0.7) = 0.2
    assert total_violation(z, d, cons) == pytest.approx(0.4)
    assert broken_rows(z, d, cons) == ["gross", "floor[1]"]
    assert broken_rows(z, d, cons, tol=0.25) == []
    assert broken_rows(np.array([0.5, -0.5 + 5e-10]), d, cons) == []  # within TOL = 1e-9
    assert objective_value(z, d, _terms(Quad((1.0, 2.0), (0.0, 0.0)), Quad((1.0, 0.0), (1.0, 0.0)))) == \
        pytest.approx(0.25 + 2 * 0.49 + 0.25)


def test_round_to_lot_by_hand() -> None:
    contracts = _contracts((0.1, 5.0), (0.0, 5.0))  # the second has no lot: no rounding
    d = _data([100.0, 50.0], 10_000.0)
    # q_raw = z V / npc: 0.1234 x 10,000 / 100 = 12.34 -> 12.3; 0.0321 x 10,000 / 50 = 6.42 kept
    r = round_positions(np.array([0.1234, 0.0321]), d, contracts, np.zeros(2), [])
    np.testing.assert_allclose(r.contracts, [12.3, 6.42])
    np.testing.assert_allclose(r.z, [12.3 * 100 / 10_000, 0.0321])
    assert r.repairs == 0 and r.broken == ()


def test_small_trade_dropped_but_closing_allowed() -> None:
    contracts = _contracts((0.01, 5.0), (0.01, 5.0), (0.01, 5.0))
    d = _data([100.0, 100.0, 100.0], 10_000.0)
    q0 = np.array([5.0, 0.03, 1.0])
    # 0: 5 -> 5.02 trades 2 USD < 5: dropped, stays 5; 1: 0.03 -> 0 closes (3 USD): allowed;
    # 2: 1 -> 1.06 trades 6 USD >= 5: kept
    z = np.array([5.02, 0.0, 1.06]) * 100 / 10_000
    r = round_positions(z, d, contracts, q0, [])
    np.testing.assert_allclose(r.contracts, [5.0, 0.0, 1.06])
    np.testing.assert_allclose(r.z, [0.05, 0.0, 0.0106])


def test_repair_steps_one_lot_toward_the_position() -> None:
    contracts = _contracts((1.0, 0.0))
    d = _data([100.0], 1000.0)  # one lot = 100 USD = 0.1 of V
    # q_raw = 3.5 -> 4 (half to even); gross 0.4 > 0.3: one lot back toward q0 = 0 -> 3
    r = round_positions(np.array([0.35]), d, contracts, np.zeros(1), _cons(Cap(0.3)))
    assert r.contracts[0] == 3.0
    assert r.z[0] == pytest.approx(0.3)
    assert r.repairs == 1 and r.broken == ()


def test_repair_toward_a_short_position_and_toward_flat() -> None:
    contracts = _contracts((1.0, 0.0))
    d = _data([100.0], 1000.0)
    # held -2, rounded target -5 (gross 0.5 > 0.25): two steps of +1 -> -3 (gross 0.3 still > 0.25)
    # -> ... the loop stops at -2 (0.2): three repairs
    r = round_positions(np.array([-0.5]), d, contracts, np.array([-2.0]), _cons(Cap(0.25)))
    assert r.contracts[0] == -2.0 and r.repairs == 3 and r.broken == ()
    # held +2, target -5: toward q0 = 2 and toward 0 are the same direction (+1)
    r = round_positions(np.array([-0.5]), d, contracts, np.array([2.0]), _cons(Cap(0.25)))
    assert r.contracts[0] == -2.0 and r.repairs == 3


def test_repair_picks_the_move_that_cuts_the_violation_most() -> None:
    contracts = _contracts((1.0, 0.0), (1.0, 0.0))
    d = _data([100.0, 100.0], 1000.0)
    # weights 1 and 3 in the row: one lot of contract 1 removes 0.3 of violation, of contract 0 only 0.1
    cons = _cons(Cap(1.3, a=(1.0, 3.0)))
    r = round_positions(np.array([0.4, 0.4]), d, contracts, np.zeros(2), cons)  # lhs 0.4 + 1.2 = 1.6
    np.testing.assert_allclose(r.contracts, [4.0, 3.0])
    assert r.repairs == 1 and r.broken == ()


def test_repair_without_lot_steps_a_thousandth() -> None:
    contracts = _contracts((0.0, 0.0))
    d = _data([100.0], 1000.0)
    r = round_positions(np.array([0.5]), d, contracts, np.zeros(1), _cons(Cap(0.4996)))
    # q = 5 (no lot); step 5e-3 -> 4.995 gives 0.4995 <= 0.4996
    assert r.contracts[0] == pytest.approx(4.995)
    assert r.repairs == 1


def test_a_floor_the_rounding_undershoots_is_repaired_one_lot_away_from_the_start() -> None:
    contracts = _contracts((1.0, 0.0))
    d = _data([100.0], 1000.0)
    # floor 0.65 but the target rounds to 0.6 and q0 = 0: no move toward 0 helps; one lot up
    # (0.7, away from q0) meets it
    r = round_positions(np.array([0.6]), d, contracts, np.zeros(1), _cons(Floor((0.65,))))
    assert r.contracts[0] == 7.0 and r.repairs == 1 and r.broken == ()


def test_unrepairable_rows_are_reported() -> None:
    contracts = _contracts((1.0, 0.0))
    d = _data([100.0], 1000.0)
    # floor 0.65 and cap 0.6: one lot either way breaks the other row by more -> no repair
    r = round_positions(np.array([0.6]), d, contracts, np.zeros(1),
                        _cons(Floor((0.65,)), Cap(0.6)))
    assert r.contracts[0] == 6.0 and r.repairs == 0 and r.broken == ("floor[0]",)
    # an impossible pair: each move only trades one break for another; stops, reports both
    cons = _cons(Cap(0.25), Floor((0.45,)))
    r = round_positions(np.array([0.5]), d, contracts, np.zeros(1), cons)
    assert r.repairs <= 10
    assert set(r.broken) <= {"gross", "floor[0]"} and r.broken


def test_repair_loop_is_bounded_by_ten_moves_per_contract() -> None:
    contracts = _contracts((1.0, 0.0))
    d = _data([1.0], 1000.0)  # one lot = 0.001 of V
    # 500 lots over the cap: the loop stops after 10 moves, still broken
    r = round_positions(np.array([1.0]), d, contracts, np.zeros(1), _cons(Cap(0.5)))
    assert r.repairs == 10
    assert r.contracts[0] == 990.0
    assert r.broken == ("gross",)


def test_snap_no_small_trade_returns_z() -> None:
    d = _data([100.0, 100.0], 1000.0, z0=[0.1, 0.2])
    z = np.array([0.3, 0.5])
    assert snap_small_trades(z, d, [], [], threshold=1e-4, objective_tol=1e-9) is z
    z = np.array([0.1, 0.2])  # no trade at all (dz = 0 is not "small")
    assert snap_small_trades(z, d, [], [], threshold=1e-4, objective_tol=1e-9) is z


def test_snap_all_small_trades_together() -> None:
    d = _data([100.0, 100.0, 100.0], 1000.0, z0=[0.1, 0.2, 0.0])
    z = np.array([0.1 + 5e-5, 0.2 - 5e-5, 0.3])  # two dust trades, one real
    out = snap_small_trades(z, d, _cons(Cap(10.0)), _terms(Quad((0.0, 0.0, 1.0), (0.0, 0.0, 0.3))),
                            threshold=1e-4, objective_tol=1e-9)
    np.testing.assert_array_equal(out, [0.1, 0.2, 0.3])
    # a trade of exactly the threshold is not dust
    z = np.array([0.1 + 1e-4 + 1e-12, 0.2, 0.3])
    out = snap_small_trades(z, d, [], [], threshold=1e-4, objective_tol=1e-9)
    np.testing.assert_array_equal(out, z)


def test_snap_one_at_a_time_when_together_raises_the_objective() -> None:
    d = _data([100.0, 100.0], 1000.0, z0=[0.0, 0.0])
    z = np.array([5e-5, 5e-5])
    # the term pulls z_1 to 5e-5 (snapping it costs 1e6 x 2.5e-9 = 2.5e-3), z_0 is free
    out = snap_small_trades(z, d, [], _terms(Quad((0.0, 1e6), (0.0, 5e-5))), threshold=1e-4,
                            objective_tol=1e-9)
    np.testing.assert_array_equal(out, [0.0, 5e-5])
    # within objective_tol the costly snap is taken too
    out = snap_small_trades(z, d, [], _terms(Quad((0.0, 1e6), (0.0, 5e-5))), threshold=1e-4,
                            objective_tol=1e-2)
    np.testing.assert_array_equal(out, [0.0, 0.0])


def test_snap_respects_constraints() -> None:
    d = _data([100.0, 100.0], 1000.0, z0=[0.0, 0.5])
    z = np.array([5e-5, 0.5 - 5e-5])
    # a cap 0.49999 on z_1 alone holds at z (0.49995) but not at z0 (0.5): snapping both breaks
    # it by 1e-5 -> one at a time: z_0 snaps (to 0), z_1 stays
    cons = _cons(Cap(0.49999, a=(0.0, 1.0)))
    out = snap_small_trades(z, d, cons, [], threshold=1e-4, objective_tol=1e-9)
    np.testing.assert_array_equal(out, [0.0, 0.5 - 5e-5])
    # already broken by more than snapping breaks it: snapping both is no worse -> taken
    cons = _cons(Cap(0.4))  # viol at z: 0.1; at z0: 0.1
    out = snap_small_trades(z, d, cons, [], threshold=1e-4, objective_tol=1e-9)
    np.testing.assert_array_equal(out, [0.0, 0.5])


def test_snap_gives_up_on_many_small_trades() -> None:
    n = 60
    d = _data([100.0] * n, 1000.0, z0=[0.0] * n)
    z = np.full(n, 5e-5)
    # objective prefers z: together raises it, and with > 50 small trades no one-at-a-time search
    out = snap_small_trades(z, d, [], _terms(Quad((1e6,) * n, (5e-5,) * n)), threshold=1e-4,
                            objective_tol=1e-9)
    assert out is z
    # objective fine but constraints worse (a floor at z): > 50 -> z unchanged
    out = snap_small_trades(z, d, _cons(Floor((5e-5,) * n)), [], threshold=1e-4, objective_tol=1e-9)
    assert out is z
    # <= 50 of them: one at a time, none helps the floor -> z values kept
    out = snap_small_trades(z[:10], _data([100.0] * 10, 1000.0, z0=[0.0] * 10),
                            _cons(Floor((5e-5,) * 10)), [], threshold=1e-4, objective_tol=1e-9)
    np.testing.assert_array_equal(out, z[:10])


def test_tol_is_tiny() -> None:
    assert TOL == 1e-9


def test_a_violation_of_exactly_tol_is_not_broken() -> None:
    d = _data([100.0, 100.0], 1000.0)
    assert broken_rows(np.array([0.5, -0.75]), d, _cons(Cap(1.0)), tol=0.25) == []  # 1.25 - 1 = 0.25


def test_min_notional_drop_edges() -> None:
    # 0.5 USD under a 5 USD minimum is dropped; exactly the minimum is sent
    contracts = _contracts((0.001, 5.0))
    r = round_positions(np.array([1.005 * 100 / 10_000]), _data([100.0], 10_000.0), contracts,
                        np.array([1.0]), [])
    assert r.contracts[0] == 1.0
    contracts = _contracts((1.0, 5.0))
    r = round_positions(np.array([0.05]), _data([5.0], 100.0), contracts, np.zeros(1), [])
    assert r.contracts[0] == 1.0  # 1 contract x 5 USD = the minimum


def test_repair_closes_a_position_through_its_start() -> None:
    contracts = _contracts((1.0, 0.0))
    d = _data([100.0], 1000.0)  # one lot = 0.1 of V
    # held 3, target 4; the cap forces flat: 4 -> 3 (toward q0), then 3 -> 2 -> 1 -> 0 (toward 0)
    r = round_positions(np.array([0.4]), d, contracts, np.array([3.0]), _cons(Cap(0.05)))
    assert r.contracts[0] == 0.0 and r.repairs == 4 and r.broken == ()


def test_repair_toward_a_long_start_from_a_short() -> None:
    contracts = _contracts((1.0, 0.0))
    d = _data([100.0], 1000.0)
    # held +3, rounded target -2; a floor z >= 0.1 walks -2 -> -1 -> 0 -> +1 (toward q0)
    r = round_positions(np.array([-0.2]), d, contracts, np.array([3.0]), _cons(Floor((0.1,))))
    assert r.contracts[0] == 1.0 and r.repairs == 3 and r.broken == ()


def test_repair_moves_nothing_that_does_not_help() -> None:
    contracts = _contracts((1.0, 0.0), (1.0, 0.0))
    d = _data([100.0, 100.0], 1000.0)
    # contract 0 breaks a floor that a cap on it keeps it from meeting (one lot up breaks the cap
    # by 0.1, more than the floor's 0.05); contract 1's moves change nothing
    r = round_positions(np.array([0.6, 0.5]), d, contracts, np.zeros(2),
                        _cons(Floor((0.65, -10.0)), Cap(0.6, a=(1.0, 0.0))))
    np.testing.assert_array_equal(r.contracts, [6.0, 5.0])
    assert r.repairs == 0 and r.broken == ("floor[0]",)


def test_repair_ties_go_to_the_first_contract() -> None:
    contracts = _contracts((1.0, 0.0), (1.0, 0.0))
    d = _data([100.0, 100.0], 1000.0)
    r = round_positions(np.array([0.4, 0.4]), d, contracts, np.zeros(2), _cons(Cap(0.7)))
    np.testing.assert_array_equal(r.contracts, [3.0, 4.0])
    assert r.repairs == 1


def test_repair_loop_bound_counts_every_contract() -> None:
    contracts = _contracts((1.0, 0.0), (1.0, 0.0))
    d = _data([1.0, 1.0], 1000.0)  # one lot = 0.001 of V
    # 2 x 100 lots over a floor-free cap: at most 10 x 2 = 20 moves
    r = round_positions(np.array([0.5, 0.5]), d, contracts, np.zeros(2), _cons(Cap(0.8)))
    assert r.repairs == 20 and r.broken == ("gross",)
    assert r.contracts.sum() == 980.0


def test_snap_a_trade_of_exactly_the_threshold_is_kept() -> None:
    d = _data([100.0], 1000.0, z0=[0.0])
    z = np.array([1e-4])
    np.testing.assert_array_equal(snap_small_trades(z, d, [], [], threshold=1e-4, objective_tol=0.0), z)


def _many(n: int, cons: list[Constraint], terms: list[Term]) -> np.ndarray:
    d = _data([100.0] * n, 1000.0, z0=[0.0] * n)
    return snap_small_trades(np.full(n, 5e-5), d, cons, terms, threshold=1e-4, objective_tol=0.0)


def test_snap_many_trades_with_an_unchanged_objective() -> None:
    # no term: the objective is 0 either way (ties count as not worse): all 60 snap at once
    np.testing.assert_array_equal(_many(60, [], []), np.zeros(60))


def test_snap_the_fifty_trade_limit() -> None:
    def pull(n: int) -> list[Term]:  # a term that keeps coordinate 0 at 5e-5
        return _terms(Quad((1e6,) + (0.0,) * (n - 1), (5e-5,) + (0.0,) * (n - 1)))

    # the objective rises when all snap: up to 50 small trades are tried one at a time
    out = _many(50, [], pull(50))
    assert out[0] == 5e-5 and not out[1:].any()
    assert (_many(51, [], pull(51)) == 5e-5).all()  # more than 50: left as they are
    # the constraints worse when all snap (a floor on coordinate 0): the same limit
    floor = _cons(Floor((5e-5,) + (-1.0,) * 49))
    out = _many(50, floor, [])
    assert out[0] == 5e-5 and not out[1:].any()
    assert (_many(51, _cons(Floor((5e-5,) + (-1.0,) * 50)), []) == 5e-5).all()


def test_snap_tries_the_smallest_trade_first_and_skips_costly_ones() -> None:
    d = _data([100.0, 100.0, 100.0], 1000.0, z0=[0.0, 0.0, 0.0])
    z = np.array([8e-5, 2e-5, 0.3])
    # |z_0| + |z_1| >= 5e-5: only one of the two dust trades may go; the smaller (z_1) is tried first
    one = _cons(Cap(-5e-5, a=(-1.0, -1.0, 0.0)))
    out = snap_small_trades(z, d, one, [], threshold=1e-4, objective_tol=0.0)
    np.testing.assert_array_equal(out, [8e-5, 0.0, 0.3])
    # a term keeping the smaller one: it is skipped, and the next one is still tried
    keep1 = _terms(Quad((0.0, 1e6, 0.0), (0.0, 2e-5, 0.0)))
    out = snap_small_trades(z, d, [], keep1, threshold=1e-4, objective_tol=0.0)
    np.testing.assert_array_equal(out, [0.0, 2e-5, 0.3])


def test_snap_one_at_a_time_with_zero_objective_tolerance() -> None:
    d = _data([100.0, 100.0], 1000.0, z0=[0.0, 0.5])
    z = np.array([5e-5, 0.5 - 5e-5])
    out = snap_small_trades(z, d, _cons(Cap(0.49999, a=(0.0, 1.0))), [], threshold=1e-4, objective_tol=0.0)
    np.testing.assert_array_equal(out, [0.0, 0.5 - 5e-5])


def test_a_small_real_hedge_on_a_large_book_is_not_cancelled_as_noise(tmp_path: Path) -> None:
    """A 1e9 USD book 3e-5 of its base off target (BTC over, ETH under), costs and constraints
    off: the answer is the naive one, B x = w* V - spot (README): BTC-PERP -30,000 USD, ETH-PERP
    +30,000, SOL-PERP 0. Cancelling it raises TE^2 by about sigma^2 (3e-5)^2 = 3e-10, which the
    old noise tolerance (1e-9) took for solver noise: no trade at all."""
    from fbr.config import load_book_file
    from optimizer.rebalance import Rebalancer

    V, d = 1e9, 3e-5
    text = f"""
[book]
cash = {0.1 * V}
[targets]
BTC = 0.5
ETH = 0.3
SOL = 0.2
[spot]
BTC = {(0.5 + d) * V / 60000.0}
ETH = {(0.3 - d) * V / 2500.0}
SOL = {0.2 * V / 150.0}
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
[costs]
trading = false
carry = false
[constraints]
margin = false
"""
    path = tmp_path / "b.toml"
    path.write_text(text, encoding="utf-8")
    lb = load_book_file(path)
    sol = Rebalancer().solve(lb.book, lb.market, lb.risk, lb.settings)
    x = {p.symbol: p.notional for p in sol.target_positions}
    assert x["BTC-PERP"] == pytest.approx(-d * V, rel=1e-6)
    assert x["ETH-PERP"] == pytest.approx(d * V, rel=1e-6)
    assert abs(x["SOL-PERP"]) <= 1e-6 * d * V


def test_a_repair_move_that_breaks_no_row_is_the_one_of_lowest_objective(tmp_path: Path) -> None:
    """A 100 USD book, 60/25/15 against 50/30/20, lots of 0.001 (60 USD of BTC), min notional 5
    USD, gross leverage at most 1: rounding leaves ETH +5 USD (gross 1.05). Two single moves mend
    it: drop the ETH trade (no trade: gross exactly 1) or short one BTC lot (-60 USD, the whole
    BTC holding). The first was not preferred: TE 0.310 after against 0.0498 before. Expected:
    the mended book tracks no worse than holding, TE = sqrt(d' Sigma d), d = s - w* (numpy)."""
    from fbr.config import load_book_file
    from optimizer.rebalance import Rebalancer

    path = tmp_path / "b.toml"
    path.write_text("""
[book]
cash = 30.0
[targets]
BTC = 0.5
ETH = 0.3
SOL = 0.2
[spot]
BTC = 0.001
ETH = 0.01
SOL = 0.1
[contract_defaults]
lot_step = 0.001
min_notional = 5.0
leverage = 10
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
[costs]
carry = false
[constraints]
max_gross_leverage = 1.0
""", encoding="utf-8")
    lb = load_book_file(path)
    sol = Rebalancer().solve(lb.book, lb.market, lb.risk, lb.settings)
    vols = np.array([0.55, 0.70, 0.95])
    corr = np.full((3, 3), 0.7) + 0.3 * np.eye(3)
    dev = np.array([0.6, 0.25, 0.15]) - np.array([0.5, 0.3, 0.2])
    te_hold = float(np.sqrt(dev @ (corr * np.outer(vols, vols)) @ dev))
    assert sol.tracking_error_before == pytest.approx(te_hold, rel=1e-9)
    assert sol.tracking_error_after <= te_hold + 1e-12
    assert sol.rounding_broken == () and sol.rounding_repairs >= 1
    gross = sum(abs(w) for w in sol.effective_weights_after.values())
    assert gross <= 1.0 + 1e-9


def test_snap_flat_tolerance_only_for_a_cancellation_that_moves_no_exposure() -> None:
    """Two contracts on asset 0 (z_0, z_1) and one on asset 1 (z_2). A shift of 5e-5 from contract
    1 to contract 0 leaves asset 0's exposure as it is; cancelling it raises the objective by
    2 x 1e-3 x (5e-5)^2 = 5e-12: above the strict 1e-12, so kept by default (flat_tol 0), and
    within flat_tol = 1e-9, which a cancellation moving no asset's exposure by more than
    NOISE_EXPOSURE (1e-5 of the base) may use. A one-sided trade of 5e-5 moves asset 0's exposure
    by 5e-5: a real hedge, judged by the strict tolerance alone; one of 5e-6 (dust) by 5e-6, within
    NOISE_EXPOSURE: cancelled within flat_tol (its cancellation costs 0.1 x (5e-6)^2 = 2.5e-12)."""
    d: Any = SimpleNamespace(prices=np.array([100.0] * 3), V=1000.0, exposure_offset=None,
                             z0=np.array([0.5, 0.5, 1.0]),
                             B=np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert NOISE_EXPOSURE == 1e-5
    shift = np.array([0.5 + 5e-5, 0.5 - 5e-5, 1.0])
    target = (0.5 + 5e-5, 0.5 - 5e-5, 0.0)
    terms = _terms(Quad((1e-3, 1e-3, 0.0), target))
    kept = snap_small_trades(shift, d, [], terms, threshold=1e-4, objective_tol=1e-12)
    np.testing.assert_array_equal(kept, shift)
    out = snap_small_trades(shift, d, [], terms, threshold=1e-4, objective_tol=1e-12, flat_tol=1e-9)
    np.testing.assert_array_equal(out, [0.5, 0.5, 1.0])
    one_sided = np.array([0.5 + 5e-5, 0.5, 1.0])
    kept = snap_small_trades(one_sided, d, [], _terms(Quad((1e-3, 0.0, 0.0), (0.5 + 5e-5, 0.0, 0.0))),
                             threshold=1e-4, objective_tol=1e-12, flat_tol=1e-9)
    np.testing.assert_array_equal(kept, one_sided)
    dust = np.array([0.5 + 5e-6, 0.5, 1.0])
    dust_terms = _terms(Quad((0.1, 0.0, 0.0), (0.5 + 5e-6, 0.0, 0.0)))
    np.testing.assert_array_equal(snap_small_trades(dust, d, [], dust_terms, threshold=1e-4,
                                                    objective_tol=1e-12), dust)
    out = snap_small_trades(dust, d, [], dust_terms, threshold=1e-4, objective_tol=1e-12,
                            flat_tol=1e-9)
    np.testing.assert_array_equal(out, [0.5, 0.5, 1.0])
    # a raise of 2 x 0.201 x (5e-5)^2 = 1.005e-9 is past flat_tol: the shift is kept
    terms = _terms(Quad((0.201, 0.201, 0.0), target))
    kept = snap_small_trades(shift, d, [], terms, threshold=1e-4, objective_tol=1e-12, flat_tol=1e-9)
    np.testing.assert_array_equal(kept, shift)


def test_a_small_real_hedge_is_kept_beside_a_large_unhedgeable_objective(tmp_path: Path) -> None:
    """As above, 3e-5 off target on a 1e9 USD book, beside XRP held at 0.3 of the base with no
    contract and no correlation: TE^2 0.09 stays whatever the hedges do, so a tolerance relative to
    the objective (1e-8 x 0.09) would cancel the 30,000 USD hedges (their worth is about 2.3e-10
    of TE^2). They move the assets' exposure, so only the absolute tolerance applies. Reference:
    least squares z = -(B' S B)^-1 B' S (s - w*) (numpy), here the naive hedge (a review)."""
    from fbr.config import load_book_file
    from optimizer.rebalance import Rebalancer

    V, d = 1e9, 3e-5
    text = f"""
[book]
cash = {0.1 * V}
[targets]
BTC = 0.4
ETH = 0.3
[spot]
BTC = {(0.4 + d) * V / 60000.0}
ETH = {(0.3 - d) * V / 2500.0}
XRP = {0.3 * V / 0.5}
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
XRP = 0.5
[risk]
basis_risk = false
correlation = [[1.0, 0.7, 0.0], [0.7, 1.0, 0.0], [0.0, 0.0, 1.0]]
[risk.vols]
BTC = 0.55
ETH = 0.70
XRP = 1.0
[costs]
trading = false
carry = false
[constraints]
margin = false
"""
    path = tmp_path / "b.toml"
    path.write_text(text, encoding="utf-8")
    lb = load_book_file(path)
    sol = Rebalancer().solve(lb.book, lb.market, lb.risk, lb.settings)
    Vb = sol.base
    # independent least squares
    vols = np.array([0.55, 0.70, 1.0])
    corr = np.array([[1, .7, 0], [.7, 1, 0], [0, 0, 1.0]])
    S = corr * np.outer(vols, vols)
    s = np.array([(0.4 + d) * V, (0.3 - d) * V, 0.3 * V]) / Vb
    w = np.array([0.4, 0.3, 0.0])
    assert abs(Vb - V) < 1.0
    B = np.vstack([np.eye(2), np.zeros(2)])
    z = -np.linalg.solve(B.T @ S @ B, B.T @ S @ (s - w))
    x = {p.symbol: p.notional for p in sol.target_positions}
    assert x["BTC-PERP"] == pytest.approx(z[0] * Vb, rel=1e-4)
    assert x["ETH-PERP"] == pytest.approx(z[1] * Vb, rel=1e-4)
