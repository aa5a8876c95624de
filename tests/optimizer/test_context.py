"""The context's shared factor exposure (optimizer.context.FactorTrade): with the vol cap on, the
tracking variance and the cap read one variable y = F' B z defined by one set of rows, so the
dense F' B block enters the compiled problem once and the cap's cone holds y; without the cap the
problem has no such variable (the QP is the one it always was)."""

from __future__ import annotations

from dataclasses import replace

import cvxpy as cp
import numpy as np
import pytest
from optcases import random_instance
from test_problem_dpp import _everything_on

from optimizer.constraints import VolatilityCap
from optimizer.data import ProblemData
from optimizer.planner import PlannerProblem
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.terms import TrackingVariance


def _factor_variables(problem: cp.Problem) -> list[cp.Variable]:
    return [v for v in problem.variables() if v.name() == "factor_trade"]


def _dense_rows(hp: HedgeProblem, d: ProblemData) -> int:
    """Rows of the compiled constraint matrix that touch every column of z (F' B's rows) at
    ``d``'s values."""
    hp.update(d)
    data, _, _ = hp.problem.get_problem_data(cp.CLARABEL)
    start = data[cp.settings.PARAM_PROB].var_id_to_col[hp.ctx.z.id]
    A = data["A"].tocsr()[:, start:start + hp.ctx.z.size]
    return int(np.sum(np.diff(A.indptr) == hp.ctx.z.size))


@pytest.mark.parametrize("seed", [13, 14])
def test_the_cap_and_the_tracking_variance_share_one_factor_exposure(seed: int) -> None:
    inst = _everything_on(random_instance(np.random.default_rng(seed), conic=True), conic=True)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    assert d.structure.vol_cap
    hp = HedgeProblem(d.structure)
    (y,) = _factor_variables(hp.problem)
    assert y.size == d.structure.n_factors and hp.ctx.factor is not None and hp.ctx.factor.y is y
    te = next(t for t in hp.terms if isinstance(t, TrackingVariance))
    cap = next(c for c in hp.constraints if isinstance(c, VolatilityCap))
    assert any(v is y for v in te.build(hp.ctx).variables())  # the same y, read again
    assert any(v is y for v in cap.cons[0].variables())
    # F' B's K dense rows once (the definition), not again inside the cap's cone
    cons = replace(inst.settings.constraints, vol_cap=None)
    d0 = prepare(inst.book, inst.market, inst.risk, replace(inst.settings, constraints=cons))
    dense = _dense_rows(hp, d)
    assert dense == _dense_rows(HedgeProblem(d0.structure), d0) >= d.structure.n_factors


def test_without_the_cap_there_is_no_factor_variable() -> None:
    inst = _everything_on(random_instance(np.random.default_rng(11), conic=False), conic=False)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    assert not d.structure.vol_cap
    hp = HedgeProblem(d.structure)
    # the variance reads F' B z itself: no variable, no defining rows
    assert _factor_variables(hp.problem) == [] and hp.ctx.definitions() == []
    assert hp.ctx.factor is not None and not isinstance(hp.ctx.factor.y, cp.Variable)


def test_a_plan_defines_one_factor_exposure_per_step() -> None:
    inst = _everything_on(random_instance(np.random.default_rng(13), conic=True), conic=True)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    pp = PlannerProblem(d.structure, 3)
    assert len(_factor_variables(pp.problem)) == 3
    assert all(s.ctx.factor is not None for s in pp.steps)
