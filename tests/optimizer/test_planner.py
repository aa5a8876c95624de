"""The multi-period planner (optimizer.planner): H = 1 is the single-period problem, a constant
market trades once, a hand-solved two-step impact case, DPP without rebuilds, and the plan's
bookkeeping. All seeded; references are independent of fbr's planner (the single-period problem
checked against optcases' reference formulation, scipy on the hand-built case)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from impact_reference import ImpactCase, two_step_reference
from optcases import CLARABEL_TIGHT_CONIC, Instance, random_instance, solve_reference

from fbr.config import load_book_file
from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.constraints import TradeLimit
from optimizer.data import ProblemData
from optimizer.planner import PlannerProblem, plan_of, planner_horizon, step_data
from optimizer.policies import OptimizedFutures
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer
from optimizer.settings import (
    ConstraintSettings,
    CostSettings,
    FundingForecastRule,
    OptimizerSettings,
    SolverName,
    SpotLegSettings,
    StressScenario,
)
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

T0 = pd.Timestamp("2025-01-01", tz="UTC")


# ------------------------------------------------------------------------------------------------
# 1. H = 1 is the single-period problem
# ------------------------------------------------------------------------------------------------


def _costs_and_margin_on(inst: Instance, *, conic: bool) -> Instance:
    """Margin, a stress scenario, trading, carry and (conic) impact on."""
    syms = inst.book.asset_symbols
    V = float(sum(inst.book.spot.get(a, 0.0) * inst.market.spot[a] for a in syms))
    cons = ConstraintSettings(margin=True, margin_buffer_usd=0.01 * V,
                              stress=(StressScenario("crash", {syms[0]: -0.5}, -0.3),))
    costs = CostSettings(trading=True, impact=conic, carry=True, horizon_days=3.0)
    book = replace(inst.book, cash=max(inst.book.cash, 0.3 * V))
    return replace(inst, book=book, settings=OptimizerSettings(costs=costs, constraints=cons,
                                                               basis_risk=True))


@pytest.mark.parametrize(("seed", "conic"), [(31, False), (32, False), (33, True), (34, True),
                                             (35, False)])
def test_one_step_plan_is_the_single_period_problem(seed: int, conic: bool) -> None:
    inst = _costs_and_margin_on(random_instance(np.random.default_rng(seed), conic=conic),
                                conic=conic)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    assert d.structure.margin and d.structure.trading and d.structure.carry
    assert d.structure.impact == conic
    hp = HedgeProblem(d.structure)
    hp.update(d)
    single = hp.solve().result
    pp = PlannerProblem(d.structure, 1)
    pp.update(d)
    planned = pp.solve().result
    assert planned.status == single.status == "optimal"
    assert planned.z is not None and single.z is not None
    assert float(np.max(np.abs(planned.z - single.z))) <= 1e-6
    # and both are the independent reference formulation's optimum (DESIGN.md, optcases)
    ref = solve_reference(inst)
    assert ref.x is not None, ref.status
    assert float(np.max(np.abs(planned.z * d.V - ref.x))) / d.V <= 1e-5
    np.testing.assert_allclose(pp.plan_z(planned), planned.z[None, :], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# 2. a constant market: trade at the first step, never again
# ------------------------------------------------------------------------------------------------


def _two_asset_book() -> tuple[Book, RiskModel]:
    perps = tuple(FuturesContract(f"{a}-PERP", a, lot_step=1e-6, min_notional=0.0)
                  for a in ("BTC", "ETH"))
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), perps, spot={"BTC": 10.0, "ETH": 50.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=100_000.0)
    vol = np.array([0.55, 0.70])
    corr = np.array([[1.0, 0.7], [0.7, 1.0]])
    return book, RiskModel.from_covariance(("BTC", "ETH"), np.outer(vol, vol) * corr)


def test_constant_prices_trade_once_then_hold() -> None:
    book, risk = _two_asset_book()
    idx = pd.date_range(T0, periods=6, freq="D")
    spot = pd.DataFrame({"BTC": 60_000.0, "ETH": 3_000.0}, index=idx)  # 600k / 150k: off target
    path = MarketPath(spot=spot, half_spread=pd.Series({"BTC-PERP": 1e-4, "ETH-PERP": 1e-4}))
    settings = OptimizerSettings(costs=CostSettings(trading=True, carry=True, horizon_days=1.0),
                                 basis_risk=False, horizon=3)
    policy = OptimizedFutures(risk, settings)
    res = run_backtest(book, path, policy, collateral=NO_SWEEPS)
    assert not res.trades.empty
    assert set(pd.to_datetime(res.trades["time"])) == {idx[0]}, res.trades
    fut = res.futures_notional[["BTC-PERP", "ETH-PERP"]]
    assert float(fut.iloc[0].abs().sum()) > 1e4  # it hedged at the first step ...
    assert float((fut - fut.iloc[0]).abs().to_numpy().max()) == 0.0  # ... and held after
    assert PlannerProblem.builds >= 1
    assert len(policy.rebalancer._planners) == 1


# ------------------------------------------------------------------------------------------------
# 3. a hand-built two-step case under the 3/2-power impact cost
# ------------------------------------------------------------------------------------------------

SIGMA = 0.8  # annual vol of the one asset
ADV = 1e7  # USD/day of its perpetual
K = 4.0  # impact coefficient
GAP = 0.1  # the asset is 10 pp over target: the hedge is a short of 0.1 V
V0 = 1e6


def _impact_inputs(horizon: int) -> tuple[Book, MarketSnapshot, RiskModel, OptimizerSettings]:
    """One asset 10 pp over target on a 1e6 USD book, one perpetual with no fee or spread and
    ADV 1e7 USD, the 3/2-power impact cost only (no margin, carry or basis risk)."""
    perp = FuturesContract("BTC-PERP", "BTC", taker_fee=0.0, lot_step=1e-9, min_notional=0.0)
    book = Book((SpotAsset("BTC"),), (perp,), spot={"BTC": V0 / 50_000.0},
                targets={"BTC": 1.0 - GAP}, cash=0.0)
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0}, mark={"BTC-PERP": 50_000.0},
                            half_spread={"BTC-PERP": 0.0}, adv={"BTC-PERP": ADV})
    risk = RiskModel.from_covariance(("BTC",), np.array([[SIGMA**2]]))
    costs = CostSettings(trading=False, impact=True, impact_k=K, carry=False)
    settings = OptimizerSettings(costs=costs, constraints=ConstraintSettings(margin=False),
                                 basis_risk=False, horizon=horizon, round_lots=False)
    return book, market, risk, settings


def _impact_case(horizon: int) -> ProblemData:
    return prepare(*_impact_inputs(horizon))


def _hand_reference() -> tuple[np.ndarray, float]:
    """((y1, y2), y_single) of this case (tests/optimizer/impact_reference.py)."""
    ref: tuple[np.ndarray, float] = two_step_reference(ImpactCase(SIGMA, K, GAP, V0, ADV))
    return ref


def test_two_step_impact_plan_matches_the_hand_solution() -> None:
    (y1, y2), y_single = _hand_reference()
    # the plan spreads the hedge over both steps (y1 about 0.087, y2 about 0.095 of the 0.1 gap);
    # trading now also cuts step 2's tracking error, so it trades more now than the single-period
    # optimum (about 0.082)
    assert 0 < y1 < y2 < GAP and y1 > y_single
    d = _impact_case(2)
    assert math.isclose(d.V, V0, rel_tol=1e-12)
    # the compiled plan, solved tightly, is the hand solution to the cent (both steps)
    pp = PlannerProblem(d.structure, 2)
    pp.update(d)
    pp.problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT_CONIC)
    assert pp.problem.status == cp.OPTIMAL
    planned = [float(np.asarray(s.ctx.z.value)[0]) * d.V for s in pp.steps]
    assert planned[0] == pytest.approx(-y1 * V0, abs=0.01)
    assert planned[1] == pytest.approx(-y2 * V0, abs=0.01)
    # fbr's own path (Rebalancer -> lean Clarabel engine at fbr's tolerances, 1e-9): to 0.10 USD
    # (the single-period problem's own accuracy there is a few cents too)
    rb = Rebalancer()
    dec = rb.decide(*_impact_inputs(2))
    assert isinstance(dec.problem, PlannerProblem) and dec.problem.is_conic
    assert dec.status == "optimal" and dec.solver == "CLARABEL"
    x1 = float(dec.z_unrounded[0]) * d.V
    assert x1 == pytest.approx(-y1 * V0, abs=0.10)
    assert dec.plan is not None and dec.plan.horizon == 2
    step1, step2 = dec.plan.steps
    assert step1.trades["BTC-PERP"] == pytest.approx(-y1 * V0, abs=0.10)
    assert step2.positions["BTC-PERP"] == pytest.approx(-y2 * V0, abs=0.10)
    assert abs(step1.trades["BTC-PERP"]) < GAP * V0 - 10_000.0  # it spreads the trade
    # the single-period problem trades differently now (about 4,900 USD less)
    single = rb.decide(*_impact_inputs(1))
    assert single.plan is None and not isinstance(single.problem, PlannerProblem)
    x_single = float(single.z_unrounded[0]) * d.V
    assert x_single == pytest.approx(-y_single * V0, abs=0.10)
    assert abs(x_single - x1) > 4_000.0


# ------------------------------------------------------------------------------------------------
# 4. DPP, compiled once, re-solved by Parameter values
# ------------------------------------------------------------------------------------------------


def _qp_instance(seed: int) -> Instance:
    inst = _costs_and_margin_on(random_instance(np.random.default_rng(seed), conic=False),
                                conic=False)
    return replace(inst, settings=replace(inst.settings, horizon=4, solvers=(SolverName.PIQP,)))


def _moved(d: ProblemData, rng: np.random.Generator) -> ProblemData:
    """Same structure, new spot weights and carry."""
    s = d.s * np.exp(rng.normal(0.0, 0.1, d.s.size))
    carry = d.carry + rng.normal(0.0, 3e-4, d.carry.size)
    return replace(d, s=s, carry=carry)


@pytest.mark.parametrize("seed", [41, 42])
def test_planner_is_dpp_and_resolves_without_rebuild(seed: int) -> None:
    rng = np.random.default_rng(seed)
    inst = _qp_instance(seed)
    d0 = prepare(inst.book, inst.market, inst.risk, inst.settings)
    rb = Rebalancer()
    z0, hp, solver, _ = rb.solve_z(d0)
    assert isinstance(hp, PlannerProblem) and hp.horizon == 4 and solver == "PIQP"
    assert hp.problem.is_dpp()
    builds, single_builds = PlannerProblem.builds, HedgeProblem.builds
    for _ in range(2):
        d = _moved(d0, rng)
        z, hp2, _, _ = rb.solve_z(d)
        assert hp2 is hp
        assert PlannerProblem.builds == builds and HedgeProblem.builds == single_builds
        fresh = PlannerProblem(d.structure, 4)
        builds += 1
        fresh.update(d)
        out = fresh.solve((SolverName.PIQP,)).result
        assert out.z is not None
        np.testing.assert_allclose(z, out.z, rtol=0, atol=1e-8)
    assert not np.allclose(z0, z)


def test_per_step_carry_is_set_per_step_without_rebuild() -> None:
    rng = np.random.default_rng(43)
    inst = _qp_instance(43)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    pp = PlannerProblem(d.structure, 4)
    pp.update(d)
    pp.solve((SolverName.PIQP,))
    builds = PlannerProblem.builds
    carry = d.carry[None, :] + rng.normal(0.0, 5e-4, (4, d.carry.size))
    pp.update(d, carry)
    cached = pp.solve((SolverName.PIQP,)).result
    assert PlannerProblem.builds == builds
    fresh = PlannerProblem(d.structure, 4)
    fresh.update_steps([replace(d, carry=row) for row in carry])
    ref = fresh.solve((SolverName.PIQP,)).result
    assert cached.z is not None and ref.z is not None
    np.testing.assert_allclose(cached.z, ref.z, rtol=0, atol=1e-8)
    np.testing.assert_allclose(pp.plan_z(cached), fresh.plan_z(ref), rtol=0, atol=1e-8)
    assert [s.carry is not d.carry for s in pp.step_inputs] == [True] * 4


# ------------------------------------------------------------------------------------------------
# 5. the plan's bookkeeping, the solution, and what is refused
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "conic"), [(51, False), (52, True)])
def test_plan_trades_add_up_to_the_last_position(seed: int, conic: bool) -> None:
    inst = _costs_and_margin_on(random_instance(np.random.default_rng(seed), conic=conic),
                                conic=conic)
    settings = replace(inst.settings, horizon=3,
                       constraints=replace(inst.settings.constraints, trade_limit_usd=2e4))
    sol = Rebalancer().solve(inst.book, inst.market, inst.risk, settings)
    assert sol.status == "optimal" and sol.plan is not None and sol.plan.horizon == 3
    x0 = dict(zip(inst.book.contract_symbols,
                  inst.book.futures_exposure(inst.market).tolist(), strict=True))
    total = sol.plan.total_trades()
    last = sol.plan.steps[-1].positions
    for sym in inst.book.contract_symbols:
        assert total[sym] == pytest.approx(last[sym] - x0[sym], abs=1e-6)
        for st in sol.plan.steps:  # each step's trade within the trade limit
            assert abs(st.trades[sym]) <= 2e4 * (1 + 1e-6) + 1e-6
    # step 1's planned positions are the solution's before lot rounding
    first = sol.plan.steps[0].positions
    for p in sol.target_positions:
        assert first[p.symbol] == pytest.approx(p.notional, abs=1e-3 * max(sol.base, 1.0))
    out = sol.to_dict()
    assert out["plan"]["horizon"] == 3 and len(out["plan"]["steps"]) == 3
    single = Rebalancer().solve(inst.book, inst.market, inst.risk, inst.settings)
    assert single.plan is None and "plan" not in single.to_dict()


def test_plan_of_is_in_usd() -> None:
    d = _impact_case(2)
    plan = plan_of(np.array([[-0.04], [-0.07]]), d)
    assert plan.step_days == d.settings.costs.horizon_days
    assert plan.steps[0].trades["BTC-PERP"] == pytest.approx(-0.04 * d.V)
    assert plan.steps[1].trades["BTC-PERP"] == pytest.approx(-0.03 * d.V)


@pytest.mark.parametrize("bad", [0, -2, True, 1.5])
def test_bad_horizon_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError, match="horizon"):
        planner_horizon(OptimizerSettings(horizon=bad))  # type: ignore[arg-type]


def _spot_leg_case(horizon: int, gamma_trade: float
                   ) -> tuple[Book, MarketSnapshot, RiskModel, OptimizerSettings]:
    """The two-asset book 15 pp off target, spot leg on; the futures are cheaper than spot but
    capped at 60,000 USD each, so the optimum trades both; proportional costs only, no carry."""
    book, risk = _two_asset_book()
    market = MarketSnapshot(time=T0, spot={"BTC": 60_000.0, "ETH": 3_000.0},
                            mark={"BTC-PERP": 60_000.0, "ETH-PERP": 3_000.0},
                            half_spread={"BTC-PERP": 1e-4, "ETH-PERP": 1e-4})
    costs = CostSettings(trading=True, impact=False, carry=False, gamma_trade=gamma_trade)
    caps = ConstraintSettings(caps_usd={"BTC-PERP": 60_000.0, "ETH-PERP": 60_000.0})
    settings = OptimizerSettings(costs=costs, constraints=caps,
                                 spot=SpotLegSettings(enabled=True, cash_usd=1e5),
                                 horizon=horizon, basis_risk=False, round_lots=False)
    return book, market, risk, settings


def test_a_plan_with_the_spot_leg_trades_spot_now_and_carries_it() -> None:
    """With proportional costs and no drift the plan trades once and holds, so H = 2 at
    gamma_trade g is the single-period problem at g / 2 (both steps' TE against one trade's
    costs): the same futures and spot trades to 1e-6 of V; step 2 holds step 1's positions."""
    plan = Rebalancer().decide(*_spot_leg_case(2, 40.0))
    single = Rebalancer().decide(*_spot_leg_case(1, 20.0))
    assert isinstance(plan.problem, PlannerProblem) and plan.status == "optimal"
    assert plan.problem.problem.is_dpp()
    assert plan.spot is not None and single.spot is not None
    buy, sell = plan.spot
    assert float(np.max(np.abs(buy - sell))) > 1e-3, "the case should trade spot"
    assert float(np.max(np.abs(plan.z_unrounded))) > 1e-3, "... and futures"
    np.testing.assert_allclose(plan.z_unrounded, single.z_unrounded, atol=1e-6)
    # the invested base follows the net spot trade v = b - q, so the deviation sees (I - w* 1') v:
    # buying at the target weights (v along w*) moves nothing, and with equal spot fees the split
    # along w* is not unique; the part that moves the deviation and the spot cost are
    w = plan.data.w
    moved = np.eye(len(w)) - np.outer(w, np.ones(len(w)))
    np.testing.assert_allclose(moved @ (buy - sell), moved @ (single.spot[0] - single.spot[1]),
                               atol=1e-6)
    assert float(np.sum(buy + sell)) == pytest.approx(float(np.sum(single.spot[0] + single.spot[1])),
                                                      abs=1e-6)
    assert plan.plan is not None
    step1, step2 = plan.plan.steps
    for sym, x in step1.positions.items():
        assert step2.positions[sym] == pytest.approx(x, abs=1e-6 * plan.data.V)


