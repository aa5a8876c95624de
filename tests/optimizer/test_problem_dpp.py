"""The compiled problem is DPP, is built once per structure, and the lean PIQP engine's data map
equals cvxpy's own canonicalisation for new parameter values."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from optcases import Instance, random_instance, solve_reference

from models.book import Book
from models.instruments import FuturesContract, MarginTiers, SpotAsset, TierBracket
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.engines import PiqpEngine
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    SolverName,
    StressScenario,
)


def _everything_on(inst: Instance, *, conic: bool) -> Instance:
    """Every cost term and every constraint switched on (vol cap and impact only when conic)."""
    syms = inst.book.asset_symbols
    V = float(sum(inst.book.spot.get(a, 0.0) * inst.market.spot[a] for a in syms))
    cons = ConstraintSettings(
        margin=True, margin_buffer_usd=0.01 * V,
        stress=(StressScenario("crash", {syms[0]: -0.5}, -0.3), StressScenario("pump", {}, 0.4)),
        max_gross_leverage=3.0, caps_usd={inst.book.contract_symbols[0]: 0.5 * V},
        default_cap_usd=2.0 * V, clusters=(ClusterBand("majors", (syms[0], syms[1]), 0.05),),
        vol_cap=2.0 if conic else None, funding_budget_usd=0.01 * V,
        trade_limit_adv=0.5, trade_limit_usd=V)
    costs = CostSettings(trading=True, impact=conic, carry=True)
    book = replace(inst.book, cash=max(inst.book.cash, 0.3 * V))  # collateral for every step
    return replace(inst, book=book,
                   settings=OptimizerSettings(costs=costs, constraints=cons, basis_risk=True))


def _drift(inst: Instance, rng: np.random.Generator) -> Instance:
    """Same instruments; new prices, funding, spreads, targets and spot holdings."""
    m = inst.market
    shock = {a: float(np.exp(rng.normal(0, 0.15))) for a in m.spot}
    under = {c.symbol: c.underlying for c in inst.book.contracts}
    market = MarketSnapshot(
        time=m.time + np.timedelta64(1, "D"),
        spot={a: p * shock[a] for a, p in m.spot.items()},
        mark={c: p * shock[under[c]] * float(1 + rng.normal(0, 1e-3)) for c, p in m.mark.items()},
        funding={c: float(rng.normal(1e-4, 3e-4)) for c in m.funding},
        half_spread={c: float(rng.uniform(0, 4e-4)) for c in m.half_spread},
        adv={c: a * float(np.exp(rng.normal(0, 0.3))) for c, a in m.adv.items()})
    syms = inst.book.asset_symbols
    tw = rng.dirichlet(np.ones(len(syms))) * float(rng.uniform(0.7, 1.0))
    spot = {a: q * float(np.exp(rng.normal(0, 0.1))) for a, q in inst.book.spot.items()}
    book = replace(inst.book, targets={a: float(w) for a, w in zip(syms, tw, strict=True)}, spot=spot)
    return replace(inst, book=book, market=market)


def _base(seed: int, *, conic: bool) -> Instance:
    inst = random_instance(np.random.default_rng(seed), conic=conic)
    # at least two assets and one contract each way; rho_min off (it would make the structure
    # depend on which assets are held)
    return _everything_on(inst, conic=conic)


@pytest.mark.parametrize(("seed", "conic"), [(11, False), (12, False), (13, True), (14, True)])
def test_problem_is_dpp(seed: int, conic: bool) -> None:
    inst = _base(seed, conic=conic)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    hp = HedgeProblem(d.structure)
    assert hp.problem.is_dpp()
    assert hp.is_conic == conic
    # only Parameters carry data: no constant in the problem depends on the book's numbers
    assert len(hp.problem.parameters()) >= 15


def test_problem_is_dpp_with_factor_risk_model() -> None:
    inst = random_instance(np.random.default_rng(5), conic=False, factor_form=True)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    assert d.structure.idio
    assert HedgeProblem(d.structure).problem.is_dpp()


@pytest.mark.parametrize(("seed", "conic"), [(21, False), (22, True)])
def test_resolves_do_not_rebuild(seed: int, conic: bool) -> None:
    rng = np.random.default_rng(seed)
    inst = _base(seed, conic=conic)
    rb = Rebalancer()
    rb.solve(inst.book, inst.market, inst.risk, inst.settings)  # the one build
    builds = HedgeProblem.builds
    cur = inst
    for _ in range(5):
        cur = _drift(cur, rng)
        sol = rb.solve(cur.book, cur.market, cur.risk, cur.settings)
        # near-infeasible conic instances may end Clarabel "almost solved"; accuracy is checked below
        assert sol.status in ("optimal", "optimal_inaccurate", "infeasible")
        assert HedgeProblem.builds == builds, "a re-solve with new values rebuilt the problem"
        # the cached problem gives the answer a fresh problem and the reference give
        d = prepare(cur.book, cur.market, cur.risk, cur.settings)
        z_cached, _, s_cached, _ = rb.solve_z(d)
        assert HedgeProblem.builds == builds
        z_fresh, _, s_fresh, _ = Rebalancer().solve_z(d)
        builds += 1  # the fresh Rebalancer's own build
        assert (s_cached == "infeasible") == (s_fresh == "infeasible")
        if s_cached == "infeasible":
            continue
        np.testing.assert_allclose(z_cached, z_fresh, rtol=0, atol=1e-5)
        ref = solve_reference(cur)
        assert ref.x is not None, ref.status
        assert float(np.max(np.abs(z_cached * d.V - ref.x))) / d.V <= 1e-5


def _dense(a: Any) -> np.ndarray:
    if sp.issparse(a):
        return np.asarray(a.toarray())
    return np.asarray(a, dtype=float)


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_piqp_engine_data_equals_cvxpy_canonicalisation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    inst = _base(seed, conic=False)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    hp = HedgeProblem(d.structure)
    hp.update(d)
    eng = hp.engine(SolverName.PIQP)
    assert isinstance(eng, PiqpEngine), "the lean native PIQP path was not used"
    eng.solve()
    cur = inst
    for _ in range(3):
        cur = _drift(cur, rng)
        d = prepare(cur.book, cur.market, cur.risk, cur.settings)
        hp.update(d)
        P, q, _offset, A, b, G, h = eng.refresh()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="invalid value encountered in matmul",
                                    category=RuntimeWarning)
            data, _chain, _inverse = hp.problem.get_problem_data(cp.PIQP)
        for name, mine, theirs in (("P", P, data["P"]), ("q", q, data["q"]), ("A", A, data["A"]),
                                   ("b", b, data["b"]), ("G/F", G, data["F"]),
                                   ("h/g", h, data["G"])):
            m, t = _dense(mine), _dense(theirs)
            assert m.shape == t.shape, name
            np.testing.assert_allclose(m, t, rtol=1e-12, atol=1e-12, err_msg=name)
        # the engine's answer for these values is the one cvxpy's own PIQP path gives
        res = eng.solve()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="invalid value encountered in matmul",
                                    category=RuntimeWarning)
            hp.problem.solve(solver=cp.PIQP, eps_abs=1e-10, eps_rel=1e-10,
                             eps_duality_gap_abs=1e-10, eps_duality_gap_rel=1e-10)
        if res.status == "infeasible":
            assert hp.problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE)
            continue
        assert res.status == "optimal"
        assert res.z is not None
        np.testing.assert_allclose(res.z, hp.ctx.z.value, rtol=0, atol=1e-6)
        assert res.objective == pytest.approx(hp.problem.value, rel=1e-7, abs=1e-9)


def _bounds_case(solver: SolverName) -> tuple[float, float]:
    """One BTC perp whose only bracket has cum > 0 (MM = max(0.01 n - 50, 0)), margin off, a +50% BTC
    stress scenario and 100 USD of collateral: the stress constraint allows a short of at most
    200 USD (100 - 0.5 |x| >= 0 while 1.5 |x| < 5000). Returns (x, stress surplus) in USD."""
    tiers = MarginTiers((TierBracket(0.0, 1e12, 20.0, 0.01, 50.0),))
    btc = FuturesContract("BTC-PERP", "BTC", tiers=tiers, lot_step=1e-8, min_notional=0.0)
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), (btc,), spot={"BTC": 0.1, "ETH": 1.6},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=100.0)
    market = MarketSnapshot(pd.Timestamp("2025-01-01", tz="UTC"),
                            spot={"BTC": 60000.0, "ETH": 2500.0}, mark={"BTC-PERP": 60000.0})
    risk = RiskModel.from_covariance(["BTC", "ETH"], np.array([[0.3, 0.1], [0.1, 0.5]]))
    st = OptimizerSettings(costs=CostSettings(trading=False, carry=False),
                           constraints=ConstraintSettings(
                               margin=False, stress=(StressScenario("pump", {"BTC": 0.5}),)),
                           basis_risk=False, solvers=(solver,), round_lots=False)
    sol = Rebalancer().solve(book, market, risk, st)
    assert sol.solver == solver.value
    return sol.target_positions[0].notional, sol.margin.stress[0].surplus


def test_stress_bound_case_clarabel() -> None:
    x, surplus = _bounds_case(SolverName.CLARABEL)
    assert x == pytest.approx(-200.0, abs=1e-3)
    assert surplus >= -1e-3


def test_stress_bound_case_piqp() -> None:
    x, surplus = _bounds_case(SolverName.PIQP)
    assert x == pytest.approx(-200.0, abs=1e-3)
    assert surplus >= -1e-3

