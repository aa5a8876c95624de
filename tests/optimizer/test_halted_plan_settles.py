"""A halted dated contract (status DELIVERING) that settles inside the plan (optimizer.halted with
optimizer.plan_expiry): held at its position until it settles, then at 0, and the plan solves.

Hand computation (no trading cost, no carry: each step minimises its own tracking error alone).
The book: 10 BTC spot at 50,000 USD (V = 500,000 USD), target 50% (250,000 USD of BTC exposure),
BTC-Q short 200,000 USD halted, settling 2 hours from now; steps of 1 day.

- step 1: BTC-Q held at -200,000, exposure 500,000 - 200,000 + x_perp = 250,000: x_perp = -50,000;
- steps 2, 3: BTC-Q settled (0; its +200,000 is a settlement, not a trade), x_perp = -250,000.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.planner import PlannerProblem
from optimizer.rebalance import Rebalancer
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings

T0 = pd.Timestamp("2025-03-28T06:00:00Z")


def _inputs(horizon: int, short_btc: float = 4.0,
            costs: bool = False) -> tuple[Book, MarketSnapshot, RiskModel, OptimizerSettings]:
    perp = FuturesContract("BTC-PERP", "BTC", lot_step=1e-6, min_notional=0.0)
    q = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED, lot_step=1e-6, min_notional=0.0,
                        expiry=pd.Timestamp("2025-03-28T08:00:00Z").to_pydatetime())
    book = Book((SpotAsset("BTC"),), (perp, q), spot={"BTC": 10.0}, targets={"BTC": 0.5},
                cash=200_000.0, futures={"BTC-Q": FuturesPosition(-short_btc, 50_000.0)})
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0},
                            mark={"BTC-PERP": 50_000.0, "BTC-Q": 50_000.0},
                            halted={"BTC-Q": "DELIVERING"})
    risk = RiskModel.from_covariance(("BTC",), np.array([[0.36]]))
    st = OptimizerSettings(costs=CostSettings(trading=costs, carry=costs, horizon_days=1.0),
                           constraints=ConstraintSettings(min_days_to_expiry=0.0), horizon=horizon,
                           round_lots=False)
    return book, market, risk, st


def test_halted_contract_settling_inside_the_plan_is_held_then_settled() -> None:
    sol = Rebalancer().solve(*_inputs(3))
    assert sol.status == "optimal", (sol.status, sol.messages)
    assert sol.plan is not None
    x = np.array([[s.positions["BTC-PERP"], s.positions["BTC-Q"]] for s in sol.plan.steps])
    np.testing.assert_allclose(x, [[-50_000.0, -200_000.0], [-250_000.0, 0.0], [-250_000.0, 0.0]],
                               rtol=0, atol=1e-3)
    st2 = sol.plan.steps[1]
    assert st2.settlements == pytest.approx({"BTC-Q": 200_000.0}, abs=1e-3)
    assert abs(st2.trades["BTC-Q"]) < 1e-3  # the settlement is not a trade of a halted contract
    assert abs(sol.plan.steps[0].trades["BTC-Q"]) < 1e-3  # no trade while halted


def test_halted_settlement_bound_follows_the_position_without_a_rebuild() -> None:
    # the settlement's bound is a Parameter: a new halted size re-solves the same compiled plan
    rb = Rebalancer()
    assert rb.solve(*_inputs(3)).status == "optimal"
    builds = PlannerProblem.builds
    sol = rb.solve(*_inputs(3, short_btc=2.0))
    assert PlannerProblem.builds == builds
    assert sol.status == "optimal", (sol.status, sol.messages)
    assert sol.plan is not None
    # step 1: 500,000 - 100,000 + x_perp = 250,000; then BTC-Q settles (+100,000): x_perp = -250,000
    x = np.array([[s.positions["BTC-PERP"], s.positions["BTC-Q"]] for s in sol.plan.steps])
    np.testing.assert_allclose(x, [[-150_000.0, -100_000.0], [-250_000.0, 0.0], [-250_000.0, 0.0]],
                               rtol=0, atol=1e-3)


def test_halted_settling_plan_with_costs_solves() -> None:
    # with fee and carry on as well (the reviewer's case): the plan solves and never trades BTC-Q
    sol = Rebalancer().solve(*_inputs(3, costs=True))
    assert sol.status == "optimal", (sol.status, sol.messages)
    assert sol.plan is not None
    assert all(abs(s.trades["BTC-Q"]) < 1e-3 for s in sol.plan.steps)