def test_step_data_shares_todays_numbers() -> None:
    d = _impact_case(3)
    assert all(s is d for s in step_data(d, 3))
    with pytest.raises(ValueError, match="shape"):
        step_data(d, 3, np.zeros((2, 1)))


def test_book_file_solver_horizon() -> None:
    """[solver] horizon in a book file (fbr.config_settings) reaches OptimizerSettings.horizon."""
    from fbr.config_settings import parse_settings

    book, _ = _two_asset_book()
    assert parse_settings({"solver": {"horizon": 3}}, {}, book).horizon == 3
    assert parse_settings({}, {}, book).horizon == 1
    for bad in (0, 2.5, True):
        with pytest.raises(ValidationError, match=r"solver\.horizon"):
            parse_settings({"solver": {"horizon": bad}}, {}, book)
    both = parse_settings({"solver": {"horizon": 2, "spot_leg": True}}, {}, book)
    assert both.horizon == 2 and both.spot.enabled  # the plan trades spot at step 1


def test_carry_path_decays_the_ewma_forecast_to_its_long_run_level() -> None:
    """A perpetual whose EWMA forecast is 3 bp per 8 h settlement, long-run level 1 bp, reversion
    half-life 90 settlements, 1-day steps (3 settlements): step h's carry is
    3 x (1e-4 + 2e-4 x 2^(-3 (h - 1) / 90)) by hand; the dated-free book has no other contract."""
    perp = FuturesContract("BTC-PERP", "BTC", lot_step=1e-9, min_notional=0.0)
    book = Book((SpotAsset("BTC"),), (perp,), spot={"BTC": 10.0}, targets={"BTC": 0.9}, cash=1e5)
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0}, mark={"BTC-PERP": 50_000.0},
                            funding={"BTC-PERP": 5e-4}, funding_forecast={"BTC-PERP": 3e-4})
    risk = RiskModel.from_covariance(("BTC",), np.array([[0.36]]))
    costs = CostSettings(funding_forecast=FundingForecastRule.EWMA, funding_long_run_rate=1e-4,
                         funding_reversion_half_life=90.0, horizon_days=1.0)
    d = prepare(book, market, risk, OptimizerSettings(costs=costs, horizon=4))
    hand = [3 * (1e-4 + 2e-4 * 2 ** (-3 * h / 90)) for h in range(4)]
    assert d.carry[0] == pytest.approx(9e-4)
    assert d.carry_steps is not None
    np.testing.assert_allclose(d.carry_steps[:, 0], hand, rtol=1e-12)
    # the planner's steps are set from that path; any other rule keeps today's carry at every step
    pp = PlannerProblem(d.structure, 4)
    pp.update(d)
    np.testing.assert_allclose([s.carry[0] for s in pp.step_inputs], hand, rtol=1e-12)
    last = prepare(book, market, risk, OptimizerSettings(horizon=4))
    assert last.carry_steps is not None
    np.testing.assert_allclose(last.carry_steps[:, 0], last.carry[0], rtol=1e-12)
    assert prepare(book, market, risk, OptimizerSettings()).carry_steps is None


