"""The least-violation re-solve in two stages (optimizer.elastic, optimizer.elastic_plan): stage 1
minimises the total slack alone, so "infeasible" is claimed only when no book meets every
constraint, and a weighted stage 2 that relaxes more than that is not served.

The book: the seed book (BTC 0.1, ETH 1, SOL 10 at 60,000 / 2,500 / 150 USD; targets 50/30/20)
long 0.05 BTC-PERP (3,000 USD) under a 500 USD cap on BTC-PERP, with a trading weight of 1e10
written into the prepared data (settings refuse weights over 1e6, optimizer.cost_checks; a
carry weight of 1e6 over a ten-year horizon weighs about as much). Meeting the cap means selling
2,500 USD of BTC-PERP, which costs the weighted objective more than the slack weight (1e6 per
weight unit) charges for breaking the cap: one weighted problem alone "relaxed" a cap the book
can meet (position_limit, 2,500 USD) and called the book infeasible.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from test_elastic_plan import _inputs
from test_rebalance_errors import SYMS, _market, _perps, _risk, _seed_book

import optimizer.rebalance as rebalance_module
from models.book import Book, FuturesPosition
from models.market import MarketSnapshot
from optimizer.data import ProblemData
from optimizer.elastic import SLACK_NOISE, ElasticProblem, Stage, elastic_resolve
from optimizer.engines import FAILED, INFEASIBLE, RawResult
from optimizer.planner import PlannerProblem
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem, NoAnswerError, SolveOutcome, SolverFailedError
from optimizer.rebalance import Rebalancer
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    SolverName,
)

CAP_USD = 500.0
HELD_USD = 3_000.0


#: the trading weight written into the prepared data
HUGE = 1e10


def _book_and_settings(funding_budget_usd: float | None = None
                       ) -> tuple[Book, MarketSnapshot, OptimizerSettings]:
    contracts = _perps(*SYMS, lot_step=1e-8, min_notional=0.0)
    book = replace(_seed_book(contracts),
                   futures={"BTC-PERP": FuturesPosition(HELD_USD / 60_000.0, 60_000.0)})
    cons = ConstraintSettings(caps_usd={"BTC-PERP": CAP_USD}, funding_budget_usd=funding_budget_usd)
    st = OptimizerSettings(costs=CostSettings(trading=True), constraints=cons, round_lots=False)
    return book, _market(contracts), st


def _prepared(st: OptimizerSettings, gamma_trade: float = HUGE) -> ProblemData:
    book, market, _ = _book_and_settings()
    return replace(prepare(book, market, _risk(), st), gamma_trade=gamma_trade)


def _huge_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebalancer's prepared data carry a trading weight of :data:`HUGE`."""
    def prepared(*args: Any) -> ProblemData:
        return replace(prepare(*args), gamma_trade=HUGE)

    monkeypatch.setattr(rebalance_module, "prepare", prepared)


def _no_solver_answers(monkeypatch: pytest.MonkeyPatch, cls: type[HedgeProblem]) -> None:
    def fail(self: HedgeProblem, solvers: tuple[object, ...] = ()) -> object:
        raise SolverFailedError("every solver failed (CLARABEL: solver_error, SCS: solver_error)")

    monkeypatch.setattr(cls, "solve", fail)


