"""A contract the exchange does not trade now (optimizer.halted): its position stays where it is
and the other contracts hedge around it.

The reference is optcases' plain-cvxpy formulation with that contract's trade limit set to 0
(|x_j - x0_j| <= 0), written independently of fbr's row; fbr must agree with it to 1e-5 of V on
random books, and keep the halted position exactly."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
from optcases import (
    CLARABEL_TIGHT,
    CLARABEL_TIGHT_CONIC,
    Instance,
    is_conic,
    random_instance,
    ref_data,
    reference_problem,
    solve_clarabel,
)

from fbr.config import load_book_file
from models.book import Book
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.constraints import constraints_for
from optimizer.halted import Halted
from optimizer.prepare import prepare
from optimizer.rebalance import Rebalancer
from optimizer.settings import OptimizerSettings

SEED_BOOK = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"
POSITION_TOL = 1e-5  # of V, as the reference tests


def _halted(inst: Instance, j: int) -> Instance:
    sym = inst.book.contracts[j].symbol
    return dataclasses.replace(inst, market=dataclasses.replace(inst.market,
                                                                 halted={sym: "SETTLING"}))


def _reference(inst: Instance, j: int) -> tuple[str, np.ndarray | None]:
    r = ref_data(inst)
    tl = r.trade_limits.copy()
    tl[j] = 0.0
    prob, z, _ = reference_problem(inst, dataclasses.replace(r, trade_limits=tl))
    opts = CLARABEL_TIGHT_CONIC if is_conic(inst) else CLARABEL_TIGHT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "may be inaccurate": the status says so
        solve_clarabel(prob, **opts)
    ok = prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and z.value is not None
    return prob.status, (np.asarray(z.value) * r.V if ok else None)


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_reference_with_a_zero_trade_limit(seed: int) -> None:
    rng = np.random.default_rng(7000 + seed)
    base = random_instance(rng)
    j = int(rng.integers(len(base.book.contracts)))
    inst = _halted(base, j)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    assert d.structure.halted == (j,)
    z, _hp, status, _ = Rebalancer().solve_z(d)
    ref_status, x_ref = _reference(inst, j)
    if x_ref is None:
        assert "infeasible" in ref_status and status == "infeasible", (ref_status, status)
        return
    x = np.asarray(z) * d.V
    assert float(np.max(np.abs(x - x_ref))) / d.V <= POSITION_TOL
    assert abs(x[j] - d.z0[j] * d.V) <= 1e-7 * d.V  # the halted position does not move


def _seed(halted: dict[str, str]) -> tuple[Book, MarketSnapshot, RiskModel, OptimizerSettings]:
    loaded = load_book_file(SEED_BOOK)
    market = dataclasses.replace(loaded.market, halted=halted)
    return loaded.book, market, loaded.risk, loaded.settings


def test_the_seed_book_hedges_around_a_settling_contract() -> None:
    book, market, risk, settings = _seed({"SOL-PERP": "SETTLING"})
    free = Rebalancer().solve(*_seed({}))
    held = Rebalancer().solve(book, market, risk, settings)
    trades = held.trade_vector()
    assert trades.get("SOL-PERP", 0.0) == 0.0 and abs(free.trade_vector()["SOL-PERP"]) > 100.0
    # BTC and ETH re-hedge: not the free solve's trades
    assert any(abs(trades[s] - free.trade_vector()[s]) > 1.0 for s in ("BTC-PERP", "ETH-PERP"))
    # a restriction never lowers the tracking error the free answer reaches
    assert held.tracking_error_unrounded >= free.tracking_error_unrounded - 1e-12
    (row,) = [b for b in held.binding_constraints if b.name == "halted[SOL-PERP]"]
    assert "the exchange does not trade it now: status SETTLING" in row.explanation
    assert any(m.startswith("SOL-PERP is held at its position") for m in held.messages)


def test_a_plan_holds_the_halted_position_at_every_step() -> None:
    book, market, risk, settings = _seed({"SOL-PERP": "SETTLING"})
    sol = Rebalancer().solve(book, market, risk,
                             dataclasses.replace(settings, horizon=3))
    assert sol.plan is not None and sol.plan.horizon == 3
    for step in sol.plan.steps:
        assert abs(step.trades.get("SOL-PERP", 0.0)) <= 1e-6
    assert any(abs(step.trades.get("BTC-PERP", 0.0)) > 1.0 for step in sol.plan.steps)


def test_the_numpy_recheck_is_the_move_of_the_halted_contract() -> None:
    book, market, risk, settings = _seed({"ETH-PERP": "DELIVERING"})
    d = prepare(book, market, risk, settings)
    (row,) = [c for c in constraints_for(d.structure) if isinstance(c, Halted)]
    assert row.rows(d) == ["halted[ETH-PERP]"]
    z = d.z0.copy()
    assert row.violation(z, d).tolist() == [0.0]
    z[1] += 0.0125
    z[0] -= 0.5  # BTC trades freely
    assert row.violation(z, d) == pytest.approx([0.0125], abs=1e-15)
