"""The quadratic cost-to-go term kappa (e - w*)' Q_p (e - w*), Q_p = Sigma^p tr(Sigma) / tr(Sigma^p)
(``costs.cost_to_go`` / ``costs.cost_to_go_power``; optimizer.terms.CostToGo,
optimizer.cost_to_go.power_shape).

References are independent of fbr's term: matrix powers by scipy (fractional_matrix_power,
sqrtm) or by hand on a 3 x 3, the objective written in plain cvxpy with constants from
``optcases.ref_data`` (the book's own numbers), and the p = 1 identity (1 + kappa) TE^2 +
gamma c'|t| ~ TE^2 + gamma / (1 + kappa) c'|t|. All seeded.
"""

from __future__ import annotations

import copy
import math
import tomllib
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sla
from optcases import (
    CLARABEL_TIGHT,
    Instance,
    random_instance,
    ref_data,
    reference_problem,
    solve_clarabel,
)

from fbr.config import parse_book
from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.cost_to_go import power_shape, power_shape_root
from optimizer.data import ProblemData
from optimizer.planner import PlannerProblem
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer
from optimizer.settings import (
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    SpotLegSettings,
)
from optimizer.spot_leg import SpotContext, make_context
from optimizer.terms import CostToGo, terms_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POSITION_TOL = 1e-6  # of V


def _spd(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random symmetric positive definite matrix with spread-out eigenvalues."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return np.asarray((q * np.exp(rng.uniform(np.log(1e-3), np.log(2.0), n))) @ q.T)


def _q_ref(sigma: np.ndarray, p: float) -> np.ndarray:
    """Q_p by scipy's fractional matrix power (Schur-Pade, not an eigendecomposition)."""
    sp_ = np.real(sla.fractional_matrix_power(sigma, p))
    return np.asarray(sp_ * np.trace(sigma) / np.trace(sp_))


# ------------------------------------------------------------------------------------------------
# 1. power_shape
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_power_shape_ends_and_trace(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 8))
    sigma = _spd(rng, n)
    np.testing.assert_allclose(power_shape(sigma, 1.0), sigma, rtol=0, atol=1e-12)
    np.testing.assert_allclose(power_shape(sigma, 0.0), np.trace(sigma) / n * np.eye(n),
                               rtol=0, atol=1e-12)
    for p in rng.uniform(0, 1, 4):
        q = power_shape(sigma, float(p))
        assert np.trace(q) == pytest.approx(np.trace(sigma), rel=1e-12)
        np.testing.assert_allclose(q, q.T, rtol=0, atol=1e-14)
        np.testing.assert_allclose(q, _q_ref(sigma, float(p)), rtol=0, atol=1e-9)
        root = power_shape_root(sigma, float(p), kappa=2.5)
        np.testing.assert_allclose(root @ root, 2.5 * q, rtol=0, atol=1e-12)


def test_power_shape_half_by_hand_on_3x3() -> None:
    sigma = np.array([[0.64, 0.48, 0.10], [0.48, 0.49, 0.05], [0.10, 0.05, 0.09]])
    lam, vec = np.linalg.eigh(sigma)
    half = vec @ np.diag(np.sqrt(lam)) @ vec.T  # Sigma^{1/2}
    np.testing.assert_allclose(half @ half, sigma, atol=1e-14)
    c = np.trace(sigma) / np.trace(half)
    q = power_shape(sigma, 0.5)
    np.testing.assert_allclose(q, c * half, atol=1e-14)
    # Q_{1/2}^2 = c^2 Sigma, c = tr(Sigma) / tr(Sigma^{1/2}), with tr(Sigma^{1/2}) from scipy's sqrtm
    c_ref = np.trace(sigma) / np.trace(np.real(sla.sqrtm(sigma)))
    np.testing.assert_allclose(q @ q, c_ref**2 * sigma, atol=1e-12)
    assert np.trace(q) == pytest.approx(np.trace(sigma), rel=1e-14)


