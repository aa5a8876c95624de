"""A solver's "unbounded" verdict is an answer only where the book can be unbounded
(optimizer.problem.refuse_unbounded, bounded_reason): every objective term but the carry is
non-negative or a function of the bounded spot trades, so with the carry off, or every position
bounded (the initial-margin row, the stress rows, a cap / trade limit / halt on each contract), the
objective is bounded below and the verdict is a numerical failure. The kitchen-sink book of the CLI
tests (margin on) with a trading weight of 1e12 set in code was answered "the solver reports the
book unbounded ... Fix: switch on margin"."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from test_rebalance_errors import SYMS, _market, _perps, _risk, _seed_book

from models.risk import RiskModel
from optimizer.engines import UNBOUNDED, RawResult
from optimizer.prepare import prepare
from optimizer.problem import (
    HedgeProblem,
    NoAnswerError,
    SolveOutcome,
    UnboundedBookError,
    refuse_unbounded,
)
from optimizer.rebalance import Rebalancer
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings, StressScenario

CARRY = CostSettings(trading=True, carry=True)
FUNDING = {"BTC-PERP": 1e-4, "ETH-PERP": 1e-4, "SOL-PERP": 1e-3}
STRESS = (StressScenario("crash", {}, -0.3),)


def _verdict(cons: ConstraintSettings, costs: CostSettings = CARRY) -> None:
    contracts = _perps(*SYMS)
    d = prepare(_seed_book(contracts), _market(contracts, funding=FUNDING), _risk(),
                OptimizerSettings(costs=costs, constraints=cons, basis_risk=False))
    refuse_unbounded(UNBOUNDED, d)


@pytest.mark.parametrize(("cons", "costs", "reason"), [
    (ConstraintSettings(margin=True), CARRY, "initial-margin row"),
    (ConstraintSettings(margin=False, stress=STRESS), CARRY, "stress scenarios"),
    (ConstraintSettings(margin=False, caps_usd={f"{s}-PERP": 1e3 for s in SYMS}), CARRY, "a cap"),
    (ConstraintSettings(margin=False, trade_limit_usd=1e3), CARRY, "a trade limit"),
    (ConstraintSettings(margin=False), CostSettings(carry=False), "carry is off"),
    (ConstraintSettings(margin=False), CostSettings(gamma_fund=0.0), "carry is off"),
], ids=["margin", "stress", "caps", "trade_limit", "carry_off", "gamma_fund_0"])
def test_a_bounded_book_called_unbounded_is_a_solver_failure(
        cons: ConstraintSettings, costs: CostSettings, reason: str) -> None:
    with pytest.raises(NoAnswerError) as exc:
        _verdict(cons, costs)
    msg = str(exc.value)
    assert msg.startswith("the solver reports the book unbounded, yet ") and reason in msg
    assert "a numerical failure, not an answer. Fix:" in msg


@pytest.mark.parametrize("cons", [
    ConstraintSettings(margin=False),
    ConstraintSettings(margin=False, caps_usd={"BTC-PERP": 1e3, "ETH-PERP": 1e3}),  # SOL-PERP free
], ids=["nothing_bounds", "one_contract_free"])
def test_a_book_that_can_be_unbounded_keeps_the_verdict(cons: ConstraintSettings) -> None:
    with pytest.raises(UnboundedBookError, match="Fix: switch on margin"):
        _verdict(cons)


def test_through_the_rebalancer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The riskless SOL book (zero variance, funding 0.1% per 8 h: test_rebalance_errors) with
    margin on solves; a solver that calls it unbounded is a failure naming the margin row, not an
    unbounded book (with margin off the same verdict stands, as the real solvers give it)."""
    contracts = _perps(*SYMS)
    market = _market(contracts, funding={"SOL-PERP": 1e-3})
    risk = RiskModel.from_covariance(list(SYMS), np.diag([0.3, 0.5, 0.0]))
    margin_on = OptimizerSettings(costs=CARRY, constraints=ConstraintSettings(margin=True),
                                  basis_risk=False)
    assert Rebalancer().solve(_seed_book(contracts), market, risk, margin_on).status == "optimal"

    def says_unbounded(self: HedgeProblem, solvers: tuple[object, ...] = ()) -> SolveOutcome:
        res = RawResult(None, UNBOUNDED, "CLARABEL", 0.0, 0, math.nan)
        return SolveOutcome(res, (("CLARABEL", UNBOUNDED),))

    monkeypatch.setattr(HedgeProblem, "solve", says_unbounded)
    with pytest.raises(NoAnswerError, match="the initial-margin row bounds every position"):
        Rebalancer().solve(_seed_book(contracts), market, risk, margin_on)
    margin_off = OptimizerSettings(costs=CARRY, constraints=ConstraintSettings(margin=False),
                                   basis_risk=False)
    with pytest.raises(UnboundedBookError):
        Rebalancer().solve(_seed_book(contracts), market, risk, margin_off)


def test_a_plan_whose_later_steps_carry_can_be_unbounded() -> None:
    """Zero carry today is a bound below only when no step of a plan carries either."""
    contracts = _perps(*SYMS)
    d = prepare(_seed_book(contracts), _market(contracts), _risk(),
                OptimizerSettings(costs=CARRY, constraints=ConstraintSettings(margin=False),
                                  basis_risk=False, horizon=3))
    flat = replace(d, carry=np.zeros(3), carry_steps=np.zeros((3, 3)))
    with pytest.raises(NoAnswerError, match="carry is off or zero"):
        refuse_unbounded(UNBOUNDED, flat)
    later = replace(flat, carry_steps=np.array([[0.0] * 3, [1e-4] * 3, [1e-4] * 3]))
    with pytest.raises(UnboundedBookError):
        refuse_unbounded(UNBOUNDED, later)
