"""Dated contracts across a plan's steps (optimizer.plan_expiry): a contract that settles before a
step starts is held at 0 in that step, its settlement costs nothing and passes any trade limit,
and the expiry facts of each step are as computed by hand from the contract's expiry."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.constraints import ExpiryGuard
from optimizer.plan_expiry import expiry_days_path
from optimizer.planner import PlannerProblem, plan_of
from optimizer.prepare import prepare
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings

T0 = pd.Timestamp("2025-01-01", tz="UTC")
#: the dated contract expires 1.5 days from T0: with 1-day steps it lives to start steps 1 and 2
EXPIRY_DAYS = 1.5
H = 4


def _book(dated_btc: float = 0.0) -> Book:
    perp = FuturesContract("BTC-PERP", "BTC", lot_step=1e-9, min_notional=0.0)
    dated = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED, lot_step=1e-9,
                            min_notional=0.0, expiry=T0 + pd.Timedelta(days=EXPIRY_DAYS))
    return Book((SpotAsset("BTC"),), (perp, dated), spot={"BTC": 10.0}, targets={"BTC": 0.5},
                cash=200_000.0,
                futures={"BTC-Q": FuturesPosition(dated_btc, 50_010.0)} if dated_btc else {})


def _market() -> MarketSnapshot:
    # contango on the dated contract (a short earns its basis), shorts pay funding on the perp
    return MarketSnapshot(time=T0, spot={"BTC": 50_000.0},
                          mark={"BTC-PERP": 50_000.0, "BTC-Q": 50_010.0},
                          funding={"BTC-PERP": -1e-4})


def _risk() -> RiskModel:
    return RiskModel.from_covariance(("BTC",), np.array([[0.36]]))


def _settings(**cons: float) -> OptimizerSettings:
    return OptimizerSettings(costs=CostSettings(trading=True, carry=True, horizon_days=1.0),
                             constraints=ConstraintSettings(**cons),  # type: ignore[arg-type]
                             horizon=H)


def _plan(book: Book, settings: OptimizerSettings) -> tuple[np.ndarray, PlannerProblem, float]:
    d = prepare(book, _market(), _risk(), settings)
    pp = PlannerProblem(d.structure, H)
    pp.update(d)
    res = pp.solve().result
    assert res.status == "optimal", res.status
    return pp.plan_z(res), pp, d.V


def test_the_days_left_at_each_steps_start_by_hand() -> None:
    d = prepare(_book(), _market(), _risk(), _settings())
    assert d.expiry_days is not None
    np.testing.assert_allclose(d.expiry_days[:, 1], [1.5, 0.5, -0.5, -1.5], rtol=0, atol=1e-12)
    assert np.all(np.isinf(d.expiry_days[:, 0]))
    # a plan that ends before the expiry, or one step, carries no expiry facts and no rows
    assert expiry_days_path(_book(), _market(), 0.5, 3) is None
    one = prepare(_book(), _market(), _risk(), OptimizerSettings(horizon=1))
    assert one.expiry_days is None and one.near_expiry is None
    assert one.structure.expiry_guarded == ()


def test_a_settled_contract_is_held_at_zero_and_settles_free() -> None:
    z, pp, _V = _plan(_book(), _settings())
    dated = 1
    # the plan may hold the contract while it lives (steps 1 and 2) ...
    assert abs(z[0, dated]) > 1e-3, z
    # ... and holds none of it in the steps that start after its expiry
    np.testing.assert_allclose(z[2:, dated], 0.0, rtol=0, atol=1e-9)
    # the hedge is carried on by the perpetual: the net short stays near the target gap
    assert np.all(z[2:, 0] < -0.3)
    inputs = pp.step_inputs
    for h, step in enumerate(inputs):
        gone = h >= 2
        expired = step.expired if step.expired is not None else np.zeros(2)
        assert expired[dated] == (1.0 if gone else 0.0)
        assert (step.lin_cost[dated] == 0.0) == gone
        assert step.lin_cost[0] == inputs[0].lin_cost[0] > 0  # the perpetual's cost is untouched


def test_a_settlement_passes_the_trade_limit() -> None:
    """A held short of 4 BTC (200,000 USD) in the dated contract and a 1,000 USD trade limit per
    step: the earlier steps can trade at most 1,000 USD each, the settlement at step 3 removes the
    rest at once (the plan is feasible only because a settlement is not a trade)."""
    z, pp, V = _plan(_book(dated_btc=-4.0), _settings(trade_limit_usd=1_000.0))
    dated = 1
    x = z[:, dated] * V
    x0 = -4.0 * 50_010.0
    assert abs(x[0] - x0) <= 1_000.0 * (1 + 1e-6)
    assert abs(x[1] - x[0]) <= 1_000.0 * (1 + 1e-6)
    assert x[2] == pytest.approx(0.0, abs=1e-6 * V)
    assert abs(x[2] - x[1]) > 190_000.0  # the settlement, far above the limit
    tau = pp.step_inputs[0].trade_limits[dated]
    assert pp.step_inputs[2].trade_limits[dated] == pytest.approx(abs(x0) / V + 2 * tau, rel=1e-12)


def test_the_guard_row_of_a_settled_contract_by_hand() -> None:
    """ExpiryGuard.violation on a later step's data: a settled contract's bound is 0 either way,
    today's near-expiry bound |x0| (same sign) is unchanged."""
    d = prepare(_book(dated_btc=-1.0), _market(), _risk(), _settings(expiry_row=True,
                                                                      min_days_to_expiry=2.0))
    guard = ExpiryGuard((1,))
    z = np.array([0.0, 0.05])
    # today: near expiry (1.5 < 2 days), held short -> only reduced: a long of 0.05 breaks by 0.05
    assert guard.violation(z, d)[0] == pytest.approx(0.05, abs=1e-15)
    assert guard.violation(np.array([0.0, d.z0[1] / 2]), d)[0] == 0.0
    pp = PlannerProblem(d.structure, H)
    pp.update(d)
    later = pp.step_inputs[2]
    assert later.expired is not None and later.expired[1] == 1.0
    short = np.array([0.0, d.z0[1] / 2])  # half today's short: allowed today, not once settled
    assert guard.violation(short, later)[0] == pytest.approx(abs(d.z0[1]) / 2, rel=1e-12)
    assert math.isclose(guard.violation(np.zeros(2), later)[0], 0.0)