def test_power_shape_clips_negative_eigenvalues() -> None:
    vec, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((3, 3)))
    sigma = (vec * np.array([-1e-3, 0.2, 0.5])) @ vec.T
    clipped = (vec * np.array([0.0, 0.2, 0.5])) @ vec.T
    np.testing.assert_allclose(power_shape(sigma, 1.0), clipped, atol=1e-14)
    q = power_shape(sigma, 0.5)
    assert np.linalg.eigvalsh(q).min() > -1e-14
    assert np.trace(q) == pytest.approx(0.7, rel=1e-12)  # the clipped Sigma's trace


# ------------------------------------------------------------------------------------------------
# Instances
# ------------------------------------------------------------------------------------------------


def _with_costs(inst: Instance, **costs: Any) -> Instance:
    return replace(inst, settings=replace(inst.settings,
                                          costs=replace(inst.settings.costs, **costs)))


def _one_contract_books(count: int, start: int) -> list[Instance]:
    """Seeded random books with 2-6 assets and at most one contract per asset (z is then unique
    without basis risk: B has full column rank and Sigma is positive definite), with trading cost
    on and margin, stress, basis risk, carry and impact off."""
    out: list[Instance] = []
    seed = start
    while len(out) < count:
        inst = random_instance(np.random.default_rng(seed), conic=False, max_assets=6)
        seed += 1
        under = [c.underlying for c in inst.book.contracts]
        if len(set(under)) != len(under):
            continue
        settings = OptimizerSettings(
            costs=CostSettings(trading=True, impact=False, carry=False,
                               gamma_trade=float(np.random.default_rng(seed).uniform(0.5, 30.0))),
            constraints=ConstraintSettings(margin=False), basis_risk=False, round_lots=False)
        out.append(replace(inst, settings=settings))
    return out


def _solve(inst: Instance) -> tuple[np.ndarray, ProblemData]:
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    z, _hp, status, _ = Rebalancer().solve_z(d)
    assert status != "infeasible", status
    return np.asarray(z), d


def _sigma(inst: Instance) -> np.ndarray:
    sigma: np.ndarray = ref_data(inst).Sigma  # optcases is loaded untyped
    return sigma


