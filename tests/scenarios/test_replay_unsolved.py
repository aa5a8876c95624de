"""A replay step where the policy has no answer to trade holds the book and the replay goes on.

A long replay used to stop at the first step whose every solver failed (a large book under a
strong trade aversion, one step in three years). The replay now holds the book as it stands there,
as a daily loop sends no order without an answer, and lists the step in
``BacktestResult.unsolved`` (and ``unsolved_steps`` of the metrics); a configuration error (no
solver of the chain takes the problem) still stops it. So does a step whose answer is infeasible
(the least-violation book breaks constraints: no execution path sends it), where the replay
used to trade that book.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.synthetic import generate_history
from optimizer.policies import (
    NaiveFutures,
    NoRebalance,
    OptimizedFutures,
    Policy,
    TargetHoldings,
    current_holdings,
)
from optimizer.problem import HedgeProblem, NoAnswerError, SolverFailedError
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings
from scenarios.backtest_result import UNSOLVED_COLUMNS
from scenarios.market_path import MarketPath
from scenarios.metrics import compute_metrics
from scenarios.replay import run_backtest

#: the failing step (a weekly rebalance day of NaiveFutures(period="7D") on the daily path)
FAIL_AT = 14


def _case() -> tuple[Book, MarketPath]:
    hist = generate_history(("BTC", "ETH"), days=40, seed=21)
    cons = (FuturesContract("BTC-PERP", "BTC"), FuturesContract("ETH-PERP", "ETH"))
    p0 = hist.spot.iloc[0]
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), cons,
                spot={"BTC": 70_000 / float(p0["BTC"]), "ETH": 30_000 / float(p0["ETH"])},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=20_000.0)
    return book, MarketPath.from_synthetic(hist, cons)


class FailsOnce(Policy):
    """``inner`` at every step but ``at``, where it raises ``error`` (or, with ``error`` None,
    holds the book as it stands: the reference run)."""

    name = "fails_once"

    def __init__(self, inner: Policy, at: pd.Timestamp, error: Exception | None) -> None:
        self.inner, self.at, self.error = inner, at, error

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        if t != self.at:
            return self.inner(book, market, t)
        if self.error is not None:
            raise self.error
        return current_holdings(book, market)


def test_a_step_without_an_answer_is_the_book_held() -> None:
    """Every recorded frame equals, bit for bit, a run whose policy holds the book at that step
    (a weekly rebalance day: the policy would have traded there); the step is listed once."""
    book, path = _case()
    at = path.spot.index[FAIL_AT]
    failed = run_backtest(book, path, FailsOnce(NaiveFutures(period="7D"), at,
                                                NoAnswerError("every solver failed (X: y)")))
    held = run_backtest(book, path, FailsOnce(NaiveFutures(period="7D"), at, None))
    traded = run_backtest(book, path, NaiveFutures(period="7D"))
    assert traded.steps["traded_futures"].iloc[FAIL_AT] > 0  # the step would have traded
    assert failed.steps["traded_futures"].iloc[FAIL_AT] == 0
    for name, frame in held.frames().items():
        if name != "unsolved":
            pd.testing.assert_frame_equal(failed.frames()[name], frame, check_exact=True)
    assert list(failed.unsolved.columns) == UNSOLVED_COLUMNS
    assert failed.unsolved.to_dict("records") == [
        {"time": at, "step": FAIL_AT, "reason": "every solver failed (X: y)"}]
    assert held.unsolved.empty
    assert compute_metrics(failed).unsolved_steps == 1
    assert compute_metrics(held).unsolved_steps == 0


def test_a_chain_that_cannot_take_the_problem_still_stops_the_replay() -> None:
    """Not an answer missing today but a set-up no step can solve: the error propagates."""
    book, path = _case()
    policy = FailsOnce(NaiveFutures(period="7D"), path.spot.index[3],
                       SolverFailedError("PIQP cannot solve this problem"))
    with pytest.raises(SolverFailedError, match="PIQP cannot"):
        run_backtest(book, path, policy)


def test_an_optimiser_whose_solvers_all_fail_once_holds_there_and_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """OptimizedFutures with every solver failing at one step (the chain returns no answer):
    the step trades nothing, is listed with the solvers' statuses, and the replay runs to the end;
    the steps before it are those of an undisturbed run."""
    book, path = _case()
    logp = np.log(path.spot[["BTC", "ETH"]].to_numpy(dtype=float))
    risk = RiskModel.from_covariance(["BTC", "ETH"], np.cov(np.diff(logp, axis=0).T) * 365)
    settings = OptimizerSettings(costs=CostSettings(horizon_days=7.0), round_lots=False)
    plain = run_backtest(book, path, OptimizedFutures(risk, settings))
    assert plain.steps["traded_futures"].iloc[FAIL_AT] > 0

    original = HedgeProblem.run_chain
    calls = {"n": 0}

    def fails_on_one_step(self: HedgeProblem, chain: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == FAIL_AT + 1:  # one solve per step
            return None, (("CLARABEL", "solver_error"), ("SCS", "solver_error"))
        return original(self, chain)

    monkeypatch.setattr(HedgeProblem, "run_chain", fails_on_one_step)
    got = run_backtest(book, path, OptimizedFutures(risk, settings))
    assert len(got.steps) == len(path.spot.index)
    assert got.unsolved["step"].tolist() == [FAIL_AT]
    assert "every solver failed (CLARABEL: solver_error, SCS: solver_error)" in got.unsolved[
        "reason"].iloc[0]
    assert got.steps["traded_futures"].iloc[FAIL_AT] == 0
    assert got.steps["traded_spot"].iloc[FAIL_AT] == 0
    pd.testing.assert_frame_equal(
        got.futures_notional.iloc[:FAIL_AT], plain.futures_notional.iloc[:FAIL_AT],
        check_exact=True)
    assert path.mark is not None
    contracts = got.futures_notional / path.mark[list(got.futures_notional.columns)]
    np.testing.assert_allclose(contracts.iloc[FAIL_AT], contracts.iloc[FAIL_AT - 1], rtol=1e-12)
    assert got.steps["traded_futures"].iloc[FAIL_AT + 1:].sum() > 0  # and it trades again after


def test_an_infeasible_answer_is_the_book_held_not_the_least_violation_book() -> None:
    """A funding budget of -1,000,000 USD (earn a million in funding over the horizon on a
    120,000 USD book) conflicts with the margin row at every step: ``fbr solve`` answers
    infeasible and no execution path sends its least-violation book. The replay holds the book at
    every step (no trade, the positions as they started: none), lists each step with the conflict
    named, and its frames equal a run of a policy that never trades (the replay traded the
    least-violation book before: turnover in the hundreds of times NAV)."""
    book, path = _case()
    logp = np.log(path.spot[["BTC", "ETH"]].to_numpy(dtype=float))
    risk = RiskModel.from_covariance(["BTC", "ETH"], np.cov(np.diff(logp, axis=0).T) * 365)
    settings = OptimizerSettings(costs=CostSettings(horizon_days=7.0), round_lots=False,
                                 constraints=ConstraintSettings(funding_budget_usd=-1e6))
    got = run_backtest(book, path, OptimizedFutures(risk, settings))
    never = run_backtest(book, path, NoRebalance())
    n = len(path.spot.index)
    assert got.unsolved["step"].tolist() == list(range(n))
    assert all("infeasible: these constraints conflict: funding_budget" in r
               for r in got.unsolved["reason"])
    assert float(got.steps["traded_futures"].abs().sum()) == 0.0
    assert float(got.futures_notional.abs().to_numpy().sum()) == 0.0
    pd.testing.assert_frame_equal(got.steps.drop(columns=["solve_time_ms", "solver_fallbacks"],
                                                 errors="ignore"),
                                  never.steps.drop(columns=["solve_time_ms", "solver_fallbacks"],
                                                   errors="ignore"), check_exact=True)
    assert compute_metrics(got).unsolved_steps == n


def test_a_wallet_too_small_for_any_hedge_is_the_book_held() -> None:
    """No cash and the margin row on: the margin budget cannot open the smallest lot, so the
    optimiser refuses at every step (``fbr solve``: "collateral too small for any hedge", exit 2)
    and a daily loop's cycle trades nothing. The replay holds the book at every step with that
    reason, and goes on to the end (it stopped at the first step before)."""
    book, path = _case()
    book = Book(book.assets, book.contracts, spot=dict(book.spot), targets=dict(book.targets),
                cash=0.0)
    logp = np.log(path.spot[["BTC", "ETH"]].to_numpy(dtype=float))
    risk = RiskModel.from_covariance(["BTC", "ETH"], np.cov(np.diff(logp, axis=0).T) * 365)
    settings = OptimizerSettings(costs=CostSettings(horizon_days=7.0), round_lots=False,
                                 constraints=ConstraintSettings(margin=True))
    got = run_backtest(book, path, OptimizedFutures(risk, settings))
    n = len(path.spot.index)
    assert got.unsolved["step"].tolist() == list(range(n))
    assert all("collateral too small for any hedge" in r for r in got.unsolved["reason"])
    assert float(got.steps["traded_futures"].abs().sum()) == 0.0
    assert compute_metrics(got).unsolved_steps == n