def test_the_plan_reports_a_settlement_apart_from_the_trades() -> None:
    """The held 4 BTC short in the dated contract is carried to its expiry and settles before
    step 3 starts: the plan lists -x_2 (the position at the end of step 2) as step 3's
    settlement and no trade of that contract there; trades and settlements together still add
    up to the last step's positions minus today's."""
    book = _book(dated_btc=-4.0)
    settings = _settings(trade_limit_usd=1_000.0)
    d = prepare(book, _market(), _risk(), settings)
    z, _pp, V = _plan(book, settings)
    plan = plan_of(z, d)
    x2 = z[1, 1] * V
    assert abs(x2) > 190_000.0
    step3 = plan.steps[2]
    assert step3.settlements == {"BTC-Q": pytest.approx(-x2, rel=1e-12)}
    assert abs(step3.trades["BTC-Q"]) < 1e-6 * V
    assert all(not st.settlements for h, st in enumerate(plan.steps) if h != 2)
    for sym in d.contracts:
        moved = sum(st.trades[sym] + st.settlements.get(sym, 0.0) for st in plan.steps)
        assert moved == pytest.approx(plan.steps[-1].positions[sym] - d.z0[d.contracts.index(sym)]
                                      * V, abs=1e-6)
    assert plan.to_dict()["steps"][2]["settlements"] == step3.settlements  # type: ignore[index]