# ------------------------------------------------------------------------------------------------
# 2. value, kappa = 0 and the p = 1 identity
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_value_matches_numpy_formula(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    inst = random_instance(rng, conic=False, max_assets=8)
    kappa, p = float(rng.uniform(0.1, 5.0)), float(rng.uniform(0.0, 1.0))
    inst = _with_costs(inst, cost_to_go=kappa, cost_to_go_power=p)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    assert d.structure.cost_to_go
    assert [t.name for t in terms_for(d.structure)].count("cost_to_go") == 1
    r = ref_data(inst)
    q = _q_ref(r.Sigma, p)
    term = CostToGo()
    for _ in range(5):
        z = rng.normal(0, 0.3, len(d.contracts))
        dev = r.s + r.B @ z - r.w
        assert term.value(z, d) == pytest.approx(kappa * dev @ q @ dev, rel=1e-9, abs=1e-15)
    # the cvxpy expression at z agrees with value (the Parameters set by update)
    ctx = make_context(d.structure)
    expr = term.build(ctx)
    ctx.set_common(d)
    term.update(d)
    ctx.z.value = z
    assert float(expr.value) == pytest.approx(term.value(z, d), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("inst", _one_contract_books(3, 200), ids=lambda i: "book")
def test_kappa_zero_is_no_term(inst: Instance) -> None:
    z_off, _ = _solve(inst)
    z_zero, d_zero = _solve(_with_costs(inst, cost_to_go=0.0, cost_to_go_power=0.3))
    assert not d_zero.structure.cost_to_go and d_zero.cost_to_go_root is None
    assert "cost_to_go" not in [t.name for t in terms_for(d_zero.structure)]
    assert float(np.max(np.abs(z_off - z_zero))) <= 1e-9


@pytest.mark.parametrize("inst", _one_contract_books(6, 300), ids=lambda i: "book")
def test_power_one_is_gamma_over_one_plus_kappa(inst: Instance) -> None:
    g = inst.settings.costs.gamma_trade
    for kappa in (0.5, 3.0):
        z_term, _ = _solve(_with_costs(inst, cost_to_go=kappa, cost_to_go_power=1.0))
        z_scaled, _ = _solve(_with_costs(inst, gamma_trade=g / (1.0 + kappa)))
        err = float(np.max(np.abs(z_term - z_scaled)))  # weight units: a fraction of V
        assert err <= POSITION_TOL, f"kappa {kappa}: positions differ by {err:.3g} of V"


# ------------------------------------------------------------------------------------------------
# 3. A plain-cvxpy reference on random books (trading cost and margin on)
# ------------------------------------------------------------------------------------------------


def _reference_books() -> list[tuple[int, Instance]]:
    """20 seeded random 3- to 6-asset QP books with trading cost and margin on and a random
    kappa in [0.1, 5] and p in [0, 1]."""
    out: list[tuple[int, Instance]] = []
    seed = 500
    while len(out) < 20:
        rng = np.random.default_rng(seed)
        inst = random_instance(rng, conic=False, max_assets=6)
        if len(inst.book.asset_symbols) >= 3:
            st = inst.settings
            inst = replace(inst, settings=replace(
                st, constraints=replace(st.constraints, margin=True),
                costs=replace(st.costs, trading=True, cost_to_go=float(rng.uniform(0.1, 5.0)),
                              cost_to_go_power=float(rng.uniform(0.0, 1.0)))))
            out.append((seed, inst))
        seed += 1
    return out


def _reference_with_term(inst: Instance) -> tuple[str, np.ndarray | None]:
    """optcases' reference problem (TE^2 + basis risk + gamma_trade lin'|t| + carry, every
    constraint) plus kappa (e - w)' Q_p (e - w), Q_p from scipy; positions x (USD)."""
    r = ref_data(inst)
    prob, z, _kinds = reference_problem(inst, r)
    cc = inst.settings.costs
    root = np.real(sla.sqrtm(_q_ref(r.Sigma, cc.cost_to_go_power)))
    dev = r.s + r.B @ z - r.w
    extra = 1e3 * cc.cost_to_go * cp.sum_squares(root @ dev)  # the reference objective is 1e3 x
    full = cp.Problem(cp.Minimize(prob.objective.expr + extra), prob.constraints)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        solve_clarabel(full, **CLARABEL_TIGHT)
    if full.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and z.value is not None:
        return full.status, np.asarray(z.value) * r.V
    return full.status, None


@pytest.mark.parametrize(("seed", "inst"), _reference_books(), ids=lambda x: str(x)
                         if isinstance(x, int) else "")
def test_matches_plain_cvxpy_reference(seed: int, inst: Instance) -> None:
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    assert d.structure.cost_to_go and d.structure.trading and d.structure.margin
    z, _hp, status, _ = Rebalancer().solve_z(d)
    ref_status, x_ref = _reference_with_term(inst)
    if ref_status.startswith("infeasible"):
        assert status == "infeasible"
        return
    assert x_ref is not None, ref_status
    err = float(np.max(np.abs(np.asarray(z) * d.V - x_ref))) / d.V
    assert err <= POSITION_TOL, f"seed {seed}: positions differ by {err:.3g} of V ({status})"


# ------------------------------------------------------------------------------------------------
# 4. DPP: new kappa and p are Parameter values, not a rebuild
# ------------------------------------------------------------------------------------------------


def test_changing_kappa_and_power_does_not_recompile() -> None:
    inst = _one_contract_books(1, 700)[0]
    rb = Rebalancer()
    first = _with_costs(inst, cost_to_go=1.0, cost_to_go_power=0.5)
    d1 = prepare(first.book, first.market, first.risk, first.settings)
    z1, hp, _, _ = rb.solve_z(d1)
    assert hp.problem.is_dpp()
    builds = HedgeProblem.builds
    for kappa, p in ((4.0, 0.5), (4.0, 0.0), (0.2, 1.0), (2.0, 0.25)):
        nxt = _with_costs(inst, cost_to_go=kappa, cost_to_go_power=p)
        d = prepare(nxt.book, nxt.market, nxt.risk, nxt.settings)
        assert d.structure == d1.structure
        z, hp2, _, _ = rb.solve_z(d)
        assert hp2 is hp and HedgeProblem.builds == builds
        # the re-solve is the freshly compiled problem's answer
        fresh = HedgeProblem(d.structure)
        fresh.update(d)
        res = fresh.solve().result
        assert res.z is not None
        assert float(np.max(np.abs(np.asarray(z) - res.z))) <= 1e-8
        builds = HedgeProblem.builds
    assert float(np.max(np.abs(np.asarray(z) - np.asarray(z1)))) > 1e-6  # kappa and p mattered


# ------------------------------------------------------------------------------------------------
# 5. The planner
# ------------------------------------------------------------------------------------------------


def _planner_reference(inst: Instance, horizon: int) -> np.ndarray:
    """The H-step plan in plain cvxpy (no margin, carry or basis risk; trading cost on): every step
    pays TE^2(z_h) + kappa Q_p(z_h) + gamma lin'|z_h - z_{h-1}|, z_0 today's; positions (H x M)."""
    r = ref_data(inst)
    cc = inst.settings.costs
    L = np.linalg.cholesky(r.Sigma)
    root = np.real(sla.sqrtm(_q_ref(r.Sigma, cc.cost_to_go_power)))
    M = r.B.shape[1]
    zs = [cp.Variable(M) for _ in range(horizon)]
    prev: Any = r.x0 / r.V
    obj: Any = 0.0
    for z in zs:
        dev = r.s + r.B @ z - r.w
        obj = obj + cp.sum_squares(L.T @ dev) + cc.cost_to_go * cp.sum_squares(root @ dev) \
            + cc.gamma_trade * (r.lin @ cp.abs(z - prev))
        prev = z
    prob = cp.Problem(cp.Minimize(1e3 * obj))
    prob.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    assert prob.status == cp.OPTIMAL, prob.status
    return np.vstack([np.asarray(z.value) for z in zs])


@pytest.mark.parametrize("inst", _one_contract_books(3, 800), ids=lambda i: "book")
def test_planner_with_the_term(inst: Instance) -> None:
    inst = _with_costs(inst, cost_to_go=1.5, cost_to_go_power=0.4)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    # H = 1: the single-period problem with the term
    hp = HedgeProblem(d.structure)
    hp.update(d)
    single = hp.solve().result
    one = PlannerProblem(d.structure, 1)
    one.update(d)
    planned = one.solve().result
    assert single.z is not None and planned.z is not None
    assert float(np.max(np.abs(planned.z - single.z))) <= 1e-8
    # H = 3: every step carries its own term; the plan is the plain-cvxpy plan's
    pp = PlannerProblem(d.structure, 3)
    assert all(any(isinstance(t, CostToGo) for t in s.terms) for s in pp.steps)
    pp.update(d)
    res = pp.solve().result
    assert res.status == "optimal"
    plan = pp.plan_z(res)
    ref = _planner_reference(inst, 3)
    assert float(np.max(np.abs(plan - ref))) <= POSITION_TOL
    # ... and through the rebalancer (settings.horizon = 3)
    sol = Rebalancer().solve(inst.book, inst.market, inst.risk,
                             replace(inst.settings, horizon=3))
    assert sol.plan is not None and sol.plan.horizon == 3


# ------------------------------------------------------------------------------------------------
# 6. Bad settings
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("cost_to_go", -0.1), ("cost_to_go", math.nan), ("cost_to_go", math.inf),
    ("cost_to_go_power", 1.5), ("cost_to_go_power", -0.2), ("cost_to_go_power", math.nan),
])
def test_bad_settings_are_refused_by_prepare(key: str, value: float) -> None:
    inst = _one_contract_books(1, 900)[0]
    bad = _with_costs(inst, **{"cost_to_go": 1.0, key: value})
    with pytest.raises(ValidationError) as err:
        prepare(bad.book, bad.market, bad.risk, bad.settings)
    assert err.value.field == f"costs.{key}"