def test_a_plans_binding_row_is_explained_over_the_whole_plan() -> None:
    """Horizon 4 with a 300 USD trade limit: the step-1 trade limit's dual prices the plan's whole
    objective (four periods of risk and costs), and the explanation says so (it turned it into
    one period's tracking error). Loosening step 1's row alone by 1 USD in the compiled plan
    lowers the plan's objective, re-solved, by that dual to first order (convexity: at most it,
    and at least 75% of it)."""
    loaded = load_book_file(Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml")
    cs = replace(loaded.settings.constraints, margin=True, trade_limit_usd=300.0)
    cc = replace(loaded.settings.costs, trading=True, gamma_trade=20.0)
    st = replace(loaded.settings, constraints=cs, costs=cc, horizon=4)
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, st)
    (btc,) = [b for b in sol.binding_constraints if b.name == "trade_limit[BTC-PERP]"]
    assert "at step 1 of the 4-step plan" in btc.explanation and "per USD" in btc.explanation

    dec = Rebalancer().decide(loaded.book, loaded.market, loaded.risk, st)
    hp, d = dec.problem, dec.data
    assert isinstance(hp, PlannerProblem)
    scale = d.structure.objective_scale

    def objective() -> float:
        out = hp.solve(d.settings.solvers)
        hp.unpack(out.result.solver)
        return float(hp.problem.objective.value) / scale

    (limit,) = [c for c in hp.constraints if isinstance(c, TradeLimit)]
    k = limit.rows(d).index("trade_limit[BTC-PERP]")
    before = objective()
    tau = np.array(limit.tau.value, dtype=float)
    tau[k] += 1.0 / d.V
    limit.tau.value = tau
    fall = before - objective()
    assert 0.75 * btc.dual <= fall <= btc.dual * (1 + 1e-6)