def test_the_book_is_feasible_and_solved_when_a_solver_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference: the solvers meet the cap (the trading weight keeps the rest of the book as
    it is: BTC-PERP at the cap's edge, +500 USD)."""
    _huge_weight(monkeypatch)
    book, market, st = _book_and_settings()
    sol = Rebalancer().solve(book, market, _risk(), st)
    assert sol.status == "optimal"
    btc = next(p for p in sol.target_positions if p.symbol == "BTC-PERP")
    assert btc.notional == pytest.approx(CAP_USD, abs=1e-3)


def test_stage_one_proves_the_book_feasible() -> None:
    el = elastic_resolve(_prepared(_book_and_settings()[2]))
    assert el.solved and el.feasible
    assert el.least is not None and el.least <= SLACK_NOISE
    assert el.conflicts == () and el.opposing == ()


def test_no_solver_answering_a_feasible_book_is_a_failure_not_infeasible(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: status "infeasible", position_limit relaxed by 2,500 USD."""
    book, market, st = _book_and_settings()
    _huge_weight(monkeypatch)
    _no_solver_answers(monkeypatch, HedgeProblem)
    with pytest.raises(SolverFailedError) as exc:
        Rebalancer().solve(book, market, _risk(), st)
    assert "every solver failed (CLARABEL: solver_error, SCS: solver_error)" in str(exc.value)
    assert "the book is feasible" in str(exc.value)


def test_an_infeasible_book_names_only_what_no_book_can_meet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A funding budget of -5 USD with no funding rate at all: no book earns 5 USD, so the least
    violation is 5 USD on the budget, and the cap can be met. The weighted stage 2 breaks the cap
    too (2,500 USD, to save the trade): not served; stage 1's answer names the budget alone, by
    5 USD, with BTC-PERP within its cap. Before: position_limit and funding_budget named."""
    book, market, st = _book_and_settings(funding_budget_usd=-5.0)
    _huge_weight(monkeypatch)
    _no_solver_answers(monkeypatch, HedgeProblem)
    sol = Rebalancer().solve(book, market, _risk(), st)
    assert sol.status == "infeasible" and not sol.orderable
    assert [c.name for c in sol.conflicts] == ["funding_budget"]
    assert sol.conflicts[0].violation == pytest.approx(5.0, rel=1e-6)
    btc = next(p for p in sol.target_positions if p.symbol == "BTC-PERP")
    assert abs(btc.notional) <= CAP_USD + 1e-4


def test_at_a_useful_weight_the_closest_book_is_served() -> None:
    """At gamma_trade = 1 stage 2 relaxes no more than stage 1 (5 USD on the budget): its answer,
    tuned by the objective, is served: BTC-PERP at -500 USD, the cap's edge toward the target
    (BTC 1,000 USD over its 5,000 USD target), as when the book has no budget at all."""
    d = _prepared(_book_and_settings(funding_budget_usd=-5.0)[2], gamma_trade=1.0)
    el = elastic_resolve(d)
    assert [c.name for c in el.conflicts] == ["funding_budget"]
    assert el.conflicts[0].violation_user == pytest.approx(5.0, rel=1e-6)
    assert el.least == pytest.approx(el.conflicts[0].violation, rel=1e-6)
    assert el.z[0] * d.V == pytest.approx(-CAP_USD, abs=1e-3)


def test_a_feasible_plan_no_solver_answers_stays_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan of test_elastic_plan (BTC's only hedge settles inside a 3-step plan) under a 12 pp
    band instead of 2: BTC's 10 pp drift at step 3 is within it, so the plan is feasible."""
    book, market, risk, st = _inputs(3)
    wide = replace(st.constraints, clusters=(ClusterBand("btc", ("BTC",), 0.12),))
    st = replace(st, constraints=wide)
    assert Rebalancer().solve(book, market, risk, st).status == "optimal"
    _no_solver_answers(monkeypatch, PlannerProblem)
    with pytest.raises(SolverFailedError, match="the book is feasible"):
        Rebalancer().solve(book, market, risk, st)


def test_an_infeasible_plan_proves_a_positive_least_violation() -> None:
    """The 2 pp band of test_elastic_plan: 80,000 USD (8 pp of V = 1,000,000) past it at step 3."""
    book, market, risk, st = _inputs(3)
    sol = Rebalancer().solve(book, market, risk, st)
    assert sol.status == "infeasible"
    assert "cluster_band at step 3" in [c.name for c in sol.conflicts]


def test_an_infeasible_verdict_on_a_feasible_book_is_a_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The solvers answer "infeasible" (confirmed by the second opinion) on the feasible book:
    stage 1 proves it feasible, so the answer is a solver failure, not an infeasible book with
    nothing named."""
    book, market, st = _book_and_settings()

    def says_infeasible(self: HedgeProblem, solvers: tuple[object, ...] = ()) -> SolveOutcome:
        res = RawResult(None, INFEASIBLE, "CLARABEL", 0.0, 0, math.nan)
        return SolveOutcome(res, (("CLARABEL", INFEASIBLE), ("SCS", "infeasible: confirms CLARABEL")))

    monkeypatch.setattr(HedgeProblem, "solve", says_infeasible)
    with pytest.raises(NoAnswerError, match="the solvers answered infeasible, yet a least-violation "
                                           "check finds a book that meets every constraint"):
        Rebalancer().solve(book, market, _risk(), st)


def test_stage_one_stands_when_stage_two_gets_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every solver of stage 2 fails (a status, not a crash): the infeasible budget book is still
    named from stage 1 (the budget, 5 USD), and the record holds both stages' solvers."""
    real = ElasticProblem.engine

    def engine(self: ElasticProblem, solver: SolverName) -> object:
        if self.stage == Stage.CLOSEST:
            return _Failing(solver.value)
        return real(self, solver)

    monkeypatch.setattr(ElasticProblem, "engine", engine)
    d = _prepared(_book_and_settings(funding_budget_usd=-5.0)[2], gamma_trade=1.0)
    el = elastic_resolve(d)
    assert el.solved and not el.feasible
    assert [c.name for c in el.conflicts] == ["funding_budget"]
    assert el.conflicts[0].violation_user == pytest.approx(5.0, rel=1e-6)
    assert [s for s, _ in el.tried] == ["CLARABEL", "CLARABEL", "SCS"]
    assert el.tried[-1] == ("SCS", FAILED) and el.tried[-2] == ("CLARABEL", FAILED)


class _Failing:
    """An engine whose every solve is a numerical failure."""

    def __init__(self, name: str) -> None:
        self.name = name

    def solve(self) -> RawResult:
        return RawResult(None, FAILED, self.name, 0.0, 0, math.nan)