def _seed_doc() -> dict[str, Any]:
    with open(EXAMPLES / "seed_example_1.toml", "rb") as fh:
        return tomllib.load(fh)


def _costs(**extra: Any) -> CostSettings:
    doc = copy.deepcopy(_seed_doc())
    doc.setdefault("costs", {}).update(extra)
    return parse_book(doc).settings.costs


def test_book_file_keys() -> None:
    cs = _costs()
    assert (cs.cost_to_go, cs.cost_to_go_power) == (0.0, 0.5)
    cs = _costs(cost_to_go=2, cost_to_go_power=0.25)
    assert (cs.cost_to_go, cs.cost_to_go_power) == (2.0, 0.25)
    assert _costs(cost_to_go=1, cost_to_go_power=1).cost_to_go_power == 1.0
    # a power without kappa would be ignored: refused (fbr/config_settings._cost_to_go)
    with pytest.raises(ValidationError) as err:
        _costs(cost_to_go_power=1)
    assert err.value.field == "costs.cost_to_go_power"


@pytest.mark.parametrize(("key", "value"), [
    ("cost_to_go", -1.0), ("cost_to_go", math.nan), ("cost_to_go", "a lot"),
    ("cost_to_go_power", 1.5), ("cost_to_go_power", -0.5), ("cost_to_go_power", math.nan),
])
def test_bad_book_file_keys(key: str, value: Any) -> None:
    with pytest.raises(ValidationError) as err:
        _costs(**{key: value})
    assert err.value.field == f"costs.{key}"


