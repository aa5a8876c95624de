"""Dated contracts across a plan's steps (optimizer.plan_expiry): a contract that settles before a
step starts is held at 0 in that step, its settlement costs nothing and passes any trade limit,
and the expiry facts of each step are as computed by hand from the contract's expiry."""

from __future__ import annotations

import math
from dataclasses import replace

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
from optimizer.problem import HedgeProblem
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
    # min_days_to_expiry 1 day unless given: the contract, 1.5 days from expiry, may be opened
    # today (at the default 2 days the expiry row, on by itself then, holds it where it is)
    cons.setdefault("min_days_to_expiry", 1.0)
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
    one_day = ConstraintSettings(min_days_to_expiry=1.0)
    one = prepare(_book(), _market(), _risk(), OptimizerSettings(horizon=1, constraints=one_day))
    assert one.expiry_days is None and one.near_expiry is None
    assert one.structure.expiry_guarded == ()
    # at the default 2 days the contract is inside the window today: the row is on by itself
    near = prepare(_book(), _market(), _risk(), OptimizerSettings(horizon=1))
    assert near.near_expiry is not None and list(near.near_expiry) == [0.0, 1.0]
    assert near.structure.expiry_guarded == (1,)


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


def _near_book(expiry_days: float, dated_btc: float) -> Book:
    """One BTC hedge in a perpetual and a dated contract ``expiry_days`` from T0, ``dated_btc``
    held in the dated one."""
    perp = FuturesContract("BTC-PERP", "BTC", lot_step=1e-9, min_notional=0.0)
    dated = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED, lot_step=1e-9,
                            min_notional=0.0, expiry=T0 + pd.Timedelta(days=expiry_days))
    return Book((SpotAsset("BTC"),), (perp, dated), spot={"BTC": 10.0}, targets={"BTC": 0.5},
                cash=200_000.0, futures={"BTC-Q": FuturesPosition(dated_btc, 50_010.0)})


def test_a_later_step_becoming_near_expiry_carries_the_rows() -> None:
    """A contract 2.5 days from expiry, 2-day window, 1-day steps: not near today nor at step 2's
    start (1.5 < 2 is near: step 2 is), never settled within H = 3: the plan still carries the
    days per step when the row is on (and not when it is off, nothing settling)."""
    book = _near_book(2.5, -1.0)
    on = prepare(book, _market(), _risk(), _settings(expiry_row=True, min_days_to_expiry=2.0))
    assert on.expiry_days is not None
    np.testing.assert_allclose(on.expiry_days[:3, 1], [2.5, 1.5, 0.5], rtol=0, atol=1e-12)
    assert on.near_expiry is not None and on.near_expiry[1] == 0.0
    pp = PlannerProblem(on.structure, H)
    pp.update(on)
    near = [s.near_expiry[1] if s.near_expiry is not None else 0.0 for s in pp.step_inputs]
    chained = [s.expiry_chained[1] if s.expiry_chained is not None else 0.0
               for s in pp.step_inputs]
    assert near == [0.0, 1.0, 1.0, 0.0]  # step 4 starts after the expiry: settled, not near
    assert chained == [0.0, 0.0, 1.0, 0.0]
    assert expiry_days_path(book, _market(), 1.0, 3, near_days=0.0) is None


def test_the_chained_row_by_hand() -> None:
    """ExpiryGuard.violation on a chained later step: bounded by the previous step's position
    with today's sign (a short today: z_{h-1} <= z_h <= 0)."""
    d = prepare(_near_book(10.0, -1.0), _market(), _risk(),
                _settings(expiry_row=True, min_days_to_expiry=20.0))
    pp = PlannerProblem(d.structure, H)
    pp.update(d)
    later = pp.step_inputs[1]
    assert later.expiry_chained is not None and later.expiry_chained[1] == 1.0
    guard = ExpiryGuard((1,))
    z0 = d.z0[1]
    prev = np.array([0.0, z0 / 4])
    # back to today's short after reducing it to a quarter: allowed by |x0|, not by the chain
    assert guard.violation(np.array([0.0, z0]), later, prev)[0] == pytest.approx(abs(z0) * 0.75,
                                                                                rel=1e-12)
    assert guard.violation(np.array([0.0, z0 / 8]), later, prev)[0] == 0.0
    assert guard.violation(np.array([0.0, -z0 / 8]), later, prev)[0] == pytest.approx(
        abs(z0) / 8, rel=1e-12)  # a long: the wrong sign
    assert guard.violation(np.array([0.0, z0]), later)[0] == 0.0  # without prev: today's bound