# ------------------------------------------------------------------------------------------------
# The spot leg: the term prices e = s + b - q + B z
# ------------------------------------------------------------------------------------------------


def test_spot_leg_deviation_is_priced() -> None:
    assets = (SpotAsset("BTC", fee=0.001), SpotAsset("ETH", fee=0.001))
    contracts = (FuturesContract("BTC-PERP", "BTC", taker_fee=4e-4),
                 FuturesContract("ETH-PERP", "ETH", taker_fee=4e-4))
    book = Book(assets=assets, contracts=contracts, spot={"BTC": 2.0, "ETH": 20.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=100_000.0)
    market = MarketSnapshot(time=pd.Timestamp("2025-01-01", tz="UTC"),
                            spot={"BTC": 50_000.0, "ETH": 2_500.0},
                            mark={"BTC-PERP": 50_000.0, "ETH-PERP": 2_500.0},
                            half_spread={"BTC-PERP": 1e-4, "ETH-PERP": 1e-4},
                            spot_half_spread={"BTC": 1e-4, "ETH": 1e-4})
    sigma = np.array([[0.36, 0.25], [0.25, 0.49]])
    risk = RiskModel.from_covariance(["BTC", "ETH"], sigma)
    settings = OptimizerSettings(
        costs=CostSettings(cost_to_go=2.0, cost_to_go_power=0.5, carry=False),
        constraints=ConstraintSettings(caps_usd={"BTC-PERP": 1_000.0}),
        spot=SpotLegSettings(enabled=True), round_lots=False)
    d = prepare(book, market, risk, settings)
    assert d.structure.spot_leg and d.structure.cost_to_go
    hp = HedgeProblem(d.structure)
    assert hp.problem.is_dpp()
    hp.update(d)
    res = hp.solve().result
    assert res.status == "optimal" and res.z is not None
    buy, sell = hp.spot_solution(res)
    # the term's expression on a spot context, at the optimum (z, b, q), is kappa dev' Q_p dev
    term = CostToGo()
    ctx = make_context(d.structure)
    assert isinstance(ctx, SpotContext)
    expr = term.build(ctx)
    ctx.set_common(d)
    term.update(d)
    ctx.z.value, ctx.buy.value, ctx.sell.value = res.z, buy, sell
    # the invested base (the spot value) moves with the net spot trade: targets w* (1 + 1'(b - q))
    dev = d.s + buy - sell + d.B @ res.z - d.w * (1.0 + float(np.sum(buy - sell)))
    assert float(np.max(np.abs(buy - sell))) > 1e-3  # the spot leg traded
    assert float(expr.value) == pytest.approx(2.0 * dev @ _q_ref(sigma, 0.5) @ dev,
                                              rel=1e-9, abs=1e-15)