def test_the_chained_row_of_a_long_by_hand() -> None:
    """The same for a long today (0 <= z_h <= z_{h-1}): back up to today's long breaks by the
    growth, a long below the step before's is within, a short breaks by its size."""
    d = prepare(_near_book(10.0, 1.0), _market(), _risk(),
                _settings(expiry_row=True, min_days_to_expiry=20.0))
    pp = PlannerProblem(d.structure, H)
    pp.update(d)
    later = pp.step_inputs[2]
    guard = ExpiryGuard((1,))
    z0 = d.z0[1]
    assert 0 < z0 < 1
    prev = np.array([0.0, z0 / 4])
    assert guard.violation(np.array([0.0, z0 / 2]), later, prev)[0] == pytest.approx(z0 / 4, rel=1e-12)
    assert guard.violation(np.array([0.0, z0 / 8]), later, prev)[0] == 0.0
    assert guard.violation(np.array([0.0, -z0 / 8]), later, prev)[0] == pytest.approx(z0 / 8,
                                                                                  rel=1e-12)


def test_chained_rows_need_a_previous_step() -> None:
    """A later step's data (chained rows) given to a problem with no step before it is refused,
    not silently read against today's positions."""
    d = prepare(_near_book(10.0, -1.0), _market(), _risk(),
                _settings(expiry_row=True, min_days_to_expiry=20.0))
    pp = PlannerProblem(d.structure, H)
    pp.update(d)
    single = HedgeProblem(d.structure)
    with pytest.raises(ValueError, match=r"^expiry rows chained to a previous step in a problem "
                                         r"without one$"):
        single.update(pp.step_inputs[1])


@pytest.mark.parametrize("held", [-4.0, 4.0])
def test_a_plan_never_grows_a_near_expiry_contract_back(held: float) -> None:
    """A held 4 BTC short (or long) near expiry (10 days, 20-day window) that costs its holder
    0.5% of notional in step 1 and earns 0.5% in each later step: with each step bounded by
    today's |x0| only, the plan cuts the position at step 1 and builds it back at step 2 (an
    increase inside the window the order planner would refuse); chained, |x_h| never grows, every
    row holds on every step against the step before, and today's trade keeps the position, whose
    later earnings outweigh step 1's cost (0.5% once against 0.5% x 3)."""
    settings = _settings(expiry_row=True, min_days_to_expiry=20.0)
    d = prepare(_near_book(10.0, held), _market(), _risk(), settings)
    sign = np.sign(held)  # a long pays carry c: the held side pays at step 1, earns later
    carry = np.tile([0.0, -5e-3 * sign], (H, 1))
    carry[0, 1] = 5e-3 * sign
    pp = PlannerProblem(d.structure, H)
    pp.update(d, carry=carry)
    res = pp.solve().result
    assert res.status == "optimal", res.status
    z = pp.plan_z(res)
    dated = 1
    guard = ExpiryGuard((dated,))
    prev = d.z0
    for h, step in enumerate(pp.step_inputs):
        assert guard.violation(z[h], step, prev)[0] <= 1e-7, (h, z[:, dated])
        prev = z[h]
    assert np.all(np.diff(np.abs(np.r_[d.z0[dated], z[:, dated]])) <= 1e-7), z[:, dated]
    assert np.all(sign * z[:, dated] >= -1e-9)
    np.testing.assert_allclose(z[:, dated], d.z0[dated], rtol=1e-4)
    # the same inputs without the chain: step 2 goes back towards today's short (the old rule)
    loose = [replace(s, expiry_chained=None) for s in pp.step_inputs]
    pp.update_steps(loose)
    res_loose = pp.solve().result
    assert res_loose.status == "optimal", res_loose.status
    zl = pp.plan_z(res_loose)
    assert abs(zl[0, dated]) < 1e-4 and sign * zl[1, dated] > 0.3, zl[:, dated]
